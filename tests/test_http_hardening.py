"""The HTTP side under attack (issue #12, "HTTP side"): the connection cap and the open-file
limit, slow and silent clients, protocol edge cases, and a property test of the request path.

Each test has its own tier mark (the file mixes in-process unit tests, tests that wait out
real timeouts or start processes, and Hypothesis properties). The figures behind the limits
(latency under 300 clients that never read, RSS with 50, wrk) are measured by
``python -m benchmarks.http_attacks``, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import os
import re
import resource
import socket
import ssl
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import PKI, REPO, Proc, clean_env, free_port, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.http import (
    MAX_BUFFERED_INPUT,
    HTTPConnection,
    HTTPLimits,
    accepts_gzip,
    request_path,
)
from ami_exporter.web.listener import FD_RESERVE, fit_to_open_file_limit
from ami_exporter.web.server import WebServer

TIMEOUT = 5.0
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")
# Every status the server may answer with.
STATUSES = {200, 400, 401, 404, 405, 431, 501, 503, 505}  # never a 500

# ---------------------------------------------------------------------------- helpers


class _Big:
    """A collector whose exposition is about ``megabytes`` MB (128 samples per 8 MB)."""

    def __init__(self, megabytes: int) -> None:
        self.pad = "x" * 65536
        self.count = megabytes * 16

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("big", "a big exposition", labels=["i", "pad"])
        for i in range(self.count):
            family.add_metric([str(i), self.pad], i)
        yield family


def big_registry(megabytes: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Big(megabytes))  # type: ignore[arg-type]
    return registry


@contextlib.asynccontextmanager
async def serving(
    registry: CollectorRegistry | None = None,
    *,
    limits: HTTPLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebServer]:
    states = [ServerState("pbx1")]
    kwargs = {} if limits is None else {"limits": limits}
    web = WebServer(
        registry if registry is not None else build_registry(states),
        states,
        host="127.0.0.1",
        port=0,
        ssl_context=ssl_context,
        **kwargs,  # type: ignore[arg-type]
    )
    await web.start()
    try:
        yield web
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)


async def exchange(port: int, data: bytes, *, timeout: float = 2.0, eof: bool = False) -> bytes:
    """Send ``data``; what comes back until the server closes, or ``timeout`` passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        out = bytearray()
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(
                reader.read(65536), max(0.0, deadline - time.monotonic())
            ):
                out += chunk
        return bytes(out)
    finally:
        writer.close()


