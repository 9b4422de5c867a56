"""RTP call quality per trunk, from RTCP reports (RTCPSent, RTCPReceived; read class
``reporting``): loss, jitter, round-trip time and Asterisk's Media Experience Score.

``stream="received"`` is Asterisk's own report on the media it receives (RTCPSent),
``stream="sent"`` the far end's report on the media Asterisk sends (RTCPReceived). One
observation per report block; a value the report lacks is not observed (never a 0).
"""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import HistogramRow, TableCollector
from ami_exporter.state.trunks import RTP_CLOCK_RATE

T: Final = ("server", "trunk")
TS: Final = (*T, "stream")

TABLE: Final = (
    HistogramRow(
        "asterisk_trunk_rtp_loss_ratio",
        "RTP packets lost since the previous report, as a ratio (ReportXFractionLost/256).",
        TS,
        lambda st: list(st.trunks.rtp_loss.items()),
    ),
    HistogramRow(
        "asterisk_trunk_rtp_jitter_seconds",
        f"RTP interarrival jitter (ReportXIAJitter over a {RTP_CLOCK_RATE} Hz RTP clock, the "
        "rate of G.711/G.729/G.722; a wideband codec's jitter reads too high by its rate "
        "ratio).",
        TS,
        lambda st: list(st.trunks.rtp_jitter.items()),
    ),
    HistogramRow(
        "asterisk_trunk_rtp_rtt_seconds",
        "RTP round-trip time Asterisk computed from an RTCPReceived report block with an LSR.",
        T,
        lambda st: [((trunk,), h) for trunk, h in list(st.trunks.rtp_rtt.items())],
    ),
    HistogramRow(
        "asterisk_trunk_rtp_media_experience_score",
        "Asterisk's Media Experience Score (MES, 0-100; Asterisk 18.17/20.2/21.0 and later) "
        "of reports with a report block.",
        TS,
        lambda st: list(st.trunks.rtp_mes.items()),
    ),
)


class RtpCollector(TableCollector):
    TABLE = TABLE
