"""AMI session health: up, connection attempts and failures, ping, events, malformed input.

While a session is down only the ping round trip is hidden (``live=True``): it measures a
session that no longer exists. ``asterisk_ami_up`` is the very signal of the outage, and the
last-message timestamp is what tells how long the silence has lasted; counters stay.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import TableCollector, by_label, by_labels, counter, gauge, one

S: Final = ("server",)

TABLE: Final = (
    gauge(
        "asterisk_ami_up",
        "1 while connected and logged in to AMI.",
        S,
        lambda st: one(1.0 if st.health.up else 0.0),
    ),
    counter(
        "asterisk_ami_connection_attempts",
        "AMI TCP connection attempts.",
        S,
        lambda st: one(st.health.connection_attempts),
    ),
    counter(
        "asterisk_ami_connection_errors",
        "AMI connection failures before login, by reason "
        "(refused, timeout, unreachable, tls, other).",
        ("server", "reason"),
        lambda st: by_label(st.health.connection_errors),
    ),
    counter(
        "asterisk_ami_login_failures",
        "AMI login failures by reason (auth = 'Authentication failed', timeout, error).",
        ("server", "reason"),
        lambda st: by_label(st.health.login_failures),
    ),
    counter(
        "asterisk_ami_disconnects",
        "AMI sessions lost after login, by reason (eof, shutdown, ping_timeout, error).",
        ("server", "reason"),
        lambda st: by_label(st.health.disconnects),
    ),
    gauge(
        "asterisk_ami_last_event_timestamp_seconds",
        "Unix time of the last AMI message received.",
        S,
        lambda st: one(st.health.last_event_timestamp),
    ),
    gauge(
        "asterisk_ami_ping_rtt_seconds",
        "Round trip time of the last AMI Ping (not exported while the session is down).",
        S,
        lambda st: one(st.health.ping_rtt),
        live=True,
    ),
    counter(
        "asterisk_ami_events",
        "AMI events received, by event name (names outside a fixed list are 'other').",
        ("server", "event"),
        lambda st: by_label(st.events),
    ),
    counter(
        "asterisk_ami_malformed_messages",
        "AMI messages skipped as malformed (bad framing, no key, oversized, a Response: "
        "Follows no Command asked for).",
        S,
        lambda st: one(st.health.malformed),
    ),
    counter(
        "asterisk_ami_list_actions_incomplete",
        "List action answers not used whole, by action and reason: truncated (more items "
        "than the per-list cap), timeout (no ...Complete in time), lost (session ended).",
        ("server", "action", "reason"),
        lambda st: by_labels(st.health.list_actions_incomplete),
    ),
)


class HealthCollector(TableCollector):
    TABLE = TABLE
