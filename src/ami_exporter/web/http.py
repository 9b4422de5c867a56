"""One HTTP/1.1 connection: bytes in, through h11, to a request; a response back out, bounded.

h11 (sans-IO, no dependency of its own) parses and frames; this module is the glue to an
asyncio transport, and the part h11 leaves to its user: how long a client may take, and how
much of its input and of our output one connection may hold.

* Input: a request head is at most :attr:`HTTPLimits.max_request_head` bytes (431 beyond);
  what a client sends ahead (pipelining) is buffered up to :data:`MAX_BUFFERED_INPUT`, then
  the socket is no longer read until the requests before it are answered.
* Time: a whole request head must arrive within ``idle_timeout`` of the connection opening or
  of the previous answer (slowloris), and a whole answer must be handed to the kernel within
  ``write_timeout`` (a client that never reads is dropped, not kept forever).
* Output: a body is written :data:`WRITE_CHUNK` bytes at a time as the socket drains, so the
  transport never copies more than about 128 KB of it, whatever its size.
* Protocol: whatever h11 rejects (a header line without a colon, conflicting Content-Length,
  HTTP/1.1 without Host, ...) is answered with its status (400, 431, 501) and the connection
  closed; versions other than HTTP/1.0 and 1.1 get 505. A connection is closed by sending FIN
  and reading what the client still sends for a moment ("lingering close"), so that unread
  request bytes do not turn the close into a reset that destroys the answer before it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

import h11

from ami_exporter.config.model import DEFAULT_MAX_CONNECTIONS

__all__ = [
    "HTTPConnection",
    "HTTPLimits",
    "Handler",
    "Request",
    "Response",
    "accepts_gzip",
    "request_path",
]

log = logging.getLogger("ami_exporter.web")

MAX_BUFFERED_INPUT: Final = 64 * 1024
WRITE_CHUNK: Final = 64 * 1024
# The transport pauses us above this much unsent output (and resumes below a quarter of it).
WRITE_HIGH_WATER: Final = 64 * 1024
# How long a closing connection waits for the client's own FIN, discarding what it sends.
LINGER: Final = 2.0
SUPPORTED_VERSIONS: Final = (b"1.1", b"1.0")
TRACEBACK_INTERVAL: Final = 10.0
_last_traceback = [float("-inf")]  # when a handler's error was last logged with its traceback


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """The HTTP side's bounds (see the README, "Security and hardening", for the defaults)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS  # --web.max-connections
    idle_timeout: float = 30.0  # for a whole request head, from connect or the last answer
    write_timeout: float = 10.0  # to hand one whole answer to the kernel
    # asyncio's default is 60 s: a silent TLS client would hold its descriptor that long.
    tls_handshake_timeout: float = 10.0
    max_request_head: int = 16 * 1024  # request line and headers


@dataclass(frozen=True, slots=True)
class Request:
    """One request without a body, as the routes see it."""

    method: str
    path: str  # the target without its query; an absolute-form target's path
    headers: Mapping[str, str]  # names lower-cased; a repeated field's values joined by ", "
    has_body: bool  # a Content-Length other than 0, or a Transfer-Encoding
    peer: object = None  # the transport's peername: basic auth queues checks per address
    query: str = ""  # the target's query, undecoded (/metrics?collect[]=peers)


@dataclass(slots=True)
class Response:
    """What a route answers; ``sent`` is called once it is out, or abandoned."""

    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Sequence[tuple[str, str]] = ()
    close: bool = False
    sent: Callable[[], None] | None = field(default=None, repr=False)


Handler = Callable[[Request], Awaitable[Response]]


def request_path(target: str) -> str:
    """The path of a request target: origin-form ``/p?q`` or absolute-form ``http://h/p?q``."""
    if not target.startswith("/") and "://" in target:
        # RFC 9112 3.2.2: a server must accept the absolute form (what a proxy sends).
        try:
            return urlsplit(target).path or "/"
        except ValueError:
            return target
    return target.split("?", 1)[0]