def request(target: str = "/metrics", *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def responses(out: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``out``, one after the other; AssertionError if any is malformed.

    A body is never taken to start with a status line (none of ours does): that is how a
    HEAD answer, which announces a Content-Length but has no body, is told apart."""
    found = []
    pos = 0
    while pos < len(out):
        match = STATUS_LINE.match(out, pos)
        assert match, f"not a status line at {pos}: {out[pos : pos + 80]!r}"
        end = out.index(b"\r\n\r\n", pos) + 4
        headers = {}
        for line in out[match.end() : end - 4].decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            assert sep, f"header line without a colon: {line!r}"
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = b""
        if end < len(out) and not out.startswith(b"HTTP/1.1 ", end):
            body = out[end : end + length]
            assert len(body) == length, "body shorter than its Content-Length"
            end += length
        found.append((int(match.group(1)), headers, body))
        pos = end
    return found


def first_status(out: bytes) -> int | None:
    match = STATUS_LINE.match(out)
    return int(match.group(1)) if match else None


async def silent_client(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A connection that sends a scrape and will never read the answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset after what it sent)."""
    try:
        while sock.recv(1 << 20):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


# ---------------------------------------------------------------------------- protocol


@pytest.mark.unit
@pytest.mark.parametrize("zero_last", [True, False])
async def test_conflicting_content_length_is_400_and_the_body_is_not_a_request(
    zero_last: bool,
) -> None:
    """Before: the last value won; with ``0`` last the "body" was answered as a second
    request, a smuggling vector behind a proxy that honours the first value."""
    smuggled = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    lengths = [b"Content-Length: %d\r\n" % len(smuggled), b"Content-Length: 0\r\n"]
    if not zero_last:
        lengths.reverse()
    data = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(lengths) + b"\r\n" + smuggled
    async with serving() as web:
        out = await exchange(web.port, data)
    answers = responses(out)
    assert [status for status, _, _ in answers] == [400]
    assert b"Healthy" not in out


@pytest.mark.unit
async def test_absolute_form_target_is_served() -> None:
    async with serving() as web:
        out = await exchange(web.port, request("http://127.0.0.1/metrics?x=1"))
    [(status, _, body)] = responses(out)
    assert status == 200
    assert b"asterisk_ami_up" in body


@pytest.mark.unit
@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("notgzipreally", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("", False),
    ],
)
async def test_accept_encoding_q_values(accept_encoding: str, gzipped: bool) -> None:
    async with serving() as web:
        out = await exchange(web.port, request("/metrics", f"Accept-Encoding: {accept_encoding}"))
    [(status, headers, body)] = responses(out)
    assert status == 200
    assert ("content-encoding" in headers) is gzipped, headers
    text = gzip.decompress(body) if gzipped else body
    assert text.startswith(b"# HELP")
    vary = {v.strip().lower() for v in headers["vary"].split(",")}
    assert "accept-encoding" in vary


@pytest.mark.unit
def test_accepts_gzip_function() -> None:
    assert accepts_gzip("br;q=1.0, gzip;q=0.8, *;q=0.1")
    assert accepts_gzip("x-gzip")
    assert not accepts_gzip("gzip;q=bogus")
    assert not accepts_gzip("gzip;q=2")
    assert not accepts_gzip("gzipped, zgip")


@pytest.mark.unit
def test_request_path() -> None:
    assert request_path("/metrics?a=b") == "/metrics"
    assert request_path("http://h:9815/metrics?a") == "/metrics"
    assert request_path("https://h") == "/"
    assert request_path("*") == "*"


@pytest.mark.unit
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", id="no-host"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", id="no-colon"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET /me trics HTTP/1.1\r\nHost: x\r\n\r\n", id="space-in-target"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHo st: x\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\x00\r\n\r\n", id="nul"),
    ],
)
async def test_malformed_head_is_400_and_closed(data: bytes) -> None:
    async with serving() as web:
        out = await exchange(web.port, data)
    [(status, headers, _)] = responses(out)
    assert status == 400
    assert headers["connection"] == "close"


@pytest.mark.unit
async def test_bare_lf_request_is_answered_at_once() -> None:
    """Before: nothing answered until the 30 s idle timeout (it waited for CRLF CRLF)."""
    async with serving() as web:
        start = time.monotonic()
        out = await exchange(web.port, b"GET /-/healthy HTTP/1.1\nHost: x\nConnection: close\n\n")
        took = time.monotonic() - start
    assert first_status(out) in (200, 400)
    assert took < 1.5


@pytest.mark.unit
@pytest.mark.parametrize("version", ["HTTP/1.9", "HTTP/2.0", "HTTP/0.9"])
async def test_unsupported_http_version_is_505(version: str) -> None:
    async with serving() as web:
        out = await exchange(web.port, f"GET /metrics {version}\r\nHost: x\r\n\r\n".encode())
    [(status, headers, _)] = responses(out)
    assert status == 505
    assert headers["connection"] == "close"


@pytest.mark.unit
async def test_http_1_0_is_served_then_closed() -> None:
    async with serving() as web:
        out = await exchange(web.port, b"GET /-/healthy HTTP/1.0\r\n\r\n", timeout=TIMEOUT)
    [(status, headers, body)] = responses(out)  # the read ended: the server closed
    assert (status, body) == (200, b"Healthy\n")
    assert headers["connection"] == "close"


@pytest.mark.unit
async def test_request_head_over_the_limit_is_431() -> None:
    async with serving() as web:
        huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
        out = await exchange(web.port, huge)
    assert [status for status, _, _ in responses(out)] == [431]


@pytest.mark.unit
async def test_answers_then_400_on_a_bad_pipelined_request() -> None:
    async with serving() as web:
        good = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
        out = await exchange(web.port, good + b"garbage\r\n\r\n" + good)
    assert [status for status, _, _ in responses(out)] == [200, 400]


