"""app_queue: the polled picture of every queue, kept live by the queue events between polls.

Opt-in per server (``queues: true``): VICIdial does not route calls through app_queue, and a
box without it answers the poll with an error, remembered for the session.

``QueueStatus`` and ``QueueSummary`` (AMI reference 3.12) give the whole picture at each poll;
queues that vanished (removed from queues.conf) are dropped. Between polls the callers
waiting follow ``QueueCallerJoin`` and ``QueueCallerLeave`` (``QueueCallerAbandon`` is always
followed by a ``QueueCallerLeave`` for the same caller, as the captures show), and the waits
and talk times are observed from ``AgentConnect`` (``HoldTime``), ``QueueCallerAbandon``
(``HoldTime``) and ``AgentComplete`` (``TalkTime``), all whole seconds.

Callers are tracked by Uniqueid, which both the events and the poll's ``QueueEntry`` items
carry, so applying an event twice or a poll after an event is harmless. A poll's snapshot is
older than the events that arrive while it is in flight (the answer is read whole before it
is applied): from :meth:`QueueState.poll_begin` until it is applied, a caller who joined
stays and a caller who left stays gone, whatever the snapshot says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.values import to_int, to_number
from ami_exporter.state.channels import Histogram
from ami_exporter.state.clock import SYSTEM_CLOCK, Clock
from ami_exporter.state.labels import bounded

MAX_QUEUES: Final = 256
# Waiting callers tracked by Uniqueid per server (about 100 bytes each): ten thousand callers
# waiting at once is far beyond any real contact centre on one Asterisk.
MAX_WAITING: Final = 10_000
# Queue waits in seconds: service levels are usually set at 10, 15, 20, 30 or 60 s.
WAIT_BUCKETS: Final = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TALK_BUCKETS: Final = (15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
WAIT_OUTCOMES: Final = ("answered", "abandoned")
# QueueMember Status is the device state number (ast_devstate).
MEMBER_STATUSES: Final[dict[str, str]] = {
    "0": "unknown",
    "1": "not_in_use",
    "2": "in_use",
    "3": "busy",
    "4": "invalid",
    "5": "unavailable",
    "6": "ringing",
    "7": "ring_in_use",
    "8": "on_hold",
}


def _int(raw: str | None) -> int:
    return to_int(raw) or 0


def _seconds(raw: str | None) -> float | None:
    """A HoldTime/TalkTime: a finite, non-negative number of seconds, else None."""
    value = to_number(raw)
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _waits() -> dict[str, Histogram]:
    return {outcome: Histogram(WAIT_BUCKETS) for outcome in WAIT_OUTCOMES}


@dataclass(slots=True)
class Queue:
    completed: int = 0
    abandoned: int = 0
    longest_hold: float = 0.0
    members: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, paused) -> n
    # The callers waiting: Uniqueid -> monotonic time they joined (from the QueueCallerJoin,
    # or the QueueEntry's Wait); and callers a poll counted (Calls) without listing their
    # Uniqueid (a QueueEntry without one), whose longest wait is the polled longest_hold.
    waiting: dict[str, float] = field(default_factory=dict)
    unnamed: int = 0
    waits: dict[str, Histogram] = field(default_factory=_waits)  # outcome -> wait histogram
    talk: Histogram = field(default_factory=lambda: Histogram(TALK_BUCKETS))

    @property
    def callers(self) -> int:
        return len(self.waiting) + self.unnamed

    def longest_wait(self, now: float) -> float:
        """Seconds the caller waiting longest has waited (monotonic ``now``), 0 when none."""
        longest = self.longest_hold if self.unnamed else 0.0
        if self.waiting:
            longest = max(longest, now - min(self.waiting.values()))
        return max(longest, 0.0)


@dataclass(slots=True)
class _Snapshot:
    """One queue as a QueueStatus answer lists it."""

    queue: Queue
    calls: int = 0
    listed: dict[str, float] = field(default_factory=dict)  # QueueEntry Uniqueid -> Wait
    entries: int = 0  # QueueEntry items, with or without a Uniqueid
    longest: float = 0.0


class QueueState:
    """Every queue of one server: the last poll, and the live events since."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._monotonic = clock.monotonic
        self.queues: dict[str, Queue] = {}
        self.enabled = False  # queues: true (ServerState.configure); events ignored otherwise
        # The live picture may be out of date: set when the session goes down (events were
        # missed), cleared by the next poll. The queue gauges are not exported meanwhile.
        self.stale = False
        self._polling = False  # a QueueStatus may be in flight (poll_begin .. apply_status)
        self._joined: set[str] = set()  # joined while it was
        self._left: set[str] = set()  # left while it was

    # ------------------------------------------------------------------ polls

    def poll_begin(self) -> None:
        """Mark the point a QueueStatus may be sent: later events are newer than its answer."""
        self._polling = True
        self._joined = set()
        self._left = set()

    def apply_status(self, items: Iterable[Message]) -> None:
        """``QueueStatus``: ``QueueParams``, ``QueueMember`` and ``QueueEntry`` items."""
        snapshots: dict[str, _Snapshot] = {}
        for item in items:
            snap = self._snapshot_of(snapshots, item)
            if snap is not None:
                _read_item(snap, item)
        fresh: dict[str, Queue] = {}
        room = MAX_WAITING
        for name, snap in snapshots.items():
            queue = fresh[name] = snap.queue
            queue.longest_hold = snap.longest
            room -= self._reconcile(queue, self.queues.get(name), snap, room)
        self.queues = fresh
        self.stale = False
        self._polling = False
        self._joined = set()
        self._left = set()

    def _snapshot_of(self, snapshots: dict[str, _Snapshot], item: Message) -> _Snapshot | None:
        name = bounded(item.get("Queue") or "")
        snap = snapshots.get(name)
        if snap is None:
            if not name or len(snapshots) >= MAX_QUEUES:
                return None
            queue = Queue()
            old = self.queues.get(name)
            if old is not None:
                # Keep member label sets at 0 rather than let them vanish between polls, and
                # the histograms (counters) whole.
                queue.members = dict.fromkeys(old.members, 0)
                queue.waits, queue.talk = old.waits, old.talk
            snap = snapshots[name] = _Snapshot(queue)
        return snap

    def _reconcile(self, queue: Queue, old: Queue | None, snap: _Snapshot, room: int) -> int:
        """The callers of ``queue`` from its snapshot and the events newer than it; returns
        how many Uniqueids it tracks (at most ``room``)."""
        left, joined = self._left, self._joined
        now = self._monotonic()
        before = old.waiting if old is not None else {}
        waiting: dict[str, float] = {}
        for uid, wait in snap.listed.items():
            if uid not in left:
                since = before.get(uid)  # the join event's time is finer than Wait's seconds
                waiting[uid] = now - wait if since is None else since
        if joined:
            for uid, since in before.items():
                if uid in joined:
                    waiting[uid] = since
        if len(waiting) > room:
            waiting = dict(list(waiting.items())[: max(room, 0)])
        queue.waiting = waiting
        queue.unnamed = max(0, snap.calls - snap.entries) + (snap.entries - len(snap.listed))
        return len(waiting)

    def apply_summary(self, items: Iterable[Message]) -> None:
        """``QueueSummary`` items: ``LongestHoldTime`` (seconds) per queue."""
        for item in items:
            if item.name != "QueueSummary":
                continue
            queue = self.queues.get(bounded(item.get("Queue") or ""))
            if queue is not None:
                queue.longest_hold = float(_int(item.get("LongestHoldTime")))

    # ------------------------------------------------------------------ events

    def handlers(self) -> dict[str, Callable[[Message], None]]:
        """The live events this part applies, by name (routed by ServerState when enabled)."""
        return {
            "QueueCallerJoin": self.on_caller_join,
            "QueueCallerLeave": self.on_caller_leave,
            "QueueCallerAbandon": self.on_caller_abandon,
            "AgentConnect": self.on_agent_connect,
            "AgentComplete": self.on_agent_complete,
        }

    def _queue(self, raw: str | None, *, create: bool) -> Queue | None:
        queues = self.queues
        queue = queues.get(raw or "")
        if queue is not None or not raw:
            return queue
        name = bounded(raw)
        queue = queues.get(name)
        if queue is None and create and len(queues) < MAX_QUEUES:
            queue = queues[name] = Queue()
        return queue

    def on_caller_join(self, msg: Message) -> None:
        uid = msg.get("Uniqueid")
        queue = self._queue(msg.get("Queue"), create=True)
        if queue is None or not uid or uid in queue.waiting:
            return
        if sum(len(q.waiting) for q in self.queues.values()) >= MAX_WAITING:
            return  # untracked: the next poll counts it (as unnamed past the cap)
        queue.waiting[uid] = self._monotonic()
        if self._polling and len(self._joined) < MAX_WAITING:
            self._joined.add(uid)

    def on_caller_leave(self, msg: Message) -> None:
        uid = msg.get("Uniqueid") or ""
        queue = self._queue(msg.get("Queue"), create=False)
        if queue is not None:
            if uid in queue.waiting:
                del queue.waiting[uid]
            elif queue.unnamed:
                queue.unnamed -= 1  # one the poll counted without its Uniqueid
        if self._polling and uid and len(self._left) < MAX_WAITING:
            self._left.add(uid)

    def on_caller_abandon(self, msg: Message) -> None:
        self._observe_wait(msg, "abandoned")

    def on_agent_connect(self, msg: Message) -> None:
        self._observe_wait(msg, "answered")

    def _observe_wait(self, msg: Message, outcome: str) -> None:
        seconds = _seconds(msg.get("HoldTime"))
        queue = self._queue(msg.get("Queue"), create=True)
        if seconds is not None and queue is not None:
            queue.waits[outcome].observe(seconds)

    def on_agent_complete(self, msg: Message) -> None:
        seconds = _seconds(msg.get("TalkTime"))
        queue = self._queue(msg.get("Queue"), create=True)
        if seconds is not None and queue is not None:
            queue.talk.observe(seconds)

    # ------------------------------------------------------------------ life cycle

    def session_down(self) -> None:
        """Events are missed from now on: the live picture is stale until the next poll."""
        self.stale = True
        self._polling = False

    def forget_callers(self) -> None:
        """Asterisk restarted: the callers it had are gone (the histograms stay)."""
        for queue in self.queues.values():
            queue.waiting = {}
            queue.unnamed = 0
        self.stale = True

    def clear(self) -> None:
        self.queues = {}


def _read_item(snap: _Snapshot, item: Message) -> None:
    queue = snap.queue
    if item.name == "QueueParams":
        snap.calls = _int(item.get("Calls"))
        queue.completed = _int(item.get("Completed"))
        queue.abandoned = _int(item.get("Abandoned"))
    elif item.name == "QueueMember":
        status = MEMBER_STATUSES.get((item.get("Status") or "").strip(), "unknown")
        paused = "true" if (item.get("Paused") or "0").strip() == "1" else "false"
        key = (status, paused)
        queue.members[key] = queue.members.get(key, 0) + 1
    elif item.name == "QueueEntry":
        snap.entries += 1
        uid = item.get("Uniqueid")
        wait = float(_int(item.get("Wait")))
        if uid:
            snap.listed[uid] = wait
        snap.longest = max(snap.longest, wait)
