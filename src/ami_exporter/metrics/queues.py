"""app_queue queues (opt-in): polled with QueueStatus/QueueSummary, kept live by queue events.

The gauges describe live state: not exported while the session is down, nor after a
reconnect until the next poll has refreshed them (:attr:`QueueState.stale`). The histograms
and app_queue's own counters stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from ami_exporter.metrics.table import (
    HistogramRow,
    Samples,
    TableCollector,
    clean,
    counter,
    gauge,
)
from ami_exporter.state.channels import Histogram
from ami_exporter.state.queues import TALK_BUCKETS, WAIT_BUCKETS, Queue
from ami_exporter.state.server import ServerState

Q: Final = ("server", "queue")


def _buckets(bounds: tuple[float, ...]) -> str:
    return ", ".join(f"{b:g}" for b in bounds)


def _per_queue(value: Callable[[Queue], float]) -> Callable[[ServerState], Samples]:
    def read(st: ServerState) -> Samples:
        return [((clean(name),), value(q)) for name, q in list(st.queues.queues.items())]

    return read


def _live(read: Callable[[ServerState], Samples]) -> Callable[[ServerState], Samples]:
    """A gauge's reader that gives nothing while the queue picture is stale."""

    def live(st: ServerState) -> Samples:
        return () if st.queues.stale else read(st)

    return live


def _members(st: ServerState) -> Samples:
    return [
        ((clean(name), status, paused), n)
        for name, q in list(st.queues.queues.items())
        for (status, paused), n in list(q.members.items())
    ]


def _longest(st: ServerState) -> Samples:
    now = st.clock.monotonic()
    return [((clean(name),), q.longest_wait(now)) for name, q in list(st.queues.queues.items())]


def _waits(st: ServerState) -> Iterable[tuple[tuple[str, ...], Histogram]]:
    return [
        ((clean(name), outcome), hist)
        for name, q in list(st.queues.queues.items())
        for outcome, hist in list(q.waits.items())
    ]


TABLE: Final = (
    gauge(
        "asterisk_queue_callers",
        "Callers waiting in an app_queue queue (QueueStatus, then QueueCallerJoin/Leave).",
        Q,
        _live(_per_queue(lambda q: q.callers)),
        live=True,
    ),
    gauge(
        "asterisk_queue_members",
        "Queue members by device status and paused (true/false), as of the last poll.",
        (*Q, "status", "paused"),
        _live(_members),
        live=True,
    ),
    gauge(
        "asterisk_queue_longest_hold_seconds",
        "Wait so far of the caller waiting longest in a queue (0 when none).",
        Q,
        _live(_longest),
        live=True,
    ),
    counter(
        "asterisk_queue_completed",
        "Calls a queue completed, as app_queue counts them (reset by a queue reset/reload).",
        Q,
        _per_queue(lambda q: q.completed),
    ),
    counter(
        "asterisk_queue_abandoned",
        "Callers who hung up while waiting in a queue, as app_queue counts them.",
        Q,
        _per_queue(lambda q: q.abandoned),
    ),
    HistogramRow(
        "asterisk_queue_wait_seconds",
        "Time callers waited in a queue, by outcome: answered (AgentConnect HoldTime) or "
        f"abandoned (QueueCallerAbandon HoldTime); whole seconds; buckets "
        f"{_buckets(WAIT_BUCKETS)}.",
        (*Q, "outcome"),
        _waits,
    ),
    HistogramRow(
        "asterisk_queue_talk_seconds",
        "Talk time of answered queue calls (AgentComplete TalkTime); whole seconds; buckets "
        f"{_buckets(TALK_BUCKETS)}.",
        Q,
        lambda st: [((clean(name),), q.talk) for name, q in list(st.queues.queues.items())],
    ),
)


class QueuesCollector(TableCollector):
    TABLE = TABLE