@pytest.mark.unit
async def test_client_half_close_still_gets_its_answer() -> None:
    async with serving() as web:
        out = await exchange(web.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", eof=True)
    assert [(s, b) for s, _, b in responses(out)] == [(200, b"Healthy\n")]


class _Broken:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        raise RuntimeError("a bug in a collector")


@pytest.mark.unit
async def test_a_failing_handler_answers_500_and_logs_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    registry.register(_Broken())  # type: ignore[arg-type]
    async with serving(registry) as web:
        for _ in range(3):
            out = await exchange(web.port, request("/metrics"))
            assert [status for status, _, _ in responses(out)] == [500]
        out = await exchange(web.port, request("/-/healthy"))
        assert first_status(out) == 200
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) <= 1


# ---------------------------------------------------------------------------- connections


@pytest.mark.unit
async def test_at_the_cap_the_longest_idle_connection_makes_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """30 idle connections against a cap of 8: each new one closes the longest idle one, so
    a scrape still gets in (the newest connection is the last to go), and the condition is
    logged once, not once per connection."""
    async with serving(limits=HTTPLimits(max_connections=8)) as web:
        idle = [await asyncio.open_connection("127.0.0.1", web.port) for _ in range(30)]
        await wait_for(lambda: web.connections == 8, TIMEOUT, "8 connections")
        out = await exchange(web.port, request("/metrics"), timeout=TIMEOUT)
        assert first_status(out) == 200
        assert web.connections <= 8
        closed = 0
        for reader, writer in idle:
            with contextlib.suppress(TimeoutError, ConnectionError):
                if await asyncio.wait_for(reader.read(), 0.05) == b"":
                    closed += 1
            writer.close()
        assert closed >= 22
    lines = [r for r in caplog.records if "--web.max-connections" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]


@pytest.mark.e2e
async def test_at_the_cap_with_every_connection_busy_a_new_one_waits_its_turn() -> None:
    """Two clients that never read hold both places (busy, not idle: they are not closed to
    make room); a scrape waits in the backlog until the write timeout frees one."""
    limits = HTTPLimits(max_connections=2, write_timeout=1.0)
    async with serving(big_registry(8), limits=limits) as web:
        stuck = [await silent_client(web.port) for _ in range(2)]
        await wait_for(lambda: web.scrapes.encodings >= 1, TIMEOUT, "the stuck answers")
        start = time.monotonic()
        out = await exchange(web.port, request("/-/healthy"), timeout=TIMEOUT)
        took = time.monotonic() - start
        assert first_status(out) == 200
        assert 0.5 < took < 4.0
        # Each stuck answer has its own write timeout: the second may end a moment after the
        # first freed the place the scrape took (seen on a loaded machine).
        await wait_for(lambda: all(closed_by_peer(s) for s in stuck), TIMEOUT, "both closed")
        for sock in stuck:
            sock.close()


@pytest.mark.unit
def test_default_cap_and_timeouts() -> None:
    limits = HTTPLimits()
    assert limits.max_connections == 512
    assert limits.tls_handshake_timeout == 10.0
    assert limits.write_timeout == 10.0
    assert limits.idle_timeout == 30.0


