"""One client connection of the simulated Asterisk: its socket, AMI session and login state.

The protocol side (framing the client's actions, the banner) is the project's sans-IO
:class:`~ami_exporter.ami.session.ServerSession`; this module adds what is I/O or per-client
state: the transport, Asterisk's ``writetimeout`` for clients that stop reading, and what the
login decided (authenticated, event classes, the MD5 challenge).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from ami_exporter.ami.session import BANNER_PREFIX, ServerSession

__all__ = ["Connection"]

log = logging.getLogger(__name__)

# Asterisk's per-user ``writetimeout`` (manager.conf) is 100 ms: a session whose socket stays
# full for that long is logged off. We cannot block on a socket, so the equivalent is: once the
# transport buffer grows past a high-water mark, give it 100 ms to drain below it, else close.
WRITE_TIMEOUT: Final = 0.1
HIGH_WATER: Final = 256 * 1024


class Connection:
    """A connected client: bytes out through :meth:`send`, actions in through ``ami``."""

    __slots__ = (
        "ami",
        "authenticated",
        "challenge",
        "classes",
        "closed",
        "connected_at",
        "local",
        "remote",
        "session_id",
        "slow_timer",
        "transport",
        "writer",
    )

    def __init__(self, writer: asyncio.StreamWriter, session_id: str, ami_version: str) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.ami = ServerSession(f"{BANNER_PREFIX}{ami_version}")
        self.authenticated = False
        self.classes: frozenset[str] = frozenset()  # the event classes this session gets
        self.closed = False
        self.challenge: str | None = None
        self.connected_at = time.time()
        self.session_id = session_id
        self.slow_timer: asyncio.TimerHandle | None = None
        self.local = self._address(writer.get_extra_info("sockname"))
        self.remote = self._address(writer.get_extra_info("peername"))

    @staticmethod
    def _address(addr: object) -> str:
        """Security events' address format: ``IPV4/TCP/127.0.0.1/5038``."""
        if isinstance(addr, tuple) and len(addr) >= 2:
            family = "IPV6" if ":" in str(addr[0]) else "IPV4"
            return f"{family}/TCP/{addr[0]}/{addr[1]}"
        return "IPV4/TCP/0.0.0.0/0"

    def send(self, data: bytes) -> None:
        if self.closed or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.slow_timer is None and self.transport.get_write_buffer_size() > HIGH_WATER:
            loop = asyncio.get_running_loop()
            self.slow_timer = loop.call_later(WRITE_TIMEOUT, self._check_slow)

    def _check_slow(self) -> None:
        self.slow_timer = None
        if not self.closed and self.transport.get_write_buffer_size() > HIGH_WATER:
            # Like Asterisk: the slow reader is logged off, its stream cut wherever it was.
            log.info("simulator: session %s too slow (writetimeout), closing", self.remote)
            self.abort()

    def close(self) -> None:
        """Close after flushing what is buffered (Goodbye, Shutdown)."""
        if not self.closed:
            self.closed = True
            self.transport.close()
        self._cancel_timer()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes (slow reader, lost connection)."""
        self.closed = True
        self.transport.abort()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self.slow_timer is not None:
            self.slow_timer.cancel()
            self.slow_timer = None
