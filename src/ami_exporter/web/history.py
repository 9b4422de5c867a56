"""A short, bounded history of each server's headline numbers, for the status page.

One :class:`Sample` per server every ``interval`` seconds (10 s), the last ``points`` kept
(180: half an hour), in a ring buffer: memory is fixed whatever the traffic. Sampling reads a few
aggregate dicts of :class:`~ami_exporter.state.server.ServerState` from a periodic task, never
from the AMI event path, so it costs the intake nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ami_exporter.state.server import ServerState

SAMPLE_INTERVAL: Final = 10.0
HISTORY_POINTS: Final = 180  # 30 minutes at one sample every 10 s


@dataclass(frozen=True, slots=True)
class Sample:
    """One server's numbers at one moment; the counters are totals since the exporter started."""

    timestamp: float
    up: bool
    channels: int
    calls: int
    originates: int
    originates_failed: int
    hangups: int


def take_sample(state: ServerState, now: float) -> Sample:
    """The current numbers of ``state`` (O(label sets), no channel is visited)."""
    originates = list(state.originates.items())
    return Sample(
        timestamp=now,
        up=state.up,
        channels=sum(state.channels_by_tech.values()),
        calls=state.active_calls,
        originates=sum(n for _, n in originates),
        originates_failed=sum(n for (result, _), n in originates if result != "success"),
        hangups=sum(state.hangups.values()),
    )


class History:
    """Ring buffers of :class:`Sample`, one per server, filled by :meth:`run`."""

    def __init__(
        self,
        states: Sequence[ServerState],
        *,
        interval: float = SAMPLE_INTERVAL,
        points: int = HISTORY_POINTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or points < 1:
            raise ValueError("interval must be positive and points at least 1")
        self.states = states  # kept, not copied: a reload replaces the servers in place
        self.interval = interval
        self.points = points
        self._clock = clock
        # By the state itself, not id(): a removed state's id may be reused by a new one.
        self._series: dict[ServerState, deque[Sample]] = {}

    def sample(self) -> None:
        """Append one sample per server (the oldest falls out once the buffer is full).

        The series of a server no longer in :attr:`states` (removed at a reload) is dropped.
        """
        now = self._clock()
        series: dict[ServerState, deque[Sample]] = {}
        for state in self.states:
            ring = self._series.get(state)
            if ring is None:
                ring = deque(maxlen=self.points)
            ring.append(take_sample(state, now))
            series[state] = ring
        self._series = series

    def series(self, state: ServerState) -> list[Sample]:
        """The stored samples of ``state``, oldest first (empty for an unknown state)."""
        return list(self._series.get(state, ()))

    async def run(self) -> None:
        """Sample now, then every ``interval`` seconds on a fixed schedule, until cancelled."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            self.sample()
            next_tick += self.interval
            delay = next_tick - loop.time()
            if delay < 0:  # the loop was stalled: skip the missed ticks, keep the cadence
                next_tick = loop.time() + self.interval
                delay = self.interval
            await asyncio.sleep(delay)
