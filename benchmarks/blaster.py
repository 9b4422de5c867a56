"""A loopback AMI server that streams a pre-rendered event stream as fast as a client reads.

It runs in a separate process (:class:`Blaster` starts it with the ``spawn`` method), so its
CPU never counts against the client being measured. It binds 127.0.0.1 on an ephemeral port
and reports the port to the parent over a pipe.

Per connection: the banner ``Asterisk Call Manager/11.0.0``, then a reader thread answers
``Login`` (``Response: Success`` with the client's ``ActionID``, then ``FullyBooted``),
``CoreSettings``, ``CoreStatus``, ``CoreShowChannels`` (the prefilled channels as
``CoreShowChannel`` items, or an empty list), ``Ping`` and ``Logoff``; a writer thread starts
streaming right after the ``Login`` answer. Both write under one lock, so answers go out
between two message-aligned chunks of the stream, concurrently with streaming.

Unpaced, the writer ``sendall``s 64 KiB chunks back to back, so the client's reading speed is
the only limit. Paced at R events/s, it writes the events that are due every ``tick`` seconds
(default :data:`PACE_TICK`) in one ``sendall`` and records the longest ``sendall`` (a blocked
write means the client fell behind; Asterisk logs a session off when a write blocks longer
than its ``writetimeout``, 100 ms by default).

With ``shared_pacer=True`` (the many-server scenarios) one pacer thread serves every paced
connection of the process instead of one writer thread each: every ``tick`` it queues each
connection's due events (and any action answers, after the message being written) and writes
what the kernel takes without blocking (``MSG_DONTWAIT``); the connections are spread over
the tick in 1 ms slots, so writes arrive staggered as from independent servers. A write is
blocked from the first write the kernel refused in part until that connection's queue is
empty again; that span is what the statistics record as a stall. 200 per-connection threads
waking every few ms in one Python process cost the load generator 0.7-1.3 CPUs in wake-ups
and GIL hand-offs, CPU the measured client then did not get on a 2-CPU machine; one thread
does the same writes for 0.2 of a CPU at a 10 ms tick.

The parent asks for per-connection statistics (keyed by the ``Login`` ``Username``) with
:meth:`Blaster.stats`. Every wait is bounded: the process exits when the parent closes the
pipe, on ``stop``, or after :data:`MAX_LIFETIME` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from benchmarks.stream import Stream, build_stream, coreshowchannels_answer

BANNER: Final = b"Asterisk Call Manager/11.0.0\r\n"
CHUNK_BYTES: Final = 64 * 1024
PACE_TICK: Final = 0.002
PACER_SLOT: Final = 0.001  # shared pacer: the connections' writes spread over the tick
MAX_LIFETIME: Final = 900.0
LOGIN_WAIT: Final = 60.0
MAX_ACTION_BYTES: Final = 64 * 1024
MAX_STALL_LOG: Final = 1000

FULLY_BOOTED: Final = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 3609\r\nLastReload: 3609\r\n"
    b"Status: Fully Booted\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class BlasterConfig:
    """What every connection to one blaster process gets."""

    calls: int
    prefill_channels: int = 0
    rate: float | None = None  # events/s per connection; None = as fast as the client reads
    list_prefill: bool = True  # answer CoreShowChannels with the prefilled channels
    system_name: str = ""
    tick: float = PACE_TICK  # paced: seconds between two writes of the events due
    shared_pacer: bool = False  # paced: one thread writes for every connection (see above)


@dataclass(slots=True)
class ConnStats:
    """Per-connection progress, written by the writer thread only."""

    username: str = ""
    total_events: int = 0
    events_sent: int = 0
    started: float = 0.0  # time.monotonic() of the first byte of the stream
    finished: float = 0.0  # time.monotonic() when the last byte was handed to the kernel
    max_stall: float = 0.0  # longest sendall while paced, seconds
    stalls_over_100ms: int = 0
    rate: float = 0.0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds) > 20 ms
    snapshot: float = 0.0  # time.monotonic() in the blaster when these figures were read


class _Connection:
    def __init__(self, sock: socket.socket, stream: Stream, config: BlasterConfig) -> None:
        self.sock = sock
        self.stream = stream
        self.config = config
        self.lock = threading.Lock()
        self.logged_in = threading.Event()
        self.closing = threading.Event()
        self.stats = ConnStats(total_events=stream.events, rate=config.rate or 0.0)
        # Shared pacer only: (bytes, events sent once they are out), the head's bytes written.
        self.queue: collections.deque[tuple[memoryview, int]] = collections.deque()
        self.head_done = 0
        self.queued_events = 0
        self.blocked_since = 0.0
        self.shutdown_after_flush = False

    # ------------------------------------------------------------------ writing

    def send(self, data: bytes | memoryview) -> bool:
        if self.config.shared_pacer and self.config.rate is not None:
            with self.lock:  # the pacer writes it after the message it is writing
                self.queue.append((memoryview(data), -1))
            return not self.closing.is_set()
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            self.closing.set()
            return False
        return True

    def pace(self, now: float) -> None:
        """Shared pacer: queue the events due by ``now``, then write without blocking."""
        stats = self.stats
        ends = self.stream.ends
        total = len(ends)
        with self.lock:
            if self.logged_in.is_set() and not self.shutdown_after_flush:
                if not stats.started:
                    stats.started = now
                rate = self.config.rate or 0.0
                due = min(total, int((now - stats.started) * rate) + 1)
                if due > self.queued_events:
                    begin = ends[self.queued_events - 1] if self.queued_events else 0
                    view = memoryview(self.stream.data)[begin : ends[due - 1]]
                    self.queue.append((view, due))
                    self.queued_events = due
            self._flush(now)

    def _flush(self, now: float) -> None:
        stats = self.stats
        queue = self.queue
        try:
            while queue:
                view, events = queue[0]
                n = self.sock.send(view[self.head_done :], socket.MSG_DONTWAIT)
                self.head_done += n
                if self.head_done < len(view):
                    if not self.blocked_since:
                        self.blocked_since = now
                    return
                queue.popleft()
                self.head_done = 0
                if events >= 0:
                    stats.events_sent = events
        except BlockingIOError:
            if not self.blocked_since:
                self.blocked_since = now
            return
        except OSError:
            self.closing.set()
            return
        if self.blocked_since:
            self._record_stall(now - self.blocked_since)
            self.blocked_since = 0.0
        if stats.events_sent >= len(self.stream.ends) and not stats.finished:
            stats.finished = now
        if self.shutdown_after_flush:
            self.closing.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def _record_stall(self, stall: float) -> None:
        stats = self.stats
        if stall > stats.max_stall:
            stats.max_stall = stall
        if stall > 0.1:
            stats.stalls_over_100ms += 1
        if stall > 0.02 and len(stats.stalls) < MAX_STALL_LOG:
            stats.stalls.append((time.monotonic(), stall))

    def write_stream(self) -> None:
        if not self.logged_in.wait(LOGIN_WAIT) or self.closing.is_set():
            return
        stats = self.stats
        view = memoryview(self.stream.data)
        ends = self.stream.ends
        total = len(ends)
        stats.started = time.monotonic()
        if self.config.rate is None:
            sent = 0
            while sent < total and not self.closing.is_set():
                # Message-aligned chunk of about CHUNK_BYTES.
                begin = ends[sent - 1] if sent else 0
                stop = sent + 1
                while stop < total and ends[stop] - begin < CHUNK_BYTES:
                    stop += 1
                if not self.send(view[begin : ends[stop - 1]]):
                    return
                sent = stop
                stats.events_sent = sent
        else:
            rate = self.config.rate
            tick = self.config.tick
            sent = 0
            while sent < total and not self.closing.is_set():
                due = min(total, int((time.monotonic() - stats.started) * rate) + 1)
                if due <= sent:
                    time.sleep(tick)
                    continue
                begin = ends[sent - 1] if sent else 0
                t0 = time.monotonic()
                if not self.send(view[begin : ends[due - 1]]):
                    return
                self._record_stall(time.monotonic() - t0)
                sent = due
                stats.events_sent = sent
                time.sleep(tick)
        stats.finished = time.monotonic()

    # ------------------------------------------------------------------ reading

    def read_actions(self) -> None:
        buf = b""
        try:
            while not self.closing.is_set():
                data = self.sock.recv(65536)
                if not data:
                    break
                buf = (buf + data).replace(b"\r\n", b"\n")
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    if block.strip():
                        self.answer(_parse(block))
                if len(buf) > MAX_ACTION_BYTES:
                    break
        except OSError:
            pass
        finally:
            self.closing.set()

    def answer(self, fields: dict[str, str]) -> None:
        name = fields.get("action", "").lower()
        aid = fields.get("actionid", "")
        head = f"ActionID: {aid}\r\n" if aid else ""
        if name == "login":
            self.stats.username = fields.get("username", "")
            self.send(
                f"Response: Success\r\n{head}Message: Authentication accepted\r\n\r\n".encode()
                + FULLY_BOOTED
            )
            self.logged_in.set()
        elif name == "coresettings":
            self.send(
                f"Response: Success\r\n{head}AMIversion: 11.0.0\r\nAsteriskVersion: 22.10.1\r\n"
                f"SystemName: {self.config.system_name}\r\nCoreMaxCalls: 5000\r\n"
                "CoreMaxLoadAvg: 0.000000\r\nCoreRunUser: \r\nCoreRunGroup: \r\n"
                "CoreMaxFilehandles: 0\r\nCoreRealTimeEnabled: No\r\nCoreCDRenabled: Yes\r\n"
                "CoreHTTPenabled: No\r\nSoundsSearchCustomDir: No\r\n\r\n".encode()
            )
        elif name == "corestatus":
            self.send(
                f"Response: Success\r\n{head}CoreStartupDate: 2026-11-27\r\n"
                "CoreStartupTime: 09:26:28\r\nCoreReloadDate: 2026-11-27\r\n"
                "CoreReloadTime: 09:26:28\r\nCoreCurrentCalls: 0\r\n"
                "CoreProcessedCalls: 39\r\n\r\n".encode()
            )
        elif name == "coreshowchannels":
            listed = self.config.prefill_channels if self.config.list_prefill else 0
            self.send(coreshowchannels_answer(listed, aid))
        elif name == "ping":
            self.send(
                f"Response: Success\r\n{head}Ping: Pong\r\n"
                f"Timestamp: {time.time():.6f}\r\n\r\n".encode()
            )
        elif name == "logoff":
            goodbye = f"Response: Goodbye\r\n{head}Message: Thanks for all the fish.\r\n\r\n"
            if self.config.shared_pacer and self.config.rate is not None:
                self.send(goodbye.encode())  # the pacer shuts down once it is written
                with self.lock:
                    self.shutdown_after_flush = True
                return
            self.closing.set()
            self.send(goodbye.encode())
            with contextlib.suppress(OSError), self.lock:
                self.sock.shutdown(socket.SHUT_RDWR)
        else:
            self.send(f"Response: Error\r\n{head}Message: Invalid/unknown command\r\n\r\n".encode())


def _parse(block: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _pacer(connections: list[_Connection], tick: float) -> None:
    """The shared pacer: each connection writes what is due once a ``tick``, the connections
    spread over the tick in :data:`PACER_SLOT` slots (connection i in slot i mod slots), so
    their writes arrive at staggered times, as from independent servers, not all at once
    (which would let the client read every socket in one wake-up of its loop)."""
    slots = max(1, round(tick / PACER_SLOT))
    step = tick / slots
    due = time.monotonic()
    slot = 0
    while True:
        now = time.monotonic()
        for conn in connections[slot::slots]:
            if not conn.closing.is_set():
                conn.pace(now)
        slot = (slot + 1) % slots
        due += step
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            due = time.monotonic()  # late: the next slot writes what is due by then


def _stats_rows(connections: list[_Connection]) -> list[dict[str, Any]]:
    now = time.monotonic()
    rows = []
    for c in list(connections):
        row = asdict(c.stats)
        row["snapshot"] = now
        if c.blocked_since:  # a write blocked right now counts as far as it has gone
            row["max_stall"] = max(row["max_stall"], now - c.blocked_since)
            row["stalls"].append((now, now - c.blocked_since))
        rows.append(row)
    return rows


def _serve(config: BlasterConfig, control: multiprocessing.connection.Connection) -> None:
    """Body of the blaster process."""
    stream = build_stream(config.calls, config.prefill_channels, system_name=config.system_name)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    connections: list[_Connection] = []

    def accept_loop() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, stream, config)
            connections.append(conn)
            try:
                sock.sendall(BANNER)
            except OSError:
                continue
            threading.Thread(target=conn.read_actions, daemon=True).start()
            if not (config.shared_pacer and config.rate is not None):
                threading.Thread(target=conn.write_stream, daemon=True).start()

    def watchdog() -> None:
        time.sleep(MAX_LIFETIME)
        os._exit(3)

    threading.Thread(target=accept_loop, daemon=True).start()
    threading.Thread(target=watchdog, daemon=True).start()
    if config.shared_pacer and config.rate is not None:
        threading.Thread(target=_pacer, args=(connections, config.tick), daemon=True).start()
    control.send(
        {"port": listener.getsockname()[1], "events": stream.events, "counts": stream.counts}
    )
    try:
        while True:
            command = control.recv()
            if command == "stats":
                control.send(_stats_rows(connections))
            elif command == "stop":
                break
    except (EOFError, OSError):
        pass
    finally:
        listener.close()
        for conn in connections:
            conn.closing.set()
            with contextlib.suppress(OSError):
                conn.sock.close()
        control.close()


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (0.0 where that cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int | None = None) -> float:
    """Seconds the threads of a process (default: this one) spent runnable but not running,
    from /proc/<pid>/task/*/schedstat: how much CPU it wanted and the machine did not give."""
    base = f"/proc/{pid or os.getpid()}/task"
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(base):
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"{base}/{task}/schedstat", encoding="ascii") as fh,
            ):
                total += int(fh.read().split()[1])
    return total / 1e9


class Blaster:
    """Parent-side handle of one blaster process (use as a context manager)."""

    def __init__(self, config: BlasterConfig) -> None:
        self.config = config
        ctx = multiprocessing.get_context("spawn")
        self._control, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(config, child), daemon=True)
        self._process.start()
        child.close()
        if not self._control.poll(120.0):
            self.close()
            raise RuntimeError("blaster did not start within 120 s")
        hello: dict[str, Any] = self._control.recv()
        self.port: int = hello["port"]
        self.events: int = hello["events"]
        self.counts: dict[str, int] = hello["counts"]
        self._lock = threading.Lock()

    def stats(self) -> dict[str, ConnStats]:
        """Per-connection progress, keyed by the Login Username."""
        with self._lock:
            self._control.send("stats")
            if not self._control.poll(10.0):
                raise RuntimeError("blaster did not answer within 10 s")
            rows: list[dict[str, Any]] = self._control.recv()
        return {row["username"]: ConnStats(**row) for row in rows}

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the blaster process has used so far (Linux /proc)."""
        return process_cpu_seconds(self._process.pid)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._control.send("stop")
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        self._control.close()

    def __enter__(self) -> Blaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
