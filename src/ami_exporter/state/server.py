"""Per-server state, updated by AMI events; plain typed Python, no prometheus_client.

:class:`ServerState` is what the client writes and the collectors read. It is composed of
small parts, one per concern, and routes each event to the part it feeds:

* :class:`~.health.ConnectionHealth` (``health``): the AMI session as the client reports it;
* :class:`~.core.CoreState` (``core``): Asterisk's version, start and reload times, restarts;
* :class:`~.channels.ChannelTracker` (``tracker``): live channels and calls, hangups,
  originates, dials, channel durations, resyncs;
* :class:`~.trunks.TrunkTracker` (``trunks``): per-trunk outcomes, SIP codes, post-dial
  delay, answered time and RTP quality (on by default; see :meth:`ServerState.configure`);
* :class:`~.security.SecurityEvents` (``security_events``), :class:`~.peers.PeerState`
  (``peers``), :class:`~.queues.QueueState` (``queues``) and
  :class:`~.vicidial.VicidialState` (``vicidial``).

Events are counted here by their raw name as it came off the wire (most are never decoded)
and folded into labels when read. Every part reads time from the one :class:`~.clock.Clock`.
Uniqueids restart at every Asterisk start, so the state is per server and the live channels
are cleared when a Shutdown or a new boot is seen.

The attributes the status page, tests and benchmarks read (``up``, ``channels``, ``hangups``...)
are kept here as read-only properties over the parts; the collectors read the parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypedDict, Unpack

from ami_exporter.ami.protocol import Message
from ami_exporter.state import labels
from ami_exporter.state.channels import (
    MAX_LIVE_CHANNELS,
    RESYNC_GRACE_SECONDS,
    Channel,
    ChannelTracker,
    Histogram,
)
from ami_exporter.state.clock import SYSTEM_CLOCK, Clock
from ami_exporter.state.core import CoreState
from ami_exporter.state.health import ConnectionHealth
from ami_exporter.state.peers import PeerState
from ami_exporter.state.queues import QueueState
from ami_exporter.state.security import SecurityEvents
from ami_exporter.state.trunks import TrunkTracker
from ami_exporter.state.vicidial import VicidialState

# Raw event names remembered before counting into `other` (memory bound, not a label bound),
# and the longest remembered: real names are short identifiers (the longest known has 35
# bytes); 512 names of up to max_message_size each would be 512 MiB.
MAX_DISTINCT_EVENT_NAMES: Final = 512
MAX_EVENT_NAME_BYTES: Final = 64

Handler = Callable[[Message], None]
_SHARED_EVENTS: Final = ("Newchannel", "Newstate", "Hangup")  # channels and trunks


def _both(first: Handler, second: Handler) -> Handler:
    """One handler that runs two (an event two parts need)."""

    def handle(msg: Message) -> None:
        first(msg)
        second(msg)

    return handle


class ServerOptions(TypedDict, total=False):
    """What :meth:`ServerState.configure` takes (``ServerConfig``'s per-server options).

    ``peers`` (default on): peer/registration polls and series; ``trunks`` (on): per-trunk
    work on channel events and the trunk call series; ``rtp`` (on): RTCP events parsed;
    ``queues`` (off): queue polls and live queue events; ``vicidial`` (off): VICIdial call
    types (the ``--collector.*`` flags and the YAML keys of the same names).
    """

    peers_include: str | None
    peers_exclude: str | None
    trunks_include: str | None
    trunks_exclude: str | None
    peers: bool
    trunks: bool
    rtp: bool
    queues: bool
    vicidial: bool


class ServerState:
    """Everything the exporter knows about one configured Asterisk server."""

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        resync_grace: float = RESYNC_GRACE_SECONDS,
        max_channels: int = MAX_LIVE_CHANNELS,
    ) -> None:
        """``max_channels``: live channels tracked at most (see :mod:`.channels`)."""
        self.name = name
        self.clock = clock
        self.health = ConnectionHealth(clock)
        self.core = CoreState(clock)
        self.vicidial = VicidialState(clock)  # VICIdial call types (opt-in, see configure())
        self.tracker = ChannelTracker(
            clock, self.vicidial, resync_grace=resync_grace, max_channels=max_channels
        )
        self.security_events = SecurityEvents()
        # Trunks and registrations: events here, polls in client.polls.
        self.peers = PeerState(now=clock.monotonic)
        self.queues = QueueState(clock)  # app_queue, polled and live (opt-in)
        self.trunks = TrunkTracker(clock)  # per-carrier calls and RTP, from channel events
        self.event_counts: dict[bytes, int] = {}  # raw event name -> events received
        self.features: dict[str, bool] = {}  # the optional collectors, set by configure()

        tracker = self.tracker
        self._handlers: dict[str, Callable[[Message], None]] = {
            "Newchannel": tracker.on_newchannel,
            "Newstate": tracker.on_newstate,
            "Hangup": tracker.on_hangup,
            "OriginateResponse": tracker.on_originate_response,
            "DialEnd": tracker.on_dial_end,
            "Dial": tracker.on_dial,  # Asterisk 1.8/11: SubEvent Begin/End
            "FullyBooted": self._on_fully_booted,
            "Shutdown": self._on_shutdown,
            "Reload": self._on_reload,
            "PeerStatus": self.peers.on_peer_status,
            "ContactStatus": self.peers.on_contact_status,
            "Registry": self.peers.on_registry,
        }
        for event in labels.SECURITY_EVENTS:
            self._handlers[event] = self.security_events.on_security
        # The ChannelTracker's own handlers of the events the trunk tracker needs too.
        self._channel_handlers = {name: self._handlers[name] for name in _SHARED_EVENTS}
        self._wire_trunks(trunks=True, rtp=True)

    def configure(self, **options: Unpack[ServerOptions]) -> None:
        """Per-server options from the configuration (see :class:`ServerOptions`). Call it
        before the first connection (the client reads :attr:`parsed_event_names` when it
        connects)."""
        peers_include = options.get("peers_include")
        peers_exclude = options.get("peers_exclude")
        vicidial = options.get("vicidial", False)
        peers = options.get("peers", True)
        trunks = options.get("trunks", True)
        rtp = options.get("rtp", True)
        queues = options.get("queues", False)
        trunks_include = options.get("trunks_include")
        trunks_exclude = options.get("trunks_exclude")
        self.peers.set_filter(peers_include, peers_exclude)
        self.peers.enabled = peers
        self.vicidial.enabled = vicidial
        self.queues.enabled = queues  # queue events are parsed only when queues are on
        for event, handler in self.queues.handlers().items():
            if queues:
                self._handlers[event] = handler
            else:
                self._handlers.pop(event, None)
        # The optional collectors that are on (--collector.*, per-server keys), for the
        # status page and `check`.
        self.features = {
            "peers": peers,
            "trunks": trunks,
            "rtp": rtp,
            "queues": queues,
            "vicidial": vicidial,
        }
        self.trunks.set_selection(trunks_include, trunks_exclude)
        self._wire_trunks(trunks=trunks, rtp=rtp)

    def _wire_trunks(self, *, trunks: bool, rtp: bool) -> None:
        """Route the channel and RTCP events to the trunk tracker too, as enabled: one extra
        call per channel event (the ChannelTracker's handler runs first), and the trunk
        handler returns at once for a channel that is not a trunk."""
        handlers, part = self._handlers, self.trunks
        part.seed_calls = trunks
        extra: dict[str, Handler] = {
            "Newchannel": part.on_newchannel,
            "Newstate": part.on_newstate,
            "Hangup": part.on_hangup,
        }
        for name, own in self._channel_handlers.items():
            handlers[name] = _both(own, extra[name]) if trunks else own
        own_events = {
            "DialState": (trunks, part.on_dial_state),
            "RTCPSent": (rtp, part.on_rtcp_sent),
            "RTCPReceived": (rtp, part.on_rtcp_received),
        }
        for name, (enabled, handler) in own_events.items():
            if enabled:
                handlers[name] = handler
            else:
                handlers.pop(name, None)

    # ------------------------------------------------------------------ events

    @property
    def parsed_event_names(self) -> frozenset[str]:
        """Events whose fields feed a metric; any other event only needs its name counted."""
        return frozenset(self._handlers)

    def handle_event(self, msg: Message) -> None:
        """Count and apply one parsed ``Event:`` message. Never raises on odd fields."""
        self.count_events((msg.name.encode("utf-8", "surrogateescape"),))
        handler = self._handlers.get(msg.name)
        if handler is not None:
            handler(msg)

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

    def count_events(self, names: Iterable[bytes]) -> None:
        """Count events by raw name; at most MAX_DISTINCT_EVENT_NAMES names, then ``other``."""
        counts = self.event_counts
        for raw in names:
            if raw in counts:
                counts[raw] += 1
            elif len(counts) < MAX_DISTINCT_EVENT_NAMES and len(raw) <= MAX_EVENT_NAME_BYTES:
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

    def _on_fully_booted(self, msg: Message) -> None:
        if self.core.on_fully_booted(msg):
            self._forget_live("restart")  # channels tracked before a new boot are dead

    def _on_shutdown(self, msg: Message) -> None:
        self.core.on_shutdown()
        self._forget_live("shutdown")

    def _forget_live(self, reason: str) -> None:
        self.tracker.clear(reason)
        self.trunks.clear()
        self.queues.forget_callers()

    def _on_reload(self, msg: Message) -> None:
        self.core.on_reload()

    # ------------------------------------------------------------------ action results

    def apply_banner(self, banner: str) -> None:
        self.core.apply_banner(banner)

    def apply_core_settings(self, msg: Message) -> None:
        self.core.apply_core_settings(msg)

    def apply_core_status(self, msg: Message) -> None:
        """CoreStatus: start and reload times; a changed start time means a restart."""
        if self.core.apply_core_status(msg):
            self._forget_live("restart")

    def resync_begin(self) -> None:
        """Mark the point a CoreShowChannels (then the polls) was sent: later events are newer
        than it."""
        self.tracker.resync_begin()
        self.queues.poll_begin()

    def resync_complete(self, items: Iterable[Message]) -> tuple[int, int]:
        """Reconcile the live set with a CoreShowChannels snapshot; return (added, removed)."""
        tracker = self.tracker
        result = tracker.resync_complete(items)
        if len(tracker.channels) < tracker.max_channels:  # else the live set is incomplete
            self.trunks.retain(tracker.channels, tracker.resync_grace)
        return result

    def resync_complete_aborted(self) -> None:
        """End a resync whose CoreShowChannels was refused: keep the live set."""
        self.tracker.resync_end()

    def tick(self) -> None:
        """Periodic upkeep off the scrape path (the client calls it from its ping loop):
        forgets resync-removed channels whose grace period ran out, counting them as ghosts."""
        self.tracker.tick()
        self.trunks.tick()

    # ------------------------------------------------------------------ connection health
    # The client reports what happened to its session through these; it writes no field.

    def record_connect_attempt(self) -> None:
        self.health.record_connect_attempt()

    def record_connect_error(self, reason: str, detail: str) -> None:
        """Reaching the AMI port failed (``reason`` is the metric label)."""
        self.health.record_connect_error(reason, detail)

    def record_login_failure(self, reason: str, detail: str) -> None:
        self.health.record_login_failure(reason, detail)

    def record_session_up(self) -> None:
        """Logged in: the session is up and the last error is cleared."""
        self.health.record_session_up()
        self.core.session_started()

    def record_session_down(self) -> None:
        self.health.record_session_down()
        self.tracker.session_down()
        self.queues.session_down()

    def record_disconnect(self, reason: str, detail: str) -> None:
        """A logged-in session ended (not by our own Logoff)."""
        self.health.record_disconnect(reason, detail)

    def record_ping(self, rtt: float) -> None:
        self.health.record_ping(rtt)

    def record_malformed(self, count: int) -> None:
        self.health.record_malformed(count)

    def record_list_incomplete(self, action: str, reason: str) -> None:
        """A list action's answer was not used whole: ``truncated``, ``timeout`` or ``lost``."""
        self.health.record_list_incomplete(action, reason)

    def record_received(self) -> None:
        """Messages arrived (any kind, Ping answers included): the last-message timestamp."""
        self.health.record_received()

    # ------------------------------------------------------------------ read-only views
    # For the status page, the history sampler, tests and benchmarks.

    @property
    def up(self) -> bool:
        return self.health.up

    @property
    def ever_logged_in(self) -> bool:
        return self.health.ever_logged_in

    @property
    def state_since(self) -> float:
        return self.health.state_since

    @property
    def connection_attempts(self) -> int:
        return self.health.connection_attempts

    @property
    def connection_errors(self) -> dict[str, int]:
        return self.health.connection_errors

    @property
    def login_failures(self) -> dict[str, int]:
        return self.health.login_failures

    @property
    def disconnects(self) -> dict[str, int]:
        return self.health.disconnects

    @property
    def last_event_timestamp(self) -> float | None:
        return self.health.last_event_timestamp

    @property
    def ping_rtt(self) -> float | None:
        return self.health.ping_rtt

    @property
    def malformed(self) -> int:
        return self.health.malformed

    @property
    def last_error(self) -> str:
        """Human-readable current error (empty while healthy); for the status page and logs."""
        return self.health.last_error

    @property
    def last_problem(self) -> str:
        return self.health.last_problem

    @property
    def last_problem_timestamp(self) -> float | None:
        return self.health.last_problem_timestamp

    @property
    def version(self) -> str:
        return self.core.version

    @property
    def ami_version(self) -> str:
        return self.core.ami_version

    @property
    def system_name(self) -> str:
        return self.core.system_name

    @property
    def startup_timestamp(self) -> float | None:
        return self.core.startup_timestamp

    @property
    def reload_timestamp(self) -> float | None:
        return self.core.reload_timestamp

    @property
    def shutdown_seen(self) -> bool:
        return self.core.shutdown_seen

    @property
    def restarts_detected(self) -> int:
        return self.core.restarts_detected

    @property
    def channels(self) -> dict[str, Channel]:
        return self.tracker.channels

    @property
    def channels_by_tech(self) -> dict[str, int]:
        return self.tracker.channels_by_tech

    @property
    def channels_by_state(self) -> dict[str, int]:
        return self.tracker.channels_by_state

    @property
    def calls(self) -> dict[str, int]:
        return self.tracker.calls

    @property
    def active_calls(self) -> int:
        return self.tracker.active_calls

    @property
    def channels_created(self) -> dict[str, int]:
        return self.tracker.channels_created

    @property
    def hangups(self) -> dict[tuple[str, str, str], int]:
        return self.tracker.hangups

    @property
    def originates(self) -> dict[tuple[str, str], int]:
        return self.tracker.originates

    @property
    def dials(self) -> dict[str, int]:
        return self.tracker.dials

    @property
    def durations(self) -> dict[str, Histogram]:
        return self.tracker.durations

    @property
    def resync_added(self) -> int:
        return self.tracker.resync_added

    @property
    def resync_removed(self) -> int:
        return self.tracker.resync_removed

    @property
    def resyncs_completed(self) -> int:
        return self.tracker.resyncs_completed

    @property
    def security(self) -> dict[tuple[str, str], int]:
        return self.security_events.counts
