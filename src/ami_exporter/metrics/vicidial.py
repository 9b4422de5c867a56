"""VICIdial call types, from the call IDs in CallerIDName (opt-in per server)."""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import TableCollector, by_label, by_labels, counter

TABLE: Final = (
    counter(
        "asterisk_vicidial_calls",
        "VICIdial calls by type, from the call ID in CallerIDName, once per call ID "
        "(auto_dial V, manual_dial M, inbound Y, three_way DC, ring_agent).",
        ("server", "type"),
        lambda st: by_label(st.vicidial.calls) if st.vicidial.enabled else (),
    ),
    counter(
        "asterisk_vicidial_hangups",
        "Hangups of non-Local channels carrying a VICIdial call ID, by call type and cause.",
        ("server", "type", "cause"),
        lambda st: by_labels(st.vicidial.hangups) if st.vicidial.enabled else (),
    ),
)


class VicidialCollector(TableCollector):
    TABLE = TABLE
