"""Per-server metric state, updated by AMI events; plain typed Python, no prometheus_client.

The client feeds every parsed message to :meth:`ServerState.handle_event` and the results of its
actions to the ``apply_*`` methods. Counters are plain dicts of ints and the live channel set is
kept with incrementally maintained aggregates (by technology, by state, by call), so an event
costs O(1) and a scrape costs O(label sets), never O(channels). The collector reads this state
at scrape time.

Ordering rules from the real captures that shape this module:

* events of one channel arrive in order (Newchannel ... Hangup), but nothing is ordered across
  families: count hangups from Hangup, originates from OriginateResponse, dials from DialEnd,
  never by pairing events;
* a Hangup for an unknown Uniqueid is normal (it started before we connected, or a resync
  already removed it);
* Uniqueids restart at every Asterisk start, so state is per server and cleared on a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.values import local_timestamp, to_float
from ami_exporter.state import labels
from ami_exporter.state.peers import PeerState
from ami_exporter.state.queues import QueueState
from ami_exporter.state.vicidial import VicidialState

DURATION_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Label sets a single server can create for open-ended values before they fold into `other`.
MAX_TECHS: Final = 32
MAX_SECURITY_SERVICES: Final = 16
MAX_STATE_SPELLINGS: Final = 64
MAX_TECH_SPELLINGS: Final = 256
# Raw event names remembered before counting into `other` (memory bound, not a label bound).
MAX_DISTINCT_EVENT_NAMES: Final = 512
# How long a channel missing from a resync snapshot waits for a late Hangup before it is
# counted as a ghost. Stasis delivers a Hangup within milliseconds; seconds are plenty.
RESYNC_GRACE_SECONDS: Final = 5.0
# A FullyBooted/CoreStatus start time that moves by more than this means Asterisk restarted.
RESTART_TOLERANCE_SECONDS: Final = 10.0

CONNECTION_ERROR_REASONS: Final = ("refused", "timeout", "unreachable", "tls", "other")
LOGIN_FAILURE_REASONS: Final = ("auth", "timeout", "error")
DISCONNECT_REASONS: Final = ("eof", "shutdown", "ping_timeout", "error")
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
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
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


class ServerState:
    """Everything the exporter knows about one configured Asterisk server."""

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        resync_grace: float = RESYNC_GRACE_SECONDS,
    ) -> None:
        self.name = name
        self.resync_grace = resync_grace
        self._clock = clock
        self._monotonic = monotonic

        # AMI connection health (written by the client).
        self.up = False
        self.ever_logged_in = False
        self.connection_attempts = 0
        self.connection_errors: dict[str, int] = dict.fromkeys(CONNECTION_ERROR_REASONS, 0)
        self.login_failures: dict[str, int] = dict.fromkeys(LOGIN_FAILURE_REASONS, 0)
        self.disconnects: dict[str, int] = dict.fromkeys(DISCONNECT_REASONS, 0)
        self.last_event_timestamp: float | None = None
        self.ping_rtt: float | None = None
        self.malformed = 0
        # The last non-empty last_error and when it was set: kept after the session recovers,
        # for the status page (the client clears last_error at each login).
        self.last_problem = ""
        self.last_problem_timestamp: float | None = None
        self._last_error = ""  # human-readable, for the landing page and logs; never a secret
        self.state_since = clock()

        # Asterisk identity and lifecycle.
        self.version = ""
        self.ami_version = ""
        self.system_name = ""
        self.startup_timestamp: float | None = None
        self.reload_timestamp: float | None = None
        self.shutdown_seen = False
        self.restarts_detected = 0
        self._uptime_known = False
        self._corestatus_startup: str | None = None

        # Event-derived counters. Events are counted by their raw name as it came off the
        # wire (most are never decoded) and folded into labels at scrape time.
        self.event_counts: dict[bytes, int] = {}
        self.channels_created: dict[str, int] = {}
        self.hangups: dict[tuple[str, str, str], int] = {}
        self.originates: dict[tuple[str, str], int] = dict.fromkeys(ORIGINATE_LABELS, 0)
        self.dials: dict[str, int] = {}
        self.durations: dict[str, Histogram] = {}
        self.security: dict[tuple[str, str], int] = {}
        self.resync_removed = 0
        self.resync_added = 0
        self.resyncs_completed = 0  # CoreShowChannels snapshots applied

        # Live channels and their aggregates (kept in step by _add/_remove/_set_state).
        self.channels: dict[str, Channel] = {}
        self.channels_by_tech: dict[str, int] = {}
        self.channels_by_state: dict[str, int] = {}
        self.calls: dict[str, int] = {}  # call id -> live channels in it

        self._techs: dict[str, str] = {}  # the exported tech labels (bounded)
        self._tech_spellings: dict[str, str] = {}  # raw text before "/" -> label (cache)
        self._cause_labels: dict[str | None, tuple[str, str]] = {}
        self._state_labels: dict[str | None, str] = {}
        self._services: set[str] = set()
        self._resyncing = False  # a CoreShowChannels is in flight
        self._resync_hungup: set[str] = set()
        self._resync_touched: set[str] = set()
        self._pending_gone: dict[str, float] = {}

        self._handlers: dict[str, Callable[[Message], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "Hangup": self._on_hangup,
            "OriginateResponse": self._on_originate_response,
            "DialEnd": self._on_dial_end,
            "Dial": self._on_dial,  # Asterisk 1.8/11: SubEvent Begin/End
            "FullyBooted": self._on_fully_booted,
            "Shutdown": self._on_shutdown,
            "Reload": self._on_reload,
        }
        for name_ in labels.SECURITY_EVENTS:
            self._handlers[name_] = self._on_security

        # Trunks and registrations (events here, polls in ami_exporter.polls), app_queue
        # (polled, opt-in) and VICIdial call types (opt-in, see configure()).
        self.peers = PeerState()
        self.queues = QueueState()
        self.vicidial = VicidialState(monotonic)
        self._handlers["PeerStatus"] = self.peers.on_peer_status
        self._handlers["ContactStatus"] = self.peers.on_contact_status
        self._handlers["Registry"] = self.peers.on_registry

    def configure(
        self,
        *,
        peers_include: str | None = None,
        peers_exclude: str | None = None,
        vicidial: bool = False,
    ) -> None:
        """Per-server options from the configuration (see ``ServerConfig``)."""
        self.peers.set_filter(peers_include, peers_exclude)
        self.vicidial.enabled = vicidial

    # ------------------------------------------------------------------ events

    @property
    def parsed_event_names(self) -> frozenset[str]:
        """Events whose fields feed a metric; any other event only needs its name counted."""
        return frozenset(self._handlers)

    def handle_event(self, msg: Message) -> None:
        """Count and apply one parsed ``Event:`` message. Never raises on odd fields."""
        self.count_events((msg.name.encode("utf-8", "surrogateescape"),))
        self._apply(msg)

    def record_events(self, names: Iterable[bytes], events: Iterable[Message]) -> None:
        """What one read brought: every event's raw name, and the parsed ones to apply.

        The client's path: ``names`` holds the names of all events received (the parsed
        ones too), so each event is counted once whether or not it was parsed.
        """
        self.count_events(names)
        handlers = self._handlers
        for msg in events:
            handler = handlers.get(msg.name)
            if handler is not None:
                handler(msg)

    def _apply(self, msg: Message) -> None:
        handler = self._handlers.get(msg.name)
        if handler is not None:
            handler(msg)

    def count_events(self, names: Iterable[bytes]) -> None:
        """Count events by raw name; at most MAX_DISTINCT_EVENT_NAMES names, then ``other``."""
        counts = self.event_counts
        for raw in names:
            if raw in counts:
                counts[raw] += 1
            elif len(counts) < MAX_DISTINCT_EVENT_NAMES:
                counts[raw] = 1
            else:
                counts[b"other"] = counts.get(b"other", 0) + 1

    @property
    def events(self) -> dict[str, int]:
        """Events received by label (``asterisk_ami_events_total``)."""
        out: dict[str, int] = {}
        for raw, n in list(self.event_counts.items()):
            label = labels.event_name(raw.decode("utf-8", "replace").strip())
            out[label] = out.get(label, 0) + n
        return out

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
        return tech

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

    def _on_newchannel(self, msg: Message) -> None:
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
        call = msg.get("Linkedid") or _call_without_linkedid(name, uid)
        state = self._state_label(msg.get("ChannelStateDesc"))
        self._add(uid, Channel(tech, state, call, self._monotonic()))

    def _on_newstate(self, msg: Message) -> None:
        uid = msg.get("Uniqueid")
        if not uid:
            return
        state = self._state_label(msg.get("ChannelStateDesc"))
        if self.vicidial.enabled:
            self.vicidial.observe(msg, hangup=False)
        channel = self.channels.get(uid)
        if channel is None:
            # Its Newchannel predates us: track it now rather than wait for the next resync.
            if uid in self._pending_gone or uid in self._resync_hungup:
                return
            name = msg.get("Channel") or ""
            if name[-1:] == ">" and _is_masquerade(name):
                return
            tech = self._bounded_tech(name)
            call = msg.get("Linkedid") or _call_without_linkedid(name, uid)
            self._add(uid, Channel(tech, state, call, None))
            return
        self._note_resync_touch(uid)
        if channel.state != state:
            self.channels_by_state[channel.state] -= 1
            channel.state = state
            _incr(self.channels_by_state, state)

    def _on_hangup(self, msg: Message) -> None:
        name = msg.get("Channel") or ""
        if name[-1:] == ">" and _is_masquerade(name):
            # 1.8/11 masquerade leftovers: no call ended, but the Uniqueid it carries left.
            uid = msg.get("Uniqueid")
            if uid:
                if self._resyncing:
                    self._resync_hungup.add(uid)
                self._pending_gone.pop(uid, None)
                self._remove(uid)
            return
        if self.vicidial.enabled:
            self.vicidial.observe(msg, hangup=True)
        tech = self._bounded_tech(name)
        raw_cause = msg.get("Cause")
        cause_labels = self._cause_labels.get(raw_cause)
        if cause_labels is None:
            cause_labels = labels.hangup_cause(raw_cause)
            if len(self._cause_labels) < 256:
                self._cause_labels[raw_cause] = cause_labels
        key = (tech, *cause_labels)
        self.hangups[key] = self.hangups.get(key, 0) + 1
        uid = msg.get("Uniqueid")
        if not uid:
            return
        if self._resyncing:
            self._resync_hungup.add(uid)
        self._pending_gone.pop(uid, None)
        channel = self._remove(uid)
        if channel is not None and channel.created is not None:
            histogram = self.durations.get(channel.tech)
            if histogram is None:
                histogram = self.durations[channel.tech] = Histogram()
            histogram.observe(max(0.0, self._monotonic() - channel.created))

    def _on_originate_response(self, msg: Message) -> None:
        result = "success" if (msg.get("Response") or "").lower() == "success" else "failure"
        key = (result, labels.originate_reason(msg.get("Reason")))
        self.originates[key] = self.originates.get(key, 0) + 1

    def _on_dial_end(self, msg: Message) -> None:
        _incr(self.dials, labels.dial_status(msg.get("DialStatus")))

    def _on_dial(self, msg: Message) -> None:
        # 1.8/11 `Dial`: SubEvent Begin (ignored) or End, which carries DialStatus (1.4 sent
        # Begin only, without SubEvent).
        if (msg.get("SubEvent") or "").strip().lower() == "end":
            _incr(self.dials, labels.dial_status(msg.get("DialStatus")))

    def _on_fully_booted(self, msg: Message) -> None:
        now = self._clock()
        uptime = to_float(msg.get("Uptime"))
        if uptime is not None:
            self._set_startup_from_uptime(now - uptime)
        last_reload = to_float(msg.get("LastReload"))
        if last_reload is not None:
            self.reload_timestamp = now - last_reload

    def _on_shutdown(self, msg: Message) -> None:
        self.shutdown_seen = True
        self.clear_channels()

    def _on_reload(self, msg: Message) -> None:
        self.reload_timestamp = self._clock()

    def _on_security(self, msg: Message) -> None:
        service = labels.identifier_or_other(msg.get("Service") or "")
        if service not in self._services:
            if len(self._services) >= MAX_SECURITY_SERVICES:
                service = labels.OTHER
            else:
                self._services.add(service)
        key = (service, msg.name)
        self.security[key] = self.security.get(key, 0) + 1

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

    def clear_channels(self) -> None:
        """Forget every live channel (Asterisk restarted or shut down); keep label sets at 0."""
        self.channels.clear()
        self.calls.clear()
        for key in self.channels_by_tech:
            self.channels_by_tech[key] = 0
        for key in self.channels_by_state:
            self.channels_by_state[key] = 0
        self._pending_gone.clear()
        self._resync_hungup.clear()

    # ------------------------------------------------------------------ action results

    def apply_banner(self, banner: str) -> None:
        prefix = "Asterisk Call Manager/"
        if banner.startswith(prefix):
            self.ami_version = banner[len(prefix) :].strip()

    def apply_core_settings(self, msg: Message) -> None:
        self.version = msg.get("AsteriskVersion") or self.version
        self.ami_version = msg.get("AMIversion") or self.ami_version
        self.system_name = msg.get("SystemName") or ""

    def apply_core_status(self, msg: Message) -> None:
        """CoreStatus gives start and reload times in the server's local time, with no zone.

        A change of the start time string means a restart. The times are read in this
        process's local zone, which is right when the exporter runs beside Asterisk, so they
        are only used when FullyBooted's zone-free ``Uptime`` (Asterisk 16+) is not available.
        """
        date, clock = msg.get("CoreStartupDate"), msg.get("CoreStartupTime")
        raw = f"{date} {clock}" if date and clock else None
        previous, self._corestatus_startup = self._corestatus_startup, raw
        if raw is not None and previous is not None and raw != previous:
            self._restarted()
        if self._uptime_known:
            return
        startup = local_timestamp(date, clock)
        if startup is not None:
            self.startup_timestamp = startup
        reload_ts = local_timestamp(msg.get("CoreReloadDate"), msg.get("CoreReloadTime"))
        if reload_ts is not None:
            self.reload_timestamp = reload_ts

    def _set_startup_from_uptime(self, startup: float) -> None:
        previous = self.startup_timestamp if self._uptime_known else None
        self._uptime_known = True
        if previous is not None and abs(startup - previous) <= RESTART_TOLERANCE_SECONDS:
            return  # the same boot, seen again (each login repeats FullyBooted)
        if previous is not None:
            self._restarted()
        self.startup_timestamp = startup

    def _restarted(self) -> None:
        # Uniqueids restart at 0 after a restart: channels tracked before can only be ghosts.
        self.restarts_detected += 1
        self.clear_channels()

    def resync_begin(self) -> None:
        """Mark the point a CoreShowChannels was sent: later events are newer than it."""
        self._resyncing = True
        self._resync_hungup = set()
        self._resync_touched = set()

    def resync_complete(self, items: Iterable[Message]) -> tuple[int, int]:
        """Reconcile the live set with a CoreShowChannels snapshot; return (added, removed).

        Channels the snapshot lacks are dropped from the live set at once; they count as ghosts
        in ``resync_removed`` only if no Hangup for them arrives within the grace period.
        """
        hung_up = self._resync_hungup
        snapshot: dict[str, Message] = {}
        for item in items:
            uid = item.get("Uniqueid")  # 1.8/11 spell it UniqueID; lookups ignore case
            if uid and not _is_masquerade(item.get("Channel") or ""):
                snapshot[uid] = item
        removed = 0
        deadline = self._monotonic() + self.resync_grace
        for uid in [u for u, c in self.channels.items() if u not in snapshot]:
            if uid in self._resync_touched:
                continue  # created or changed after the snapshot was taken
            self._remove(uid)
            self._pending_gone[uid] = deadline
            removed += 1
        added = 0
        for uid, item in snapshot.items():
            if uid in self.channels or uid in hung_up:
                continue
            tech = self._bounded_tech(item.get("Channel") or "")
            state = self._state_label(item.get("ChannelStateDesc"))
            call = item.get("Linkedid") or _call_without_linkedid(item.get("Channel") or "", uid)
            self._add(uid, Channel(tech, state, call, None))
            added += 1
        self.resync_added += added
        self.resyncs_completed += 1
        self.resync_complete_aborted()
        return added, removed

    def resync_complete_aborted(self) -> None:
        """End a resync; alone, when the CoreShowChannels was refused: keep the live set."""
        self._resyncing = False
        self._resync_hungup = set()
        self._resync_touched = set()

    def settle(self) -> None:
        """Count channels removed by a resync whose grace period ran out without a Hangup."""
        if not self._pending_gone:
            return
        now = self._monotonic()
        expired = [uid for uid, deadline in self._pending_gone.items() if deadline <= now]
        for uid in expired:
            del self._pending_gone[uid]
        self.resync_removed += len(expired)

    # ------------------------------------------------------------------ connection health
    # The client reports what happened to its session through these; it writes no field.

    @property
    def last_error(self) -> str:
        """Human-readable current error (empty while healthy); for the status page and logs."""
        return self._last_error

    def _set_error(self, text: str) -> None:
        self._last_error = text
        if text:
            self.last_problem = text
            self.last_problem_timestamp = self._clock()

    def record_connect_attempt(self) -> None:
        self.connection_attempts += 1

    def record_connect_error(self, reason: str, detail: str) -> None:
        """Reaching the AMI port failed (``reason`` is the metric label)."""
        self.connection_errors[reason] = self.connection_errors.get(reason, 0) + 1
        self._set_error(f"connection {reason}: {detail}")

    def record_login_failure(self, reason: str, detail: str) -> None:
        self.login_failures[reason] = self.login_failures.get(reason, 0) + 1
        self._set_error(f"login {reason}: {detail}")

    def record_session_up(self) -> None:
        """Logged in: the session is up and the last error is cleared."""
        self._set_up(True)
        self._set_error("")

    def record_session_down(self) -> None:
        self._set_up(False)

    def record_disconnect(self, reason: str, detail: str) -> None:
        """A logged-in session ended (not by our own Logoff)."""
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1
        self._set_error(f"disconnected ({reason}): {detail}")

    def record_ping(self, rtt: float) -> None:
        self.ping_rtt = rtt

    def record_malformed(self, count: int) -> None:
        self.malformed += count

    def record_received(self) -> None:
        """Messages arrived (any kind, Ping answers included): the last-message timestamp."""
        self.last_event_timestamp = self._clock()

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.state_since = self._clock()
        self.up = up
        if up:
            self.ever_logged_in = True
            self.shutdown_seen = False

    @property
    def active_calls(self) -> int:
        return len(self.calls)


def _call_without_linkedid(channel: str, uid: str) -> str:
    """The call of a channel before Linkedid (Asterisk < 13.5): its Uniqueid, except that the
    two halves of a Local channel (``Local/x@ctx-0000001a;1`` and ``;2``) are one call."""
    if channel[-2:] in (";1", ";2") and channel.startswith("Local/"):
        return channel[:-2]
    return uid


def _is_masquerade(channel: str) -> bool:
    """``SIP/100-0000002a<ZOMBIE>`` / ``...<MASQ>``: 1.8/11 masquerade leftovers, not calls."""
    return channel.endswith(("<ZOMBIE>", "<MASQ>"))
