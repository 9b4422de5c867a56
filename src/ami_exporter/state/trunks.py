"""Trunks: per-carrier call outcomes, SIP codes, post-dial delay, answered time and RTP quality.

A *trunk* is the endpoint of a ``PJSIP/``, ``SIP/`` or ``IAX2/`` channel: the text between the
``/`` and the last ``-`` of ``Channel`` (``PJSIP/carrier-0000000a`` is ``carrier``). Which
endpoints count is chosen per server (``trunks_include``/``trunks_exclude``, ``re.search``;
without ``trunks_include`` every endpoint whose name is not all digits, since agent phones
usually are numbers); at most :data:`MAX_TRUNKS` trunk values per server, any later one is
``other``. The decision is made once per endpoint name and cached.

Direction comes from the channel's first ``Newchannel``: ``ChannelState`` 4 (Ring, the state
chan_pjsip and chan_iax2 create an incoming channel in) is ``inbound``, any other state
``outbound`` (0, Down, is what every driver creates a channel it dials in). chan_sip creates an
incoming channel Down and sets it to Ring at once (``handle_request_invite``; seen on every
inbound call of the 18.26.4 captures), so a channel whose first ``Newstate`` is Ring is turned
``inbound``; a channel we dial never goes through Ring.

Only channels whose ``Newchannel`` was seen are tracked (their own bounded dict, at most
:data:`MAX_TRUNK_CHANNELS`); each feeds, at its ``Hangup``, one call outcome, the SIP code of
``TechCause`` (Asterisk 20.17/22.7+, chan_pjsip) and, if it reached Up, its answered time. An
outbound channel's post-dial delay runs from its creation to its first ``Newstate`` Ringing or
Up or ``DialState`` RINGING/PROGRESS. Intervals use the events' ``Timestamp`` header when both
ends have one (``timestampevents = yes``), else the receipt times on the state's clock.

RTCP reports (``RTCPSent``: what Asterisk receives, ``stream="received"``; ``RTCPReceived``:
the far end's report on what Asterisk sends, ``stream="sent"``) give one observation per report
block; they are matched to a trunk by their ``Channel`` alone, so calls already up when the
exporter connected are measured too. Units (``main/rtp_engine.c``, ``res/res_rtp_asterisk.c``):
``FractionLost`` is the RFC 3550 8-bit fraction (/256); ``IAJitter`` is in RTP timestamp units of
the stream's codec, which the event does not name: :data:`RTP_CLOCK_RATE` (8 kHz: G.711, G.729,
GSM, iLBC, and G.722, whose RTP clock is 8 kHz too) is assumed; ``RTT`` (RTCPReceived only) is in
seconds, and is recomputed only from a report block with a non-zero ``LSR`` (otherwise Asterisk
repeats its last value, 0 before the first); ``MES`` (Media Experience Score, 0-100; Asterisk
18.17, 20.2, 21.0 and later) is computed for every report but only means something when the
report has a block. A missing or unparsable value is not observed: never counted as 0.

Every event costs O(1) (O(report blocks) for RTCP), and nothing here grows without bound.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Container
from dataclasses import dataclass
from typing import Final, TypeVar

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.values import to_float, to_int, to_number
from ami_exporter.state.channels import (
    DURATION_BUCKETS,
    MAX_ID_LENGTH,
    MAX_LIVE_CHANNELS,
    Histogram,
)
from ami_exporter.state.clock import Clock
from ami_exporter.state.labels import OTHER, bounded

TRUNK_TECHS: Final = ("PJSIP/", "SIP/", "IAX2/")
MAX_TRUNKS: Final = 64  # trunk label values per server, `other` aside
MAX_TRUNK_CHANNELS: Final = MAX_LIVE_CHANNELS  # live trunk channels tracked per server
# Endpoint name -> decision, cached; past this many distinct names a decision is recomputed
# at each Newchannel (a regex search or two: bounded work, no memory).
MAX_ENDPOINT_DECISIONS: Final = 4096
MAX_SIP_CODES_PER_TRUNK: Final = 32  # distinct `code` values of one trunk, then `other`
MAX_REPORT_BLOCKS: Final = 31  # RTCP's 5-bit reception report count
RTP_CLOCK_RATE: Final = 8000  # Hz, assumed for IAJitter (the event does not name the codec)
MAX_RTT_SECONDS: Final = 60.0  # above: Asterisk's NTP arithmetic wrapped (clock skew), dropped

OUTBOUND: Final = "outbound"
INBOUND: Final = "inbound"
DIRECTIONS: Final = (OUTBOUND, INBOUND)
RECEIVED: Final = "received"  # RTCPSent: Asterisk's report on the media it receives
SENT: Final = "sent"  # RTCPReceived: the far end's report on the media Asterisk sends
ANSWERED: Final = "answered"
FAILED: Final = "failed"
OUTCOMES: Final = (
    ANSWERED,
    "busy",
    "no_answer",
    "congestion",
    "unallocated",
    "rejected",
    "cancelled",
    FAILED,
)
# Hangup Cause (Q.850, include/asterisk/causes.h) -> outcome of a call that never reached Up.
CAUSE_OUTCOMES: Final[dict[int, str]] = {
    17: "busy",
    18: "no_answer",
    19: "no_answer",
    34: "congestion",
    38: "congestion",
    41: "congestion",
    42: "congestion",
    44: "congestion",
    47: "congestion",
    1: "unallocated",
    3: "unallocated",
    22: "unallocated",
    28: "unallocated",
    21: "rejected",
    0: "cancelled",
    16: "cancelled",
}

# Histogram buckets, each chosen for its quantity (see the README's metric list):
# post-dial delay: a healthy carrier rings within 0.5-3 s, above 6-8 s callers hang up, 30 s
# is beyond any dial timeout worth having.
PDD_BUCKETS: Final = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0)
ANSWERED_BUCKETS: Final = DURATION_BUCKETS  # as asterisk_channel_duration_seconds
# loss: a report's fraction is in steps of 1/256 (0.4 %); le=0 counts the loss-free reports;
# G.711 without concealment is audibly hurt from about 1 %, bad from 5 %; 3 % is the loss
# alert's threshold, a bound so that its p95 is exact rather than interpolated.
LOSS_BUCKETS: Final = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
# jitter: 1/8000 s steps; a jitter buffer copes up to 20-30 ms, 50 ms and more is trouble.
JITTER_BUCKETS: Final = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
# round trip: ITU-T G.114 keeps one way under 150 ms (300 ms RTT); 0.1 ms resolution on the wire.
RTT_BUCKETS: Final = (0.005, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
# MES = 20 x Asterisk's pseudo-MOS: the best reachable is 88.1 (MOS 4.4); 80 is MOS 4 (good),
# 70 MOS 3.5, 60 MOS 3 (poor).
MES_BUCKETS: Final = (40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 88.0, 90.0)

_REPORT_KEYS: Final = tuple(
    (f"Report{i}FractionLost", f"Report{i}IAJitter") for i in range(MAX_REPORT_BLOCKS)
)
_UNDECIDED: Final = object()
K = TypeVar("K", str, tuple[str, str])


def cause_outcome(raw: str | None) -> str:
    """The outcome of a call that ended before Up, from its Hangup ``Cause``."""
    try:
        return CAUSE_OUTCOMES.get(int(raw), FAILED) if raw else FAILED
    except ValueError:
        return FAILED


def endpoint_of(channel: str) -> str | None:
    """``PJSIP/carrier-0000000a`` -> ``carrier``; None for another technology or shape."""
    if not channel.startswith(TRUNK_TECHS) or channel[-1:] == ">":
        return None  # another tech, or a 1.8/11 masquerade leftover (`<ZOMBIE>`, `<MASQ>`)
    slash = channel.find("/")
    dash = channel.rfind("-")
    return channel[slash + 1 : dash] if dash > slash + 1 else None


def _timestamp(msg: Message) -> float | None:
    return to_float(msg.get_optional("Timestamp"))


class _Histogram(Histogram):
    """A :class:`Histogram` whose observe is one C-level bisection (RTCP observes often)."""

    __slots__ = ()

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the bucket `value <= bound`; past the
        # last bound, the +Inf bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass(slots=True)
class TrunkChannel:
    """A live trunk channel: what its Hangup and its state changes need."""

    trunk: str
    direction: str
    created_ts: float | None  # its Newchannel's Timestamp header
    created: float  # monotonic receipt time of its Newchannel
    waiting: bool  # outbound, no ringing/progress/answer yet: its post-dial delay is open
    settled: bool  # the direction can no longer change (see the module docstring)
    up_ts: float | None = None
    up: float | None = None  # monotonic receipt time of its Up, None until answered


class TrunkTracker:
    """The trunk figures of one server; fed by :class:`.server.ServerState`."""

    def __init__(self, clock: Clock) -> None:
        self._monotonic = clock.monotonic
        # Counters and gauges, keyed by label values after `server`.
        self.calls: dict[tuple[str, str, str], int] = {}  # (trunk, direction, outcome)
        self.sip_responses: dict[tuple[str, str], int] = {}  # (trunk, code)
        self.active: dict[tuple[str, str], int] = {}  # (trunk, direction)
        self.post_dial_delay: dict[str, Histogram] = {}
        self.answered_duration: dict[tuple[str, str], Histogram] = {}
        self.rtp_loss: dict[tuple[str, str], Histogram] = {}  # (trunk, stream)
        self.rtp_jitter: dict[tuple[str, str], Histogram] = {}
        self.rtp_mes: dict[tuple[str, str], Histogram] = {}
        self.rtp_rtt: dict[str, Histogram] = {}
        self.untracked = 0  # trunk Newchannels past MAX_TRUNK_CHANNELS
        self.seed_calls = True  # give a new trunk its zero-valued call grid (trunks on)

        self._live: dict[str, TrunkChannel] = {}
        # Dropped by a resync (their Hangup was missed, or is late): a Hangup within the grace
        # still counts the call. uid -> (channel, end of grace).
        self._gone: dict[str, tuple[TrunkChannel, float]] = {}
        self._trunks: dict[str, str] = {}  # label -> the one shared label string
        self._codes: dict[str, set[str]] = {}  # trunk -> its code label values
        self._decisions: dict[str, str | None] = {}  # endpoint -> trunk label or None
        self._include: re.Pattern[str] | None = None
        self._exclude: re.Pattern[str] | None = None

    # ------------------------------------------------------------------ selection

    def set_selection(self, include: str | None, exclude: str | None) -> None:
        """Trunks are the endpoints matching ``include`` (default: not all digits) and not
        ``exclude`` (``re.search``). Decisions already made are forgotten; labels stay."""
        self._include = re.compile(include) if include else None
        self._exclude = re.compile(exclude) if exclude else None
        self._decisions.clear()

    def selected(self, endpoint: str) -> bool:
        if not endpoint:
            return False
        if self._include is None:
            if endpoint.isdigit():
                return False
        elif self._include.search(endpoint) is None:
            return False
        return self._exclude is None or self._exclude.search(endpoint) is None

    def trunk_of(self, channel: str) -> str | None:
        """The trunk label of a channel name, or None if it is not a selected trunk."""
        endpoint = endpoint_of(channel)
        if endpoint is None:
            return None
        decision = self._decisions.get(endpoint, _UNDECIDED)
        if decision is not _UNDECIDED:
            return decision  # type: ignore[return-value]
        trunk = self._label(endpoint) if self.selected(endpoint) else None
        if len(self._decisions) < MAX_ENDPOINT_DECISIONS:
            self._decisions[endpoint] = trunk
        return trunk

    def _label(self, endpoint: str) -> str:
        label = bounded(endpoint)
        known = self._trunks.get(label)
        if known is not None:
            return known
        if len(self._trunks) >= MAX_TRUNKS:
            label = OTHER
            if OTHER in self._trunks:
                return self._trunks[OTHER]
        self._trunks[label] = label
        if self.seed_calls:
            self._seed(label)
        return label

    def _seed(self, trunk: str) -> None:
        """A new trunk exports its whole call grid and its active channels at 0, so that its
        first failure shows in rate()/increase() (a series born at 1 shows no increase)."""
        for direction in DIRECTIONS:
            self.active.setdefault((trunk, direction), 0)
            for outcome in OUTCOMES:
                self.calls.setdefault((trunk, direction, outcome), 0)

    @property
    def trunks(self) -> list[str]:
        """The trunk label values in use (``other`` included once used)."""
        return list(self._trunks)

    # ------------------------------------------------------------------ channel events

    def on_newchannel(self, msg: Message) -> None:
        channel = msg.get("Channel")
        if not channel or not channel.startswith(TRUNK_TECHS):
            return
        trunk = self.trunk_of(channel)
        uid = msg.get("Uniqueid")
        if trunk is None or not uid or uid in self._live:
            return
        if len(self._live) >= MAX_TRUNK_CHANNELS or len(uid) > MAX_ID_LENGTH:
            self.untracked += 1
            return
        inbound = msg.get("ChannelState") == "4"
        direction = INBOUND if inbound else OUTBOUND
        self._live[uid] = TrunkChannel(
            trunk,
            direction,
            _timestamp(msg),
            self._monotonic(),
            waiting=not inbound,
            settled=inbound,
        )
        key = (trunk, direction)
        self.active[key] = self.active.get(key, 0) + 1

    def on_newstate(self, msg: Message) -> None:
        if not self._live:
            return  # no trunk channel live: the common case on a box without trunks
        uid = msg.get("Uniqueid")
        ch = self._live.get(uid) if uid else None
        if ch is None:
            return
        state = msg.get("ChannelState")
        if not ch.settled:
            ch.settled = True
            if state == "4":  # chan_sip's incoming channel: created Down, then Ring
                self._turn_inbound(ch)
                return
        if state == "5":  # Ringing
            if ch.waiting:
                self._observe_pdd(ch, msg)
        elif state == "6" and ch.up is None:  # Up
            if ch.waiting:
                self._observe_pdd(ch, msg)
            ch.up_ts = _timestamp(msg)
            ch.up = self._monotonic()

    def on_dial_state(self, msg: Message) -> None:
        if not self._live:
            return
        uid = msg.get("DestUniqueid")
        ch = self._live.get(uid) if uid else None
        if ch is None:
            return
        ch.settled = True  # dialled: outbound for good
        if ch.waiting and msg.get("DialStatus") in ("RINGING", "PROGRESS"):
            self._observe_pdd(ch, msg)

    def on_hangup(self, msg: Message) -> None:
        if not self._live and not self._gone:
            return
        uid = msg.get("Uniqueid")
        if not uid:
            return
        ch = self._live.pop(uid, None)
        if ch is not None:
            self.active[(ch.trunk, ch.direction)] -= 1
        elif self._gone:
            gone = self._gone.pop(uid, None)
            if gone is None:
                return
            ch = gone[0]
        else:
            return
        trunk = ch.trunk
        if ch.up is not None:
            outcome = ANSWERED
            answered = self._elapsed(ch.up_ts, ch.up, msg)
            _observe(self.answered_duration, (trunk, ch.direction), ANSWERED_BUCKETS, answered)
        else:
            outcome = cause_outcome(msg.get("Cause"))
        key = (trunk, ch.direction, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        code = to_int(msg.get_optional("TechCause"))
        if code is not None and 100 <= code <= 699:  # the SIP status codes
            self._count_code(trunk, str(code))

    def _count_code(self, trunk: str, code: str) -> None:
        codes = self._codes.get(trunk)
        if codes is None:
            codes = self._codes[trunk] = set()
        if code not in codes:
            if len(codes) >= MAX_SIP_CODES_PER_TRUNK:
                code = OTHER
            codes.add(code)
        key = (trunk, code)
        self.sip_responses[key] = self.sip_responses.get(key, 0) + 1

    def _turn_inbound(self, ch: TrunkChannel) -> None:
        self.active[(ch.trunk, ch.direction)] -= 1
        ch.direction = INBOUND
        ch.waiting = False
        key = (ch.trunk, INBOUND)
        self.active[key] = self.active.get(key, 0) + 1

    def _elapsed(self, start_ts: float | None, start: float, msg: Message) -> float:
        """Seconds from a recorded event to ``msg``: by their Timestamp headers when both
        have one, else by receipt time."""
        if start_ts is not None:
            now_ts = _timestamp(msg)
            if now_ts is not None:
                return max(0.0, now_ts - start_ts)
        return max(0.0, self._monotonic() - start)

    def _observe_pdd(self, ch: TrunkChannel, msg: Message) -> None:
        ch.waiting = False
        pdd = self._elapsed(ch.created_ts, ch.created, msg)
        _observe(self.post_dial_delay, ch.trunk, PDD_BUCKETS, pdd)

    # ------------------------------------------------------------------ RTCP

    def on_rtcp_sent(self, msg: Message) -> None:
        self._rtcp(msg, RECEIVED)

    def on_rtcp_received(self, msg: Message) -> None:
        self._rtcp(msg, SENT)

    def _rtcp(self, msg: Message, stream: str) -> None:
        channel = msg.get("Channel")
        if not channel or not channel.startswith(TRUNK_TECHS):
            return
        blocks = to_int(msg.get("ReportCount"))
        if not blocks or blocks < 0:
            return  # no report block: nothing measured (MES and RTT would be stale)
        trunk = self.trunk_of(channel)
        if trunk is None:
            return
        key = (trunk, stream)
        for lost_key, jitter_key in _REPORT_KEYS[:blocks]:
            lost = to_int(msg.get(lost_key))
            if lost is not None and 0 <= lost <= 255:  # an 8-bit fraction
                _observe(self.rtp_loss, key, LOSS_BUCKETS, lost / 256)
            jitter = to_int(msg.get(jitter_key))
            if jitter is not None and jitter >= 0:
                _observe(self.rtp_jitter, key, JITTER_BUCKETS, jitter / RTP_CLOCK_RATE)
        mes = to_number(msg.get_optional("MES"))
        if mes is not None and 0.0 <= mes <= 100.0:  # the MES scale
            _observe(self.rtp_mes, key, MES_BUCKETS, mes)
        if stream == SENT and to_int(msg.get("Report0LSR")):
            rtt = to_number(msg.get("RTT"))
            if rtt is not None and 0.0 <= rtt < MAX_RTT_SECONDS:
                _observe(self.rtp_rtt, trunk, RTT_BUCKETS, rtt)

    # ------------------------------------------------------------------ live set upkeep

    def clear(self) -> None:
        """Forget every live trunk channel (Asterisk restarted or shut down); the label sets
        stay, at 0."""
        self._live.clear()
        self._gone.clear()
        for key in self.active:
            self.active[key] = 0

    def retain(self, live: Container[str], grace: float) -> None:
        """After a resync: channels not in ``live`` leave the active count now; a Hangup
        within ``grace`` seconds still counts their call."""
        gone = [uid for uid in self._live if uid not in live]
        if not gone:
            return
        deadline = self._monotonic() + grace
        for uid in gone:
            ch = self._live.pop(uid)
            self.active[(ch.trunk, ch.direction)] -= 1
            self._gone[uid] = (ch, deadline)

    def tick(self) -> None:
        """Forget the resync-dropped channels whose grace ran out."""
        if not self._gone:
            return
        now = self._monotonic()
        for uid in [u for u, (_, deadline) in self._gone.items() if deadline <= now]:
            del self._gone[uid]

    @property
    def live_channels(self) -> int:
        return len(self._live)


def _observe(into: dict[K, Histogram], key: K, bounds: tuple[float, ...], value: float) -> None:
    hist = into.get(key)
    if hist is None:
        hist = into[key] = _Histogram(bounds)
    hist.observe(value)
