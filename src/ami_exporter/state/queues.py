"""app_queue statistics, polled with ``QueueStatus`` and ``QueueSummary`` (AMI reference 3.12).

Opt-in per server (``queues: true``): VICIdial does not route calls through app_queue, and a
box without it answers the poll with an error, remembered for the session. Each poll replaces
the previous picture; queues that vanished (removed from queues.conf) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.state.labels import bounded

MAX_QUEUES: Final = 256
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
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0


@dataclass(slots=True)
class Queue:
    callers: int = 0
    completed: int = 0
    abandoned: int = 0
    longest_hold: float = 0.0
    members: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, paused) -> n


class QueueState:
    """The last polled picture of every queue of one server."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}

    def apply_status(self, items: Iterable[Message]) -> None:
        """``QueueStatus``: ``QueueParams``, ``QueueMember`` and ``QueueEntry`` items."""
        fresh: dict[str, Queue] = {}
        longest: dict[str, float] = {}

        def queue_of(item: Message) -> Queue | None:
            name = bounded(item.get("Queue") or "")
            queue = fresh.get(name)
            if queue is None:
                if not name or len(fresh) >= MAX_QUEUES:
                    return None
                queue = fresh[name] = Queue()
                old = self.queues.get(name)
                if old is not None:
                    # Keep member label sets at 0 rather than let them vanish between polls.
                    queue.members = dict.fromkeys(old.members, 0)
            return queue

        for item in items:
            queue = queue_of(item)
            if queue is None:
                continue
            if item.name == "QueueParams":
                queue.callers = _int(item.get("Calls"))
                queue.completed = _int(item.get("Completed"))
                queue.abandoned = _int(item.get("Abandoned"))
            elif item.name == "QueueMember":
                status = MEMBER_STATUSES.get((item.get("Status") or "").strip(), "unknown")
                paused = "true" if (item.get("Paused") or "0").strip() == "1" else "false"
                key = (status, paused)
                queue.members[key] = queue.members.get(key, 0) + 1
            elif item.name == "QueueEntry":
                name = bounded(item.get("Queue") or "")
                longest[name] = max(longest.get(name, 0.0), float(_int(item.get("Wait"))))
        for name, queue in fresh.items():
            queue.longest_hold = longest.get(name, 0.0)
        self.queues = fresh

    def apply_summary(self, items: Iterable[Message]) -> None:
        """``QueueSummary`` items: ``LongestHoldTime`` (seconds) per queue."""
        for item in items:
            if item.name != "QueueSummary":
                continue
            queue = self.queues.get(bounded(item.get("Queue") or ""))
            if queue is not None:
                queue.longest_hold = float(_int(item.get("LongestHoldTime")))

    def clear(self) -> None:
        self.queues = {}