def _qvalue(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 12.5.3): q-values honoured,
    ``gzip;q=0`` refuses it, ``*`` covers it when gzip is not named, other names never match."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = max(gzip_q or 0.0, _qvalue(params))
        elif coding == "*":
            star_q = _qvalue(params)
    if gzip_q is not None:
        return gzip_q > 0.0
    return star_q is not None and star_q > 0.0


def _decode_headers(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class HTTPConnection(asyncio.Protocol):
    """The protocol of one accepted connection; :meth:`serve` answers its requests in order."""

    def __init__(self, limits: HTTPLimits) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_request_head)
        self._inbox: list[bytes] = []
        self._inbox_size = 0
        self._unparsed = 0  # bytes h11 holds beyond the last request head it gave us
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None  # data, drained, or lost
        self._abort_handle: asyncio.TimerHandle | None = None
        self._gone: asyncio.Future[None] | None = None  # set once the transport is closed

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self._inbox.append(data)
        self._inbox_size += len(data)
        if self._inbox_size > MAX_BUFFERED_INPUT and not self._reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the socket open to answer what came before the client's FIN

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._wake()
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # ------------------------------------------------------------------ byte streams

    async def _wait(self, deadline: float) -> None:
        """Until woken through ``_waiter``; TimeoutError at ``deadline`` (loop time).

        A timer only while really waiting: an answer that fits the socket buffer, or a request
        already buffered (pipelining), costs none.
        """
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _receive(self, deadline: float) -> bytes:
        """What arrived since the last call, waiting for something; b"" at end of stream."""
        while not self._inbox and not self._eof:
            await self._wait(deadline)
        data = b"".join(self._inbox)
        self._inbox.clear()
        self._inbox_size = 0
        if self._reading_paused and not self._lost:
            assert self.transport is not None
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def _drain(self, deadline: float) -> None:
        """Until the transport holds less than its low-water mark; ConnectionError if lost."""
        while self._writing_paused and not self._lost:
            await self._wait(deadline)
        if self._lost:
            raise ConnectionResetError("connection lost")

    async def _write(self, head: bytes, body: bytes, deadline: float) -> None:
        assert self.transport is not None
        if len(body) <= WRITE_CHUNK:
            self.transport.write(head + body)  # one segment for the usual small answer
        else:
            self.transport.write(head)
            view = memoryview(body)
            for start in range(0, len(body), WRITE_CHUNK):
                await self._drain(deadline)
                self.transport.write(view[start : start + WRITE_CHUNK])
        await self._drain(deadline)

    # ------------------------------------------------------------------ HTTP

    async def serve(self, handler: Handler, idle: Callable[[bool], None]) -> None:
        """Answer requests until the client or a limit ends the connection, then close it.

        ``idle(True)`` is called while the connection waits for a request (and may be dropped
        to make room for another), ``idle(False)`` while it handles one.
        """
        try:
            while await self._serve_one(handler, idle):
                self._h11.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            idle(True)
            await self._close()

    async def _serve_one(self, handler: Handler, idle: Callable[[bool], None]) -> bool:
        """Read and answer one request; whether the connection stays open for another."""
        idle(True)
        deadline = asyncio.get_running_loop().time() + self.limits.idle_timeout
        try:
            event = await self._next_request(deadline)
        except h11.RemoteProtocolError as exc:
            status = HTTPStatus(exc.error_status_hint)
            await self._send(Response(status, _error_body(status), close=True), head_only=False)
            return False
        if event is None:
            return False
        idle(False)
        request, early = self._request(event)
        response = early if early is not None else await self._answer(handler, request)
        if request.has_body:
            response.close = True  # never read a body: it must not be taken for a request
        await self._send(response, head_only=request.method == "HEAD")
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    @staticmethod
    async def _answer(handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:
            # A bug: a 500, and its traceback at most once per interval (not once per request
            # that a client can repeat at will).
            now = time.monotonic()
            if now - _last_traceback[0] >= TRACEBACK_INTERVAL:
                _last_traceback[0] = now
                log.exception("error answering %s %s", request.method, request.path[:200])
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            return Response(status, _error_body(status), close=True)

    async def _next_request(self, deadline: float) -> h11.Request | None:
        """The next request's head, whole by ``deadline``; None when the client closed."""
        fed = self._unparsed  # what h11 holds already (pipelined), plus what it gets now
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._receive(deadline)
                fed += len(data)
                self._h11.receive_data(data)
            elif isinstance(event, h11.Request):
                # h11 bounds a head that arrives in pieces; one that arrives whole is measured
                # here: what it was fed, less what it has not parsed yet.
                self._unparsed = len(self._h11.trailing_data[0])
                if fed - self._unparsed > self.limits.max_request_head:
                    raise h11.RemoteProtocolError("request head too large", 431)
                return event
            else:  # ConnectionClosed; PAUSED cannot happen, each answer precedes the next read
                return None

    def _request(self, event: h11.Request) -> tuple[Request, Response | None]:
        """Our request, and the answer when the connection layer gives it (505)."""
        headers = _decode_headers(event.headers)
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        method = event.method.decode("ascii", "replace")
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        raw_target = event.target.decode("latin-1")
        target = request_path(raw_target)
        query = raw_target.partition("?")[2].partition("#")[0]
        request = Request(method, target, headers, has_body, peer, query)
        if event.http_version not in SUPPORTED_VERSIONS:
            status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
            return request, Response(status, _error_body(status), close=True)
        if not has_body:
            self._h11.next_event()  # the EndOfMessage of an empty body: the client is DONE
        return request, None

    async def _send(self, response: Response, *, head_only: bool) -> None:
        """Write ``response`` within the write timeout (else abort), then call its ``sent``."""
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close" if response.close else "keep-alive"),
            ("X-Content-Type-Options", "nosniff"),
            *response.headers,
        ]
        try:
            head = self._h11.send(
                h11.Response(
                    status_code=response.status.value,
                    headers=headers,
                    reason=response.status.phrase,
                )
            )
            body = b"" if head_only else response.body
            if body:
                self._h11.send_with_data_passthrough(h11.Data(data=body))
            self._h11.send(h11.EndOfMessage())
            deadline = asyncio.get_running_loop().time() + self.limits.write_timeout
            await self._write(head or b"", body, deadline)
        except TimeoutError:
            self._abort()
            raise
        finally:
            if response.sent is not None:
                response.sent()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def evict(self) -> None:
        """End the connection now, to make room for another (or at shutdown)."""
        if self.transport is None or self._lost:
            return
        if self.transport.is_closing():
            self.transport.abort()  # a close already under way (TLS shutdown): cut it short
        else:
            self.transport.close()

    async def _close(self) -> None:
        """Close after a FIN and a moment of reading (lingering close); abort what is stuck;
        return once the transport is closed (so its descriptor is free)."""
        transport = self.transport
        if transport is None or self._lost:
            return
        self._gone = asyncio.get_running_loop().create_future()
        if transport.can_write_eof() and not transport.is_closing():
            try:
                transport.write_eof()  # sent once the buffer has drained
            except OSError:  # the client reset the connection already
                transport.abort()
                await self._gone
                return
            deadline = asyncio.get_running_loop().time() + LINGER
            with contextlib.suppress(TimeoutError, ConnectionError):
                while await self._receive(deadline):
                    pass
        if self._lost:
            return
        if transport.get_write_buffer_size():
            transport.abort()  # a client that does not read within LINGER: nothing to save
        else:
            transport.close()
            # TLS waits for the client's close_notify; a plain socket closes at once. Either
            # way the descriptor does not outlive the write timeout.
            loop = asyncio.get_running_loop()
            self._abort_handle = loop.call_later(self.limits.write_timeout, transport.abort)
        await self._gone


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _error_body(status: HTTPStatus) -> bytes:
    return f"{status.phrase.lower()}\n".encode()