OPEN_FILE_LIMIT_RUN = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
sys.argv = ["ami-exporter", *sys.argv[1:]]
runpy.run_module("ami_exporter", run_name="__main__")
"""


def _raise_own_open_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"this test opens {need} sockets; the hard open-file limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.mark.e2e
async def test_open_file_limit_1024_with_1100_idle_connections(tmp_path: Path) -> None:
    """systemd's default limit: before, /metrics timed out for the whole attack and accept()
    logged a traceback about a thousand times a second (9 MB in 20 s)."""
    _raise_own_open_file_limit(1400)
    port = free_port()
    argv = [sys.executable, "-c", OPEN_FILE_LIMIT_RUN, "--demo"]
    exporter = Proc([*argv, f"--web.listen-address=127.0.0.1:{port}"], tmp_path, clean_env(), "x")
    idle: list[asyncio.StreamWriter] = []
    try:

        async def scrape() -> bytes:
            return await exchange(port, request("/metrics"), timeout=2.0)

        await wait_for(lambda: "listening on" in exporter.stderr, 15, "the exporter listening")
        for _ in range(1100):
            with contextlib.suppress(TimeoutError, OSError):
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
                idle.append(writer)
        for _ in range(3):
            start = time.monotonic()
            out = await scrape()
            assert first_status(out) == 200, f"no scrape within 2 s: {out[:100]!r}"
            assert time.monotonic() - start < 2.0
    finally:
        for writer in idle:
            writer.close()
        exporter.stop()
    log = exporter.stderr
    assert "Traceback" not in log
    assert len(log.encode()) < 100_000
    assert 1 <= log.count("--web.max-connections") <= 3, log[-2000:]


FIT_RUN = """
import resource, sys
from ami_exporter.web.listener import fit_to_open_file_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
cap = fit_to_open_file_limit(512, 64)
print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("soft", "hard", "cap", "new_soft"),
    [(256, 4096, 512, 576), (256, 300, 236, 300), (2048, 4096, 512, 2048)],
)
def test_the_open_file_limit_is_raised_or_the_cap_lowered(
    soft: int, hard: int, cap: int, new_soft: int
) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", FIT_RUN, str(soft), str(hard)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == [str(cap), str(new_soft)]
    assert ("--web.max-connections=512" in result.stderr) is (cap != 512)
    assert fit_to_open_file_limit(1, FD_RESERVE) == 1  # this process: plenty


@pytest.mark.unit
def test_systemd_unit_sets_an_open_file_limit() -> None:
    unit = (REPO / "examples" / "systemd" / "ami-exporter.service").read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert match, "the unit sets no LimitNOFILE="
    assert int(match.group(1)) >= HTTPLimits().max_connections + FD_RESERVE


# ---------------------------------------------------------------------------- slow clients


@pytest.mark.e2e
async def test_a_client_that_never_reads_is_dropped_at_the_write_timeout() -> None:
    """Before: kept forever, with its answer in memory."""
    async with serving(big_registry(8), limits=HTTPLimits(write_timeout=0.5)) as web:
        sock = await silent_client(web.port)
        try:
            await wait_for(lambda: web.connections == 1, TIMEOUT, "the connection")
            await wait_for(lambda: web.connections == 0, 3.0, "the client dropped")
            assert closed_by_peer(sock)
        finally:
            sock.close()


@pytest.mark.e2e
async def test_clients_that_never_read_share_one_body_and_do_not_slow_a_scrape() -> None:
    """50 clients that never read an 8 MB answer: before, each pinned its own copy (and
    asyncio's buffer of it: +800 MB); now one encoding is shared and each connection buffers
    at most ~128 KB of it. A reading scrape meanwhile is served in time."""
    tracemalloc.start()
    try:
        async with serving(big_registry(8)) as web:
            base = tracemalloc.get_traced_memory()[0]
            stuck = [await silent_client(web.port) for _ in range(50)]
            await wait_for(lambda: web.connections == 50, TIMEOUT, "50 connections")
            await asyncio.sleep(0.3)  # every answer started, and stuck
            held = tracemalloc.get_traced_memory()[0] - base
            start = time.monotonic()
            out = await exchange(web.port, request("/metrics"), timeout=TIMEOUT)
            took = time.monotonic() - start
            encodings = web.scrapes.encodings
            for sock in stuck:
                sock.close()
    finally:
        tracemalloc.stop()
    assert first_status(out) == 200
    assert took < 2.0
    assert held < 40 * 2**20, f"{held / 2**20:.0f} MB held"
    assert encodings <= 4


@pytest.mark.e2e
async def test_idle_timeout_closes_silent_and_slowloris_connections() -> None:
    async with serving(limits=HTTPLimits(idle_timeout=0.3)) as web:
        silent = await asyncio.open_connection("127.0.0.1", web.port)
        slow = await asyncio.open_connection("127.0.0.1", web.port)
        slow[1].write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        for reader, writer in (silent, slow):
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
        assert time.monotonic() - start < 2.0
        await wait_for(lambda: web.connections == 0, TIMEOUT, "no connection left")


