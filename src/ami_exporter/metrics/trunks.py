"""Trunks (carriers): call outcomes, SIP codes, active channels, post-dial delay, answered time.

Labelled by ``trunk`` (the endpoint of a PJSIP/SIP/IAX2 channel, at most 64 per server, then
``other``; see :mod:`ami_exporter.state.trunks`) and ``direction`` (``outbound``/``inbound``).
A trunk seen once keeps its series: its call grid and active channels at 0 when idle.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import HistogramRow, TableCollector, by_labels, counter, gauge

T: Final = ("server", "trunk")
TD: Final = (*T, "direction")

TABLE: Final = (
    counter(
        "asterisk_trunk_calls",
        "Trunk channels ended (Hangup), by direction and outcome: answered if it reached Up, "
        "else by Cause (17 busy; 18, 19 no_answer; 34, 38, 41, 42, 44, 47 congestion; 1, 3, 22, "
        "28 unallocated; 21 rejected; 0, 16 cancelled; any other failed).",
        (*TD, "outcome"),
        lambda st: by_labels(st.trunks.calls),
    ),
    counter(
        "asterisk_trunk_sip_responses",
        "SIP final responses that ended trunk channels (Hangup TechCause 100-699: chan_pjsip, "
        "Asterisk 20.17/22.7 and later; at most 32 codes per trunk, then other).",
        (*T, "code"),
        lambda st: by_labels(st.trunks.sip_responses),
    ),
    gauge(
        "asterisk_trunk_active_channels",
        "Live trunk channels by direction (channels created while the exporter was connected).",
        TD,
        # As the channel gauges: nothing until the first resync after a reconnect has
        # dropped the trunk channels that ended meanwhile.
        lambda st: () if st.tracker.stale else by_labels(st.trunks.active),
        live=True,
    ),
    HistogramRow(
        "asterisk_trunk_post_dial_delay_seconds",
        "Outbound trunk channels: creation to the first ringing, progress (183) or answer "
        "(Newstate Ringing/Up, DialState RINGING/PROGRESS), by the events' Timestamp when "
        "Asterisk sends it (timestampevents), else by receipt time.",
        T,
        lambda st: [((trunk,), h) for trunk, h in list(st.trunks.post_dial_delay.items())],
    ),
    HistogramRow(
        "asterisk_trunk_answered_duration_seconds",
        "Answered trunk channels: Up to Hangup, by direction.",
        TD,
        lambda st: list(st.trunks.answered_duration.items()),
    ),
)


class TrunksCollector(TableCollector):
    TABLE = TABLE
