"""The HTTP side: ``/metrics``, a landing page, ``/-/healthy`` and ``/-/ready``.

A small HTTP/1.1 server on asyncio streams, in the same loop as the AMI clients. A scrape only
walks small aggregate dicts (see :mod:`ami_exporter.metrics.collector`), so it holds the loop
for about a millisecond; the kernel's socket buffers absorb AMI traffic meanwhile. Content
negotiation (Prometheus text or OpenMetrics) is prometheus_client's own ``choose_encoder``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
from collections.abc import Sequence
from http import HTTPStatus

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History
from ami_exporter.web.statuspage import render_status_page
from ami_exporter.web.webconfig import BasicAuth

log = logging.getLogger("ami_exporter.web")

MAX_REQUEST_HEAD = 16 * 1024
IDLE_TIMEOUT = 30.0


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
        self.states = list(states)
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
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._respond(writer, HTTPStatus.BAD_REQUEST, b"bad request\n")
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if method not in ("GET", "HEAD") or has_body:
            # Nothing here takes a request body; close rather than parse one, so a body can
            # never be mistaken for the next request on a kept-alive connection.
            await self._respond(writer, HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n",
                                extra={"Allow": "GET, HEAD"})  # fmt: skip
            return False
        if self.basic_auth is not None and not await self.basic_auth.authorize(
            headers.get("authorization")
        ):
            await self._respond(writer, HTTPStatus.UNAUTHORIZED, b"Unauthorized\n",
                                extra={"WWW-Authenticate": 'Basic realm="ami-exporter"'},
                                keep_alive=keep_alive, head_only=method == "HEAD")  # fmt: skip
            return keep_alive
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == self.telemetry_path:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            body = encoder(self.registry)
            extra = {}
            if "gzip" in headers.get("accept-encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            await self._respond(writer, HTTPStatus.OK, body, content_type, extra=extra,
                                keep_alive=keep_alive, head_only=head_only)  # fmt: skip
        elif path == "/":
            await self._respond(writer, HTTPStatus.OK, self._landing_page(),
                                "text/html; charset=utf-8", keep_alive=keep_alive,
                                head_only=head_only)  # fmt: skip
        elif path == "/-/healthy":
            await self._respond(writer, HTTPStatus.OK, b"Healthy\n", keep_alive=keep_alive,
                                head_only=head_only)  # fmt: skip
        elif path == "/-/ready":
            waiting = [s.name for s in self.states if not s.ever_logged_in]
            if waiting:
                body = ("Not ready: never logged in to " + ", ".join(waiting) + "\n").encode()
                await self._respond(writer, HTTPStatus.SERVICE_UNAVAILABLE, body,
                                    keep_alive=keep_alive, head_only=head_only)  # fmt: skip
            else:
                await self._respond(writer, HTTPStatus.OK, b"Ready\n", keep_alive=keep_alive,
                                    head_only=head_only)  # fmt: skip
        else:
            await self._respond(writer, HTTPStatus.NOT_FOUND, b"not found\n",
                                keep_alive=keep_alive, head_only=head_only)  # fmt: skip
        return keep_alive

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
