"""The HTTP side: ``/metrics``, a landing page, ``/-/healthy``, ``/-/ready`` and ``/-/reload``.

An HTTP/1.1 server in the same asyncio loop as the AMI clients: :mod:`ami_exporter.web.listener`
accepts under ``--web.max-connections``, :mod:`ami_exporter.web.http` speaks HTTP through h11
with per-connection time and memory bounds, and this module routes. A scrape is encoded by
:mod:`ami_exporter.metrics.exposition` off the loop (big) or in 2 ms slices on it (small), so
even a 90k-series scrape never holds the AMI readers up; the kernel's socket buffers absorb
AMI traffic meanwhile. ``collect[]``/``name[]`` select what a scrape holds.
Content negotiation (Prometheus text or OpenMetrics) is prometheus_client's.

Every ``--web.listen-address`` is served by this one server (one listener over all their
sockets, one connection cap). ``/-/reload`` answers as Prometheus's does: 405 to GET and HEAD,
403 to POST and PUT unless ``--web.enable-lifecycle``, then the reload's outcome (200 with an
empty body, or 500 ``failed to reload config: ...``); behind the same basic auth as every path.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from ami_exporter.metrics.exposition import (
    CollectorRegistry,
    Exposition,
    Selection,
    UnknownCollectorError,
    in_scrape_thread,
    negotiate,
    parse_selection,
)
from ami_exporter.state.server import ServerState
from ami_exporter.web.auth import BasicAuth
from ami_exporter.web.history import History
from ami_exporter.web.http import HTTPConnection, HTTPLimits, Request, Response, accepts_gzip
from ami_exporter.web.listener import (
    FD_RESERVE,
    Listener,
    Slot,
    bind,
    fit_to_open_file_limit,
)
from ami_exporter.web.statuspage import Landing, render_status_page

__all__ = ["HTTPLimits", "WebServer"]

log = logging.getLogger("ami_exporter.web")

TLS_SHUTDOWN_TIMEOUT: Final = 5.0
# Scrapes of the same kind (same Accept, gzip or not, same collect[]/name[] selection) share
# one encoding: any that arrives while one is being encoded waits for it, as do those
# handled in the same turn of the event loop after it is done (a burst: the same instant,
# for all they can tell), and any that arrives while an answer at most SHARE_WINDOW old is
# still being sent (clients that never read theirs). A flood of them costs one encoding and
# one body, not one each; a scrape after the previous answer went out always gets a fresh one.
SHARE_WINDOW: Final = 1.0
METRICS_VARY: Final = ("Vary", "Accept, Accept-Encoding")
RELOAD_PATH: Final = "/-/reload"
# POST /-/reload: the reload, then None (done) or the one-line reason it was refused.
Reload = Callable[[], Awaitable[str | None]]
_Key = tuple[str, bool, object]


@dataclass(slots=True)
class _Encoded:
    body: asyncio.Future[tuple[bytes, str]]
    gzipped: bool
    at: float  # when the encoding finished (inf while it runs)
    senders: int = 0


class _Scrapes:
    """Encoded scrape bodies being made or sent, shared by the scrapes of the same kind.

    The registry is encoded by :class:`~ami_exporter.metrics.exposition.Exposition`: a big
    scrape in its scrape thread, a small one on the loop in slices of about 2 ms, so a scrape
    of any size never stalls the AMI readers; gzip runs in the scrape thread too (zlib
    releases the GIL).
    """

    def __init__(self, registry: CollectorRegistry, window: float = SHARE_WINDOW) -> None:
        self.registry = registry
        self.exposition = Exposition(registry)
        self.window = window
        self._sending: dict[_Key, _Encoded] = {}
        self.encodings = 0  # how many times the registry was encoded (tests, debugging)

    async def response(self, accept: str, gzipped: bool, query: str = "") -> Response:
        try:
            selection = parse_selection(query, self.exposition.collector_names())
        except UnknownCollectorError as exc:
            return Response(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode())
        key = (accept, gzipped, selection.key)
        now = time.monotonic()
        shared = self._sending.get(key)
        if shared is None or now - shared.at > self.window:
            loop = asyncio.get_running_loop()
            shared = self._sending[key] = _Encoded(loop.create_future(), gzipped, math.inf)
            shared.senders += 1  # held until the loop's turn after the encoding is done
            task = loop.create_task(self._encode(key, shared, accept, selection))
            task.add_done_callback(_consume)
        shared.senders += 1
        try:
            body, content_type = await asyncio.shield(shared.body)
        except BaseException:
            self._release(key, shared)
            raise
        headers = [METRICS_VARY]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(
            HTTPStatus.OK, body, content_type, headers, sent=lambda: self._release(key, shared)
        )

    async def _encode(self, key: _Key, entry: _Encoded, accept: str, selection: Selection) -> None:
        try:
            fmt = negotiate(accept)
            body = await self.exposition.encode_async(fmt, selection)
            self.encodings += 1
            if entry.gzipped:
                body = await in_scrape_thread(gzip.compress, body, 1)
            entry.body.set_result((body, fmt.content_type))
        except BaseException as exc:
            entry.body.set_exception(exc)
            raise
        finally:
            entry.at = time.monotonic()
            # Held until the loop's next turn, for the scrapes handled in this one.
            asyncio.get_running_loop().call_soon(self._release, key, entry)

    def _release(self, key: _Key, entry: _Encoded) -> None:
        entry.senders -= 1
        if entry.senders == 0 and self._sending.get(key) is entry:
            del self._sending[key]


def _consume(task: asyncio.Task[None]) -> None:
    # The exception went to every waiting scrape through the future (they answer 500).
    if not task.cancelled():
        task.exception()


class WebServer:
    def __init__(  # noqa: PLR0913 - keyword-only options, each with a default
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
        limits: HTTPLimits | None = None,
        addresses: Sequence[tuple[str, int]] = (),
        reload: Reload | None = None,
    ) -> None:
        """``addresses``: every ``(host, port)`` to listen on (default: ``host``, ``port``);
        ``reload``: what ``POST /-/reload`` runs (None: the lifecycle API is disabled)."""
        self.registry = registry
        self.basic_auth = basic_auth  # --web.config.file basic_auth_users: every path
        self.states = states  # kept, not copied: a reload replaces the servers in place
        self.history = history  # for the status page's sparklines; optional
        self.host = host
        self.port = port  # the first address's (the one bound, once started with port 0)
        self.addresses = list(addresses) or [(host, port)]
        self.ports: list[int] = []  # each address's bound port, once started
        self.reload = reload
        self.landing_facts: tuple[str, ...] = ()  # shown at the top of the status page
        self.telemetry_path = telemetry_path
        self.limits = limits if limits is not None else HTTPLimits()
        self.scrapes = _Scrapes(registry)
        self._ssl = ssl_context
        self._listener: Listener | None = None

    @property
    def connections(self) -> int:
        """HTTP connections open now (accepted, handshaking included)."""
        return self._listener.connections if self._listener is not None else 0

    async def start(self) -> None:
        # An empty host means every interface, as with Go exporters' ":9815".
        sockets: list[socket.socket] = []
        try:
            for host, port in self.addresses:
                try:
                    bound = await bind(host, port)
                except socket.gaierror as exc:  # bind() names the address in its own errors
                    raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
                sockets += bound
                self.ports.append(bound[0].getsockname()[1])
        except BaseException:
            for sock in sockets:
                sock.close()
            self.ports.clear()
            raise
        cap = fit_to_open_file_limit(self.limits.max_connections, FD_RESERVE + len(self.states))
        self._listener = Listener(sockets, self._connection, cap)
        self._listener.start()
        self.port = self.ports[0]

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    async def _connection(self, sock: socket.socket, slot: Slot) -> None:
        """One accepted socket: the TLS handshake (bounded), then HTTP until it closes."""
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self._ssl is not None:
            tls = {
                "ssl": self._ssl,
                "ssl_handshake_timeout": self.limits.tls_handshake_timeout,
                "ssl_shutdown_timeout": TLS_SHUTDOWN_TIMEOUT,
            }
        try:
            _, conn = await loop.connect_accepted_socket(
                lambda: HTTPConnection(self.limits), sock, **tls
            )
        except (OSError, ssl.SSLError, TimeoutError):
            sock.close()  # a failed or timed-out handshake; asyncio closed its transport
            return
        except asyncio.CancelledError:
            sock.close()  # made room for another, or shutting down, during the handshake
            raise
        slot.evict = conn.evict
        await conn.serve(self._respond, slot.set_idle)

    async def _respond(self, request: Request) -> Response:
        lifecycle = request.path == RELOAD_PATH
        if not lifecycle and (request.method not in ("GET", "HEAD") or request.has_body):
            # Nothing here takes a request body; the connection closes rather than parse one,
            # so a body can never be mistaken for the next request.
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                headers=[("Allow", "GET, HEAD")],
                close=True,
            )
        if self.basic_auth is not None:
            # 401, or 429/503 with Retry-After when the bcrypt queue is full (web/auth.py).
            decision = await self.basic_auth.check(
                request.headers.get("authorization"), request.peer
            )
            if not decision.ok:
                return Response(decision.status, decision.body, headers=[*decision.headers.items()])
        if lifecycle:
            return await self._lifecycle(request)
        if request.path == self.telemetry_path:
            return await self.scrapes.response(
                request.headers.get("accept", ""),
                accepts_gzip(request.headers.get("accept-encoding", "")),
                request.query,
            )
        return self._route(request)

    async def _lifecycle(self, request: Request) -> Response:
        """``/-/reload`` as Prometheus answers it (its status codes and texts)."""
        if request.method not in ("POST", "PUT"):
            text = (
                b"Only POST or PUT requests allowed"
                if request.method in ("GET", "HEAD")
                else b"Method Not Allowed"
            )
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, text, headers=[("Allow", "POST, PUT")])
        if self.reload is None:
            return Response(HTTPStatus.FORBIDDEN, b"Lifecycle API is not enabled.")
        error = await self.reload()
        if error is not None:
            body = f"failed to reload config: {error}\n".encode()
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, body)
        return Response(HTTPStatus.OK)

    def _route(self, request: Request) -> Response:
        path = request.path
        if path == "/":
            return Response(HTTPStatus.OK, self._landing_page(), "text/html; charset=utf-8")
        if path == "/-/healthy":
            return Response(HTTPStatus.OK, b"Healthy\n")
        if path == "/-/ready":
            waiting = [s.name for s in self.states if not s.ever_logged_in]
            if waiting:
                body = ("Not ready: never logged in to " + ", ".join(waiting) + "\n").encode()
                return Response(HTTPStatus.SERVICE_UNAVAILABLE, body)
            return Response(HTTPStatus.OK, b"Ready\n")
        return Response(HTTPStatus.NOT_FOUND, b"not found\n")

    def _landing_page(self) -> bytes:
        # The status page (see ami_exporter.statuspage): self-contained HTML, no caller data.
        landing = Landing(lifecycle=self.reload is not None, facts=self.landing_facts)
        return render_status_page(
            self.states, self.history, telemetry_path=self.telemetry_path, landing=landing
        )
