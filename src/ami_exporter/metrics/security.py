"""Asterisk security events (class ``security``) by service and event name."""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import TableCollector, by_labels, counter

TABLE: Final = (
    counter(
        "asterisk_security_events",
        "Asterisk security events (class security) by service and event name.",
        ("server", "service", "event"),
        lambda st: by_labels(st.security_events.counts),
    ),
)


class SecurityCollector(TableCollector):
    TABLE = TABLE
