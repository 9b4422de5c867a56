"""Live channels and calls, and the call outcomes counted from channel events.

Fed ``Newchannel``, ``Newstate``, ``Hangup``, ``OriginateResponse``, ``DialEnd``/``Dial`` and
the ``CoreShowChannels`` resyncs. The live channel set is kept with incrementally maintained
aggregates (by technology, by state, by call), so an event costs O(1) and a scrape costs
O(label sets), never O(channels). At most ``max_channels`` live channels are tracked (a
channel that never hangs up costs about 212 bytes for good): past the cap a new channel is
counted in ``untracked``, not tracked.

Ordering rules from the real captures that shape this module:

* events of one channel arrive in order (Newchannel ... Hangup), but nothing is ordered across
  families: count hangups from Hangup, originates from OriginateResponse, dials from DialEnd,
  never by pairing events;
* a Hangup for an unknown Uniqueid is normal (it started before we connected, or a resync
  already removed it);
* a resync snapshot is older than the events that arrive while it is in flight: a channel
  created, changed or hung up meanwhile is newer than the snapshot and wins over it;
* while the session is down events are missed, so after a reconnect the live set is
  :attr:`ChannelTracker.stale` until the first resync has corrected it;
* the channels live when Asterisk restarts (a Shutdown, or a new boot found after a crash or
  ``kill -9``) end without a Hangup: they are counted in ``lost`` and forgotten.

Counters are exported at 0 as soon as their label set is known: a technology seen in any
channel event or resync has its ``channels_created`` and live count at 0, its duration
histogram from its first live channel on (a histogram is 14 series: a technology only seen in
Hangups gets none), and the usual dial statuses and originate outcomes start at 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.state import labels
from ami_exporter.state.clock import Clock
from ami_exporter.state.vicidial import VicidialState

DURATION_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Label sets a single server can create for open-ended values before they fold into `other`.
MAX_TECHS: Final = 32
MAX_STATE_SPELLINGS: Final = 64
MAX_TECH_SPELLINGS: Final = 256
MAX_CAUSE_SPELLINGS: Final = 256
# How long a channel missing from a resync snapshot waits for a late Hangup before it is
# counted as a ghost. Stasis delivers a Hangup within milliseconds; seconds are plenty.
RESYNC_GRACE_SECONDS: Final = 5.0
# Live channels tracked per server: 50,000 is ten times a busy Asterisk's concurrent channels
# and about 11 MB; 10^6 channels that never hang up would be 212 MB.
MAX_LIVE_CHANNELS: Final = 50_000
# A Uniqueid is `[<systemname>-]<epoch>.<counter>`: a longer one (or Linkedid) is junk, and
# must not make a capped channel set cost more than its ~212 bytes a channel.
MAX_ID_LENGTH: Final = 256
# Why live channels were forgotten without a Hangup: Asterisk announced Shutdown, or a new boot
# was found (a crash or kill -9: no Shutdown, no Hangup ever comes).
LOST_REASONS: Final = ("shutdown", "restart")
# app_dial's DIALSTATUS values of a Dial that ran (DONTCALL, TORTURE and INVALIDARGS are
# privacy-manager and argument cases; ABORT, CONTINUE and GOTO are rare): exported from 0.
DIAL_LABELS: Final = ("answer", "busy", "noanswer", "cancel", "congestion", "chanunavail")
ORIGINATE_LABELS: Final = (
    ("success", "answered"),
    ("failure", "busy"),
    ("failure", "no_answer"),
    ("failure", "congestion"),
    ("failure", "hangup"),
    ("failure", "failed"),
)


@dataclass(slots=True)
class Channel:
    """A live channel: only what feeds a metric, to keep memory per channel small."""

    tech: str
    state: str
    call: str  # Linkedid, or the Uniqueid where there is none (before Asterisk 13.5)
    created: float | None  # monotonic time of its Newchannel; None when learned by a resync


@dataclass(slots=True)
class Histogram:
    """A fixed-bucket histogram: per-bucket (non-cumulative) counts, sum and count."""

    bounds: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(init=False)  # one per bound, then the +Inf bucket
    total: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, +Inf last, as Prometheus exposes them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_format_bound(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _format_bound(bound: float) -> str:
    return str(int(bound)) + ".0" if bound.is_integer() else repr(bound)


def _incr(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def _call_without_linkedid(channel: str, uid: str) -> str:
    """The call of a channel before Linkedid (Asterisk < 13.5): its Uniqueid, except that the
    two halves of a Local channel (``Local/x@ctx-0000001a;1`` and ``;2``) are one call."""
    if channel[-2:] in (";1", ";2") and channel.startswith("Local/"):
        return channel[:-2]
    return uid


def _call(linkedid: str | None, channel: str, uid: str) -> str:
    """The call a channel belongs to: its Linkedid, unless there is none (or a junk one)."""
    if linkedid and len(linkedid) <= MAX_ID_LENGTH:
        return linkedid
    call = _call_without_linkedid(channel, uid)
    return call if len(call) <= MAX_ID_LENGTH else uid


def _is_masquerade(channel: str) -> bool:
    """``SIP/100-0000002a<ZOMBIE>`` / ``...<MASQ>``: 1.8/11 masquerade leftovers, not calls."""
    return channel.endswith(("<ZOMBIE>", "<MASQ>"))


class ChannelTracker:
    """The live channels of one server, their aggregates and the channel-event counters."""

    def __init__(
        self,
        clock: Clock,
        vicidial: VicidialState,
        *,
        resync_grace: float = RESYNC_GRACE_SECONDS,
        max_channels: int = MAX_LIVE_CHANNELS,
    ) -> None:
        self._monotonic = clock.monotonic
        self._vicidial = vicidial  # fed the Newstate and Hangup events when enabled
        self.resync_grace = resync_grace
        self.max_channels = max_channels

        # Live channels and their aggregates (kept in step by _add/_remove).
        self.channels: dict[str, Channel] = {}
        self.channels_by_tech: dict[str, int] = {}
        self.channels_by_state: dict[str, int] = {}
        self.calls: dict[str, int] = {}  # call id -> live channels in it

        # Counters.
        self.channels_created: dict[str, int] = {}
        self.hangups: dict[tuple[str, str, str], int] = {}
        self.originates: dict[tuple[str, str], int] = dict.fromkeys(ORIGINATE_LABELS, 0)
        self.dials: dict[str, int] = dict.fromkeys(DIAL_LABELS, 0)
        self.lost: dict[str, int] = dict.fromkeys(LOST_REASONS, 0)
        self.durations: dict[str, Histogram] = {}
        self.resync_added = 0
        self.resyncs_completed = 0  # CoreShowChannels snapshots applied
        # Channels not tracked because max_channels were live: each Newchannel past the cap,
        # and each resync item past it (a resync that lists them again counts them again).
        self.untracked = 0

        # Label caches: raw spelling -> the one shared, bounded label string.
        self._techs: dict[str, str] = {}  # the exported tech labels (bounded)
        self._tech_spellings: dict[str, str] = {}  # raw text before "/" -> label
        self._state_labels: dict[str | None, str] = {}
        self._cause_labels: dict[str | None, tuple[str, str]] = {}

        # Resync bookkeeping.
        self.stale = False  # the session went down since the last resync: events were missed
        self._resyncing = False  # a CoreShowChannels is in flight
        self._resync_hungup: set[str] = set()  # hung up while it was in flight
        self._resync_touched: set[str] = set()  # created or changed while it was in flight
        self._pending_gone: dict[str, float] = {}  # removed by a resync -> end of its grace
        self._ghosts = 0  # removed by a resync, and no Hangup came within the grace

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    @property
    def resync_removed(self) -> int:
        """Channels a resync removed and whose grace period ran out without a Hangup.

        A pure read: the ones whose grace ran out since the last :meth:`tick` are counted
        here, not moved; a Hangup arriving after the grace leaves the count as it is.
        """
        pending = self._pending_gone
        if not pending:
            return self._ghosts
        now = self._monotonic()
        return self._ghosts + sum(1 for deadline in pending.values() if deadline <= now)

    # ------------------------------------------------------------------ labels

    def _bounded_tech(self, channel: str) -> str:
        # Keyed by the raw text before "/", so the common case is one dict lookup (no regex)
        # and returns the one shared label string, not a fresh copy per channel.
        slash = channel.find("/")
        raw = channel[:slash] if slash > 0 else ""
        known = self._tech_spellings.get(raw)
        if known is not None:
            return known
        tech = labels.channel_tech(channel)
        if tech != labels.OTHER:
            if tech in self._techs:
                tech = self._techs[tech]
            elif len(self._techs) >= MAX_TECHS:
                tech = labels.OTHER
            else:
                self._techs[tech] = tech
        if len(self._tech_spellings) < MAX_TECH_SPELLINGS:
            self._tech_spellings[raw] = tech
        self._know_tech(tech)
        return tech

    def _know_tech(self, tech: str) -> None:
        """A technology seen (off the hot path: once per new spelling): its counters from 0,
        so that a restarted exporter that learns a call from a resync or a Hangup exports
        ``channels_created`` 0 rather than nothing."""
        if tech not in self.channels_created:
            self.channels_created[tech] = 0
        if tech not in self.channels_by_tech:
            self.channels_by_tech[tech] = 0

    def _state_label(self, raw: str | None) -> str:
        label = self._state_labels.get(raw)
        if label is None:
            label = labels.channel_state(raw)
            if len(self._state_labels) < MAX_STATE_SPELLINGS:
                label = self._state_labels.setdefault(raw, label)
            elif label not in self._state_labels.values():
                # Past the cap a new spelling may only map to a label already exported: an
                # endless stream of odd ChannelStateDesc values must not add series.
                label = labels.OTHER
        return label

    # ------------------------------------------------------------------ events

    def on_newchannel(self, msg: Message) -> None:
        uid = msg.get("Uniqueid")
        name = msg.get("Channel") or ""
        if name[-1:] == ">" and _is_masquerade(name):
            return
        tech = self._bounded_tech(name)
        _incr(self.channels_created, tech)
        if not uid:
            return
        existing = self.channels.get(uid)
        if existing is not None:
            # Already learned from a resync whose snapshot saw it before this event arrived.
            existing.created = self._monotonic()
            self._note_resync_touch(uid)
            return
        if len(self.channels) >= self.max_channels or len(uid) > MAX_ID_LENGTH:
            self.untracked += 1
            return
        call = _call(msg.get("Linkedid"), name, uid)
        state = self._state_label(msg.get("ChannelStateDesc"))
        self._add(uid, Channel(tech, state, call, self._monotonic()))

    def on_newstate(self, msg: Message) -> None:
        uid = msg.get("Uniqueid")
        if not uid:
            return
        state = self._state_label(msg.get("ChannelStateDesc"))
        if self._vicidial.enabled:
            self._vicidial.observe(msg, hangup=False)
        channel = self.channels.get(uid)
        if channel is None:
            # Its Newchannel predates us: track it now rather than wait for the next resync.
            if uid in self._pending_gone or uid in self._resync_hungup:
                return
            if len(self.channels) >= self.max_channels or len(uid) > MAX_ID_LENGTH:
                return  # untracked: counted at its Newchannel or the resync that listed it
            name = msg.get("Channel") or ""
            if name[-1:] == ">" and _is_masquerade(name):
                return
            tech = self._bounded_tech(name)
            call = _call(msg.get("Linkedid"), name, uid)
            self._add(uid, Channel(tech, state, call, None))
            return
        self._note_resync_touch(uid)
        if channel.state != state:
            self.channels_by_state[channel.state] -= 1
            channel.state = state
            _incr(self.channels_by_state, state)

    def on_hangup(self, msg: Message) -> None:
        name = msg.get("Channel") or ""
        if name[-1:] == ">" and _is_masquerade(name):
            # 1.8/11 masquerade leftovers: no call ended, but the Uniqueid it carries left.
            self._left(msg.get("Uniqueid"))
            return
        if self._vicidial.enabled:
            self._vicidial.observe(msg, hangup=True)
        tech = self._bounded_tech(name)
        raw_cause = msg.get("Cause")
        cause_labels = self._cause_labels.get(raw_cause)
        if cause_labels is None:
            cause_labels = labels.hangup_cause(raw_cause)
            if len(self._cause_labels) < MAX_CAUSE_SPELLINGS:
                self._cause_labels[raw_cause] = cause_labels
        key = (tech, *cause_labels)
        self.hangups[key] = self.hangups.get(key, 0) + 1
        channel = self._left(msg.get("Uniqueid"))
        if channel is not None and channel.created is not None:
            histogram = self.durations.get(channel.tech)
            if histogram is None:
                histogram = self.durations[channel.tech] = Histogram()
            histogram.observe(max(0.0, self._monotonic() - channel.created))

    def _left(self, uid: str | None) -> Channel | None:
        """A Hangup's Uniqueid: no longer live, nor to be re-added by a resync in flight."""
        if not uid:
            return None
        if self._resyncing:
            self._resync_hungup.add(uid)
        if self._pending_gone:
            self._unpend(uid)
        return self._remove(uid)

    def _unpend(self, uid: str) -> None:
        """A channel a resync removed hung up or is listed again: no ghost, unless its grace
        already ran out (:attr:`resync_removed` may have counted it: a counter never goes
        back)."""
        deadline = self._pending_gone.pop(uid, None)
        if deadline is not None and deadline <= self._monotonic():
            self._ghosts += 1

    def on_originate_response(self, msg: Message) -> None:
        result = "success" if (msg.get("Response") or "").lower() == "success" else "failure"
        key = (result, labels.originate_reason(msg.get("Reason")))
        self.originates[key] = self.originates.get(key, 0) + 1

    def on_dial_end(self, msg: Message) -> None:
        _incr(self.dials, labels.dial_status(msg.get("DialStatus")))

    def on_dial(self, msg: Message) -> None:
        # 1.8/11 `Dial`: SubEvent Begin (ignored) or End, which carries DialStatus (1.4 sent
        # Begin only, without SubEvent).
        if (msg.get("SubEvent") or "").strip().lower() == "end":
            _incr(self.dials, labels.dial_status(msg.get("DialStatus")))

    # ------------------------------------------------------------------ live channel set

    def _note_resync_touch(self, uid: str) -> None:
        if self._resyncing:
            self._resync_touched.add(uid)

    def _add(self, uid: str, channel: Channel) -> None:
        # Share string objects: a live channel costs a few hundred bytes, and thousands of
        # them must fit (the Linkedid is the Uniqueid of the call's first channel).
        call = channel.call
        if call == uid:
            channel.call = uid
        else:
            first = self.channels.get(call)
            if first is not None:
                channel.call = first.call
        self._note_resync_touch(uid)
        self.channels[uid] = channel
        if channel.tech not in self.durations:
            # From 0 while its first channel lives, not at its Hangup: rate() sees 0 -> 1.
            self.durations[channel.tech] = Histogram()
        _incr(self.channels_by_tech, channel.tech)
        _incr(self.channels_by_state, channel.state)
        _incr(self.calls, channel.call)

    def _remove(self, uid: str) -> Channel | None:
        channel = self.channels.pop(uid, None)
        if channel is None:
            return None
        self.channels_by_tech[channel.tech] -= 1
        self.channels_by_state[channel.state] -= 1
        left = self.calls[channel.call] - 1
        if left:
            self.calls[channel.call] = left
        else:
            del self.calls[channel.call]
        return channel

    def clear(self, reason: str = "restart") -> None:
        """Forget every live channel, counted as ``lost`` for ``reason`` (Asterisk restarted or
        shut down: no Hangup will come for them); keep label sets at 0."""
        self.tick()  # ghosts already past their grace stay counted
        self.lost[reason] = self.lost.get(reason, 0) + len(self.channels)
        # Removed by a resync and still in their grace: their Hangup will never come now.
        self._ghosts += len(self._pending_gone)
        self.channels.clear()
        self.calls.clear()
        for key in self.channels_by_tech:
            self.channels_by_tech[key] = 0
        for key in self.channels_by_state:
            self.channels_by_state[key] = 0
        self._pending_gone.clear()
        self._resync_hungup.clear()

    # ------------------------------------------------------------------ resync

    def resync_begin(self) -> None:
        """Mark the point a CoreShowChannels was sent: later events are newer than it."""
        self.tick()
        self._resyncing = True
        self._resync_hungup = set()
        self._resync_touched = set()

    def resync_complete(self, items: Iterable[Message]) -> tuple[int, int]:
        """Reconcile the live set with a CoreShowChannels snapshot; return (added, removed).

        Channels the snapshot lacks are dropped from the live set at once; they count as ghosts
        in :attr:`resync_removed` only if no Hangup for them arrives within the grace period.
        """
        snapshot: dict[str, Message] = {}
        for item in items:
            uid = item.get("Uniqueid")  # 1.8/11 spell it UniqueID; lookups ignore case
            if uid and not _is_masquerade(item.get("Channel") or ""):
                snapshot[uid] = item
        removed = self._remove_unlisted(snapshot)
        added = 0
        for uid, item in snapshot.items():
            if uid in self.channels or uid in self._resync_hungup:
                continue
            if self._pending_gone:
                self._unpend(uid)  # removed by an earlier resync, and still there
            if len(self.channels) >= self.max_channels or len(uid) > MAX_ID_LENGTH:
                self.untracked += 1
                continue
            name = item.get("Channel") or ""
            tech = self._bounded_tech(name)
            state = self._state_label(item.get("ChannelStateDesc"))
            call = _call(item.get("Linkedid"), name, uid)
            self._add(uid, Channel(tech, state, call, None))
            added += 1
        self.resync_added += added
        self.resyncs_completed += 1
        self.resync_end()
        return added, removed

    def _remove_unlisted(self, snapshot: dict[str, Message]) -> int:
        deadline = self._monotonic() + self.resync_grace
        gone = [u for u in self.channels if u not in snapshot and u not in self._resync_touched]
        for uid in gone:
            self._remove(uid)
            self._pending_gone[uid] = deadline
        return len(gone)

    def session_down(self) -> None:
        """The session ended: events are missed until the next resync has corrected the set."""
        self.stale = True

    def resync_end(self) -> None:
        """End a resync; alone, when the CoreShowChannels was refused: keep the live set (the
        best picture there is, so it is no longer :attr:`stale`)."""
        self.stale = False
        self._resyncing = False
        self._resync_hungup = set()
        self._resync_touched = set()

    def tick(self) -> None:
        """Count, and forget, the resync-removed channels whose grace period ran out."""
        pending = self._pending_gone
        if not pending:
            return
        now = self._monotonic()
        expired = [uid for uid, deadline in pending.items() if deadline <= now]
        for uid in expired:
            del pending[uid]
        self._ghosts += len(expired)
