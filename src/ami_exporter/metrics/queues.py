"""app_queue queues (polled with QueueStatus/QueueSummary, opt-in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ami_exporter.metrics.table import Samples, TableCollector, clean, counter, gauge
from ami_exporter.state.queues import Queue
from ami_exporter.state.server import ServerState

Q: Final = ("server", "queue")


def _per_queue(value: Callable[[Queue], float]) -> Callable[[ServerState], Samples]:
    def read(st: ServerState) -> Samples:
        return [((clean(name),), value(q)) for name, q in list(st.queues.queues.items())]

    return read


def _members(st: ServerState) -> Samples:
    return [
        ((clean(name), status, paused), n)
        for name, q in list(st.queues.queues.items())
        for (status, paused), n in list(q.members.items())
    ]


TABLE: Final = (
    gauge(
        "asterisk_queue_callers",
        "Callers waiting in an app_queue queue (QueueStatus, opt-in).",
        Q,
        _per_queue(lambda q: q.callers),
    ),
    gauge(
        "asterisk_queue_members",
        "Queue members by device status and paused (true/false).",
        (*Q, "status", "paused"),
        _members,
    ),
    gauge(
        "asterisk_queue_longest_hold_seconds",
        "Wait of the caller waiting longest in a queue (0 when none).",
        Q,
        _per_queue(lambda q: q.longest_hold),
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
)


class QueuesCollector(TableCollector):
    TABLE = TABLE
