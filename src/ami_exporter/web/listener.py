"""Listening sockets, and the cap on open connections (``--web.max-connections``).

Our own accept loop rather than ``asyncio.start_server``'s, for three things asyncio cannot
do: count connections from the moment they are accepted (a TLS handshake included), stop
accepting without closing the listening socket, and handle running out of file descriptors
without asyncio's traceback on every ``accept()`` (about 19,000 of them in 20 s under a 1024
open-file limit, issue #12).

At the cap, room is made by closing the connection that has been *idle* the longest (waiting
for a request: a slowloris, a silent TLS client, a kept-alive connection between scrapes), so
that a new connection, a scrape, always gets in: it is the newest, the last one to go. When
every connection is busy (answering, each bounded by the write timeout), accepting pauses and
new connections wait in the kernel's backlog until one ends. Either condition, and a failing
``accept()``, is logged once per :data:`LOG_INTERVAL` with a count, never once per event.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Final

__all__ = ["FD_RESERVE", "Listener", "Slot", "fit_to_open_file_limit"]

log = logging.getLogger("ami_exporter.web")

# Descriptors kept for everything but HTTP connections: listening sockets, AMI sessions (one
# per server, added by the caller), the event loop, log files, stdio.
FD_RESERVE: Final = 64
BACKLOG: Final = 128
ACCEPT_BATCH: Final = 64  # accept() calls per wake-up, so a SYN flood cannot hog the loop
ACCEPT_RETRY: Final = 0.5  # seconds before accepting again after running out of descriptors
LOG_INTERVAL: Final = 10.0
_OUT_OF_RESOURCES: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Connect = Callable[[socket.socket, "Slot"], Coroutine[Any, Any, None]]


class Slot:
    """One accepted connection's place under the cap."""

    __slots__ = ("_listener", "evict", "task")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.task: asyncio.Task[None] | None = None
        # How to end this connection to make room: cancel its task until it has a transport,
        # then whatever the connection sets (closing it).
        self.evict: Callable[[], None] = self._cancel

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def set_idle(self, idle: bool) -> None:
        """Waiting for a request (may be closed to make room), or busy with one."""
        self._listener._set_idle(self, idle)


class _Throttled:
    """Conditions counted and logged at once, then at most once per interval with counts."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, what: str) -> None:
        self.counts[what] += 1
        if self._timer is None:
            self.flush()

    def flush(self) -> None:
        self._timer = None
        if not self.counts:
            return
        log.warning(
            "HTTP connections: %s",
            "; ".join(
                what if n == 1 else f"{what}: {n} times in the last {self.interval:g} s"
                for what, n in self.counts.items()
            ),
        )
        self.counts.clear()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def close(self) -> None:
        """Log what is still counted, and stop."""
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def fit_to_open_file_limit(max_connections: int, reserve: int) -> int:
    """The connection cap that fits the open-file limit: the soft limit is raised (up to the
    hard one, as Go programs do at start) when the cap needs it; when even that is too low,
    a smaller cap, logged."""
    need = max_connections + reserve
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    target = need if hard == resource.RLIM_INFINITY else min(hard, need)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= need:
        return max_connections
    fitted = max(1, soft - reserve)
    log.warning(
        "the open-file limit (%d) leaves room for %d HTTP connections, not "
        "--web.max-connections=%d; raise it (systemd: LimitNOFILE=)",
        soft,
        fitted,
        max_connections,
    )
    return fitted


async def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (every interface when empty) and ``port``, as
    ``asyncio.start_server`` makes them; OSError naming the address when one cannot bind."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family on its own socket, as asyncio does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(exc.errno, f"cannot bind {address!r}: {reason}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on ``sockets`` and runs ``connect(sock, slot)`` per connection, under the cap."""

    def __init__(self, sockets: list[socket.socket], connect: Connect, max_connections: int):
        self.sockets = sockets
        self.max_connections = max_connections
        self._connect = connect
        self._slots: set[Slot] = set()
        self._idle: dict[Slot, None] = {}  # insertion order: the longest idle first
        self._accepting = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self.notes = _Throttled(LOG_INTERVAL)

    @property
    def connections(self) -> int:
        return len(self._slots)

    def start(self) -> None:
        self._resume()

    def _resume(self) -> None:
        self._retry = None
        if self._accepting or self._closed:
            return
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.add_reader(sock, self._accept, sock)
        self._accepting = True

    def _pause(self) -> None:
        if not self._accepting:
            return
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.remove_reader(sock)
        self._accepting = False

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            full = len(self._slots) >= self.max_connections
            if full and not self._idle:
                self.notes.note(
                    f"all {self.max_connections} busy (--web.max-connections), "
                    "new ones wait in the backlog"
                )
                self._pause()  # until a connection ends or becomes idle
                return
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            sock.setblocking(False)
            if full:
                self._make_room()  # only once there is a new connection to make room for
            self._add(sock)

    def _accept_failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno in _OUT_OF_RESOURCES:
            what = f"accept() failed: {exc.strerror} ({name}), retrying in {ACCEPT_RETRY} s"
        else:
            what = f"accept() failed: {exc.strerror or exc} ({name})"
        self.notes.note(what)
        # Level-triggered readiness would call us again at once: wait, or for a close.
        self._pause()
        self._retry = asyncio.get_running_loop().call_later(ACCEPT_RETRY, self._resume)

    def _make_room(self) -> None:
        """Close the connection that has been idle the longest."""
        slot = next(iter(self._idle))
        self._forget(slot)
        slot.evict()
        self.notes.note(
            f"{self.max_connections} open (--web.max-connections), "
            "closed the longest idle one for a new one"
        )

    def _add(self, sock: socket.socket) -> None:
        slot = Slot(self)
        self._slots.add(slot)
        self._idle[slot] = None
        slot.task = asyncio.get_running_loop().create_task(self._run(sock, slot))

    async def _run(self, sock: socket.socket, slot: Slot) -> None:
        try:
            await self._connect(sock, slot)
        except Exception as exc:  # a bug: one line per interval, never a traceback per client
            self.notes.note(f"a connection failed: {type(exc).__name__}: {exc}")
            sock.close()
        finally:
            self._forget(slot)

    def _forget(self, slot: Slot) -> None:
        self._idle.pop(slot, None)
        if slot in self._slots:
            self._slots.discard(slot)
            if self._retry is not None:  # out of descriptors: one was just freed
                self._retry.cancel()
                self._retry = None
            self._room_changed()

    def _set_idle(self, slot: Slot, idle: bool) -> None:
        if slot not in self._slots:
            return  # already evicted
        if idle:
            self._idle.pop(slot, None)
            self._idle[slot] = None  # to the end: the most recently active
            self._room_changed()
        else:
            self._idle.pop(slot, None)

    def _room_changed(self) -> None:
        if not self._accepting and self._retry is None and not self._closed:
            self._resume()

    async def close(self) -> None:
        """Stop accepting, close the listening sockets, end every connection and wait."""
        self._closed = True
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
        self.notes.close()
        for sock in self.sockets:
            sock.close()
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        for slot in list(self._slots):
            slot.evict()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for task in tasks:
            task.cancel()