@pytest.mark.e2e
async def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(pki: PKI) -> None:
    """asyncio's default handshake timeout is 60 s; ours is 10 s (here 0.5 s)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt("server"), pki.key("server"))
    limits = HTTPLimits(tls_handshake_timeout=0.5)
    async with serving(limits=limits, ssl_context=ctx) as web:
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)  # no TLS hello
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert time.monotonic() - start < 3.0
        writer.close()
        await wait_for(lambda: web.connections == 0, TIMEOUT, "no connection left")
        client = ssl.create_default_context(cafile=pki.crt("ca"))
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port, ssl=client)
        writer.write(request("/-/healthy"))
        assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 200 ")
        writer.close()


# ---------------------------------------------------------------------------- properties

PROPERTY = settings(
    max_examples=int(os.environ.get("AMI_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_TOKENS = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"OPTIONS * ",
    b"/metrics",
    b"/",
    b"/-/healthy",
    b"/-/ready",
    b"http://h/metrics",
    b"?q=1",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/1.9",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: x",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Accept-Encoding: gzip;q=0",
    b"Accept: application/openmetrics-text; version=1.0.0",
    b"Expect: 100-continue",
    b"0",
    b"5",
    b"-1",
    b"99999999999999999999",
    b":",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"a" * 300,
]
_stream = st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=40)), max_size=60).map(
    b"".join
)


@st.composite
def _chunked(draw: st.DrawFn) -> list[bytes]:
    data = draw(_stream)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


class _Transport(asyncio.Transport):
    """Collects what is written; does not read while paused; closes on the next loop turn."""

    def __init__(self, protocol: HTTPConnection) -> None:
        super().__init__()
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def _feed(chunks: list[bytes]) -> tuple[bytes, int, int]:
    """Run the request path on ``chunks`` then EOF; (output, most input held, longest wait)."""
    states = [ServerState("pbx1")]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    conn = HTTPConnection(HTTPLimits(idle_timeout=2.0, write_timeout=2.0))
    transport = _Transport(conn)
    conn.connection_made(transport)
    task = asyncio.create_task(conn.serve(web._respond, lambda idle: None))
    held = 0
    for chunk in chunks:
        for _ in range(1000):  # a paused transport reads nothing until resumed
            if not transport.paused or transport.closed:
                break
            await asyncio.sleep(0)
        if transport.closed:
            break
        assert not transport.paused, "reading paused for good"
        conn.data_received(chunk)
        held = max(held, conn._inbox_size, len(conn._h11.trailing_data[0]))
        await asyncio.sleep(0)
    if not transport.closed:
        conn.eof_received()
    await asyncio.wait_for(task, TIMEOUT)  # never raises, never hangs
    return bytes(transport.out), held, max((len(c) for c in chunks), default=0)


@pytest.mark.fuzz
@PROPERTY
@given(_chunked())
def test_any_bytes_in_any_chunks_get_valid_answers_or_a_close(chunks: list[bytes]) -> None:
    """Through the sans-IO glue (h11 itself: 100 % branch coverage and fuzzed with afl by its
    authors): never an exception, only well-formed responses with a known status, the
    connection always ends, and what one connection holds stays under the bound."""
    out, held, biggest = asyncio.run(_feed(chunks))
    answers = responses(out)
    assert {status for status, _, _ in answers} <= STATUSES
    assert held <= MAX_BUFFERED_INPUT + 16 * 1024 + 2 * biggest


@pytest.mark.fuzz
@settings(PROPERTY, max_examples=max(10, PROPERTY.max_examples // 10))
@given(_stream)
def test_any_bytes_over_a_socket_leave_the_server_serving(data: bytes) -> None:
    async def run() -> tuple[bytes, bytes, int]:
        async with serving(limits=HTTPLimits(idle_timeout=1.0)) as web:
            out = await exchange(web.port, data, timeout=3.0, eof=True)
            after = await exchange(web.port, request("/-/healthy"))
            await wait_for(lambda: web.connections == 0, TIMEOUT, "connections closed")
            listener = web._listener
            assert listener is not None
            failures = sum(n for what, n in listener.notes.counts.items() if "failed" in what)
            return out, after, failures

    out, after, failures = asyncio.run(run())
    assert {status for status, _, _ in responses(out)} <= STATUSES
    assert first_status(after) == 200
    assert failures == 0
