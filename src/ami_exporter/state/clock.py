"""The one clock every part of a server's state reads: wall time and monotonic time.

Wall time (``time()``) stamps what is exported as a Unix time (last message, start and reload
times, the status page's "since"); monotonic time (``monotonic()``) measures intervals
(channel durations, the resync grace period, VICIdial's call-ID memory). Tests pass any object
with these two methods.
"""

from __future__ import annotations

import time as _time
from typing import Final, Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back."""
        ...


class SystemClock:
    """The process's clocks. The methods are the builtins themselves: no call layer is added
    where an event handler reads the time."""

    __slots__ = ()
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


SYSTEM_CLOCK: Final[Clock] = SystemClock()
