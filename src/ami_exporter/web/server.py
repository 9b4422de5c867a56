"""The HTTP side: ``/metrics``, a landing page, ``/-/healthy`` and ``/-/ready``.

A small HTTP/1.1 server on asyncio streams, in the same loop as the AMI clients. A scrape only
walks small aggregate dicts (see :mod:`ami_exporter.metrics.collector`), so it holds the loop
for about a millisecond; the kernel's socket buffers absorb AMI traffic meanwhile. Content
negotiation (Prometheus text or OpenMetrics) is :mod:`ami_exporter.metrics.exposition`.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from ami_exporter.metrics.exposition import CollectorRegistry, encode
from ami_exporter.state.server import ServerState
from ami_exporter.web.auth import BasicAuth
from ami_exporter.web.history import History
from ami_exporter.web.statuspage import render_status_page

log = logging.getLogger("ami_exporter.web")

MAX_REQUEST_HEAD = 16 * 1024
IDLE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Request:
    """The request line and headers of one HTTP/1.x request."""

    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    keep_alive: bool

    @classmethod
    def parse(cls, head: bytes) -> _Request | None:
        """The request in ``head`` (up to the blank line), or None if it is not HTTP/1.x."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return cls(method, target, headers, keep_alive)

    @property
    def has_body(self) -> bool:
        return self.headers.get("content-length", "0") != "0" or "transfer-encoding" in self.headers


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra: dict[str, str] = field(default_factory=dict)


class WebServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        states: Sequence[ServerState],
        *,
        host: str,
        port: int,
        telemetry_path: str = "/metrics",
        ssl_context: ssl.SSLContext | None = None,
        basic_auth: BasicAuth | None = None,
        history: History | None = None,
    ) -> None:
        self.registry = registry
        self.basic_auth = basic_auth  # --web.config.file basic_auth_users: every path
        self.states = states  # kept, not copied: a reload replaces the servers in place
        self.history = history  # for the status page's sparklines; optional
        self.host = host
        self.port = port
        self.telemetry_path = telemetry_path
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        # An empty host means every interface, as with Go exporters' ":9815".
        self._server = await asyncio.start_server(
            self._handle, self.host or None, self.port, ssl=self._ssl, limit=MAX_REQUEST_HEAD
        )
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Idle keep-alive connections would hold wait_closed() open (Python 3.12+).
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._respond(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"")
                    return
                keep_alive = await self._dispatch(head, writer)
                if not keep_alive:
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for the next one."""
        request = _Request.parse(head)
        if request is None:
            await self._respond(writer, HTTPStatus.BAD_REQUEST, b"bad request\n")
            return False
        if request.method not in ("GET", "HEAD") or request.has_body:
            # Nothing here takes a request body; close rather than parse one, so a body can
            # never be mistaken for the next request on a kept-alive connection.
            await self._respond(
                writer,
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                extra={"Allow": "GET, HEAD"},
            )
            return False
        if self.basic_auth is not None and not await self.basic_auth.authorize(
            request.headers.get("authorization")
        ):
            response = _Response(
                HTTPStatus.UNAUTHORIZED,
                b"Unauthorized\n",
                extra={"WWW-Authenticate": 'Basic realm="ami-exporter"'},
            )
        else:
            response = self._route(request)
        await self._respond(
            writer,
            response.status,
            response.body,
            response.content_type,
            extra=response.extra,
            keep_alive=request.keep_alive,
            head_only=request.method == "HEAD",
        )
        return request.keep_alive

    def _route(self, request: _Request) -> _Response:
        path = request.target.split("?", 1)[0]
        if path == self.telemetry_path:
            body, content_type = encode(self.registry, request.headers.get("accept", ""))
            extra = {}
            if "gzip" in request.headers.get("accept-encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            return _Response(HTTPStatus.OK, body, content_type, extra)
        if path == "/":
            return _Response(HTTPStatus.OK, self._landing_page(), "text/html; charset=utf-8")
        if path == "/-/healthy":
            return _Response(HTTPStatus.OK, b"Healthy\n")
        if path == "/-/ready":
            waiting = [s.name for s in self.states if not s.ever_logged_in]
            if waiting:
                body = ("Not ready: never logged in to " + ", ".join(waiting) + "\n").encode()
                return _Response(HTTPStatus.SERVICE_UNAVAILABLE, body)
            return _Response(HTTPStatus.OK, b"Ready\n")
        return _Response(HTTPStatus.NOT_FOUND, b"not found\n")

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        extra: dict[str, str] | None = None,
        keep_alive: bool = False,
        head_only: bool = False,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            "X-Content-Type-Options: nosniff",
        ]
        lines.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()

    def _landing_page(self) -> bytes:
        # The status page (see ami_exporter.statuspage): self-contained HTML, no caller data.
        return render_status_page(self.states, self.history, telemetry_path=self.telemetry_path)
