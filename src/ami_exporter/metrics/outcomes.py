"""How channels and calls ended: hangups by cause, originates, dials, channel durations."""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import HistogramRow, TableCollector, by_label, by_labels, counter

TABLE: Final = (
    counter(
        "asterisk_hangups",
        "Channel hangups (Hangup events) by technology and Q.850 cause.",
        ("server", "tech", "cause", "cause_name"),
        lambda st: by_labels(st.tracker.hangups),
    ),
    counter(
        "asterisk_originates",
        "Async originate outcomes (OriginateResponse events) by result and reason.",
        ("server", "result", "reason"),
        lambda st: by_labels(st.tracker.originates),
    ),
    counter(
        "asterisk_dials",
        "Dial outcomes (DialEnd events) by lower-case DialStatus.",
        ("server", "status"),
        lambda st: by_label(st.tracker.dials),
    ),
    HistogramRow(
        "asterisk_channel_duration_seconds",
        "Channel lifetime from Newchannel to Hangup, for channels whose Newchannel was seen.",
        ("server", "tech"),
        lambda st: [((tech,), hist) for tech, hist in list(st.tracker.durations.items())],
    ),
)


class OutcomesCollector(TableCollector):
    TABLE = TABLE
