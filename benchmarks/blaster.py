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

The parent asks for per-connection statistics (keyed by the ``Login`` ``Username``) with
:meth:`Blaster.stats`. Every wait is bounded: the process exits when the parent closes the
pipe, on ``stop``, or after :data:`MAX_LIFETIME` seconds.
"""

from __future__ import annotations

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


class _Connection:
    def __init__(self, sock: socket.socket, stream: Stream, config: BlasterConfig) -> None:
        self.sock = sock
        self.stream = stream
        self.config = config
        self.lock = threading.Lock()
        self.logged_in = threading.Event()
        self.closing = threading.Event()
        self.stats = ConnStats(total_events=stream.events, rate=config.rate or 0.0)

    # ------------------------------------------------------------------ writing

    def send(self, data: bytes | memoryview) -> bool:
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            self.closing.set()
            return False
        return True

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
                stall = time.monotonic() - t0
                if stall > stats.max_stall:
                    stats.max_stall = stall
                if stall > 0.1:
                    stats.stalls_over_100ms += 1
                if stall > 0.02 and len(stats.stalls) < MAX_STALL_LOG:
                    stats.stalls.append((time.monotonic(), stall))
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
            self.closing.set()
            goodbye = f"Response: Goodbye\r\n{head}Message: Thanks for all the fish.\r\n\r\n"
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
            threading.Thread(target=conn.write_stream, daemon=True).start()

    def watchdog() -> None:
        time.sleep(MAX_LIFETIME)
        os._exit(3)

    threading.Thread(target=accept_loop, daemon=True).start()
    threading.Thread(target=watchdog, daemon=True).start()
    control.send(
        {"port": listener.getsockname()[1], "events": stream.events, "counts": stream.counts}
    )
    try:
        while True:
            command = control.recv()
            if command == "stats":
                control.send([asdict(c.stats) for c in connections])
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
