"""Asyncio AMI client: one per configured server, reconnecting forever.

It wraps the sans-IO parser in an :class:`asyncio.Protocol`: bytes are parsed and applied to
the server's state inside ``data_received``, so intake runs as soon as the loop sees data and
never waits on a scrape, a timer or another coroutine. Per-event work is a few dict updates;
Asterisk logs off any session that stops reading for 100 ms (its ``writetimeout``), so nothing
slow may ever run on this path.

Session life cycle: connect (timeout) -> banner -> ``Login`` (``Events: on``) -> ``CoreSettings``,
``CoreStatus``, ``CoreShowChannels`` (rebuild the live channel set) -> ``Ping`` every
``ping_interval`` and resync every ``resync_interval`` until the session dies -> back off ->
again. Only read-only actions are ever sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from ami_exporter.ami.errors import AMIConnectionError, AMILoginError, AMISessionLost
from ami_exporter.ami.protocol import AMIParser, Message, action, parse_block, parse_event, serialize
from ami_exporter.client import polls
from ami_exporter.client.tls import client_ssl_context
from ami_exporter.config.model import ServerConfig
from ami_exporter.state.server import ServerState

log = logging.getLogger("ami_exporter.client")

# Reconnect schedule. Ordinary failures: 1 s doubling to 60 s. Authentication failures: 30 s
# doubling to 5 min, because every failed login costs Asterisk a 1 s sleep, a NOTICE and a
# security event, and sites run fail2ban on that log.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
AUTH_BACKOFF_BASE = 30.0
AUTH_BACKOFF_CAP = 300.0
# Jitter stretches each delay by up to this fraction, never shortens it below the schedule.
BACKOFF_JITTER = 0.2
# Asterisk answers a bad login after a deliberate 1 s sleep; leave room for that.
LOGIN_TIMEOUT_MIN = 5.0
LOGOFF_TIMEOUT = 1.0
LIST_EVENT_NAMES = frozenset(
    {b"CoreShowChannel", b"CoreShowChannelsComplete"}
    | {name.encode() for name in polls.LIST_ITEM_NAMES}
)
_LIST_EVENT_STRS = frozenset(name.decode() for name in LIST_EVENT_NAMES)


class Backoff:
    """Exponential backoff with jitter: ``base * 2**n`` capped, stretched by up to 20 %."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        delay: float = min(self.cap, self.base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return min(self.cap, delay * (1.0 + self._rng.uniform(0.0, BACKOFF_JITTER)))

    def reset(self) -> None:
        self.failures = 0


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[Message, list[Message]]]
    complete_event: str | None = None  # list actions end with this event
    response: Message | None = None
    items: list[Message] = field(default_factory=list)


class _AMIProtocol(asyncio.Protocol):
    """Feeds received bytes to the parser and the messages to the state, synchronously."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.parser = AMIParser()
        self.transport: asyncio.Transport | None = None
        self.banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.pending: dict[str, _Pending] = {}
        self._malformed_seen = 0
        # List items of the actions we send are parsed too, so they can be routed.
        self._parsed_names = {
            raw: raw.decode() for raw in state.parsed_event_names | LIST_EVENT_NAMES
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        blocks = parser.feed_frames(data)
        if not self.banner.done() and parser.banner is not None:
            self.banner.set_result(parser.banner)
        state = self.state
        if parser.malformed != self._malformed_seen:
            state.malformed += parser.malformed - self._malformed_seen
            self._malformed_seen = parser.malformed
        if not blocks:
            return
        state.last_event_timestamp = time.time()
        parsed_names = self._parsed_names
        raw_counts = state.raw_event_counts
        for block in blocks:
            # Most events (Newexten, VarSet, Cdr, DeviceStateChange...) feed nothing but
            # their own count: look at the first line only and skip parsing the rest.
            if block.startswith(b"Event: "):
                nl = block.find(b"\n")
                if nl < 0:
                    name = block[7:]
                else:
                    name = block[7 : nl - 1] if block[nl - 1] == 13 else block[7:nl]
                if name not in parsed_names:
                    if name in raw_counts:
                        raw_counts[name] += 1
                    else:
                        state.count_event(name)  # first sighting: bounded insert
                    continue
                if nl > 0:
                    # The handlers read a few fields each: look them up in the raw block.
                    msg: Message | None = parse_event(parsed_names[name], block)
                else:
                    msg = parse_block(block)
            else:
                msg = parse_block(block)
            if msg is None:
                state.malformed += 1
            elif msg.kind == "event":
                state.handle_event(msg)
                if self.pending:
                    self._route_list_item(msg)
            elif msg.kind == "response":
                self._route_response(msg)

    def _route_response(self, msg: Message) -> None:
        action_id = msg.get("ActionID")
        entry = self.pending.get(action_id) if action_id else None
        if entry is None or action_id is None:
            return
        if entry.complete_event is None or (msg.get("Response") or "") != "Success":
            del self.pending[action_id]
            if not entry.future.done():
                entry.future.set_result((msg, []))
        else:
            entry.response = msg

    def _route_list_item(self, msg: Message) -> None:
        if msg.name not in _LIST_EVENT_STRS:
            return  # broadcast events carry no ActionID of ours; don't even look it up
        action_id = msg.get("ActionID")
        if not action_id:
            return
        entry = self.pending.get(action_id)
        if entry is None or entry.complete_event is None or entry.response is None:
            return
        if msg.name == entry.complete_event:
            del self.pending[action_id]
            if not entry.future.done():
                entry.future.set_result((entry.response, entry.items))
        else:
            entry.items.append(msg)

    def eof_received(self) -> bool:
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.parser.feed_eof()  # a trailing partial message is dropped, never half-applied
        if not self.closed.done():
            self.closed.set_result(exc)
        error = AMISessionLost("eof", "connection closed")
        for entry in self.pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)
        self.pending.clear()


class AMIClient:
    """Keeps one AMI session to one server alive and its :class:`ServerState` current."""

    def __init__(
        self,
        config: ServerConfig,
        state: ServerState,
        *,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backoff_scale: float = 1.0,
    ) -> None:
        self.config = config
        self.state = state
        self._rng = rng or random.Random()
        # Without an explicit context, one is built from the config (`tls: true`).
        self._ssl = ssl_context if ssl_context is not None else client_ssl_context(config)
        # Multiplies every reconnect delay actually slept (never the schedule itself): a test
        # compresses minutes of backoff into a fraction of a second with real sockets and the
        # real loop, instead of patching asyncio.sleep for every task in the process.
        self.backoff_scale = backoff_scale
        self._backoff = Backoff(BACKOFF_BASE, BACKOFF_CAP, self._rng)
        self._auth_backoff = Backoff(AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, self._rng)
        self._ids = itertools.count(1)
        self._protocol: _AMIProtocol | None = None
        self._stopping = False
        self._log = logging.LoggerAdapter(log, {"server": config.name})
        state.configure(
            peers_include=config.peers_include,
            peers_exclude=config.peers_exclude,
            vicidial=config.vicidial,
        )

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Connect, serve, back off, repeat, until :meth:`stop` or cancellation."""
        while not self._stopping:
            try:
                delay = await self._one_session()
            except Exception:
                # A bug must cost one session, never the server's monitoring for good.
                self._log.exception("unexpected error in the AMI session; reconnecting")
                self.state.set_up(False)
                self._close()
                delay = self._backoff.next_delay()
            if self._stopping:
                break
            self._log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay * self.backoff_scale)

    async def stop(self) -> None:
        """Log off politely (bounded in time) and close the socket."""
        self._stopping = True
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.closed.done():
            return
        if self.state.up:
            with contextlib.suppress(AMISessionLost, TimeoutError, OSError):
                await self._request("Logoff", timeout=LOGOFF_TIMEOUT)
        if protocol.transport is not None:
            protocol.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed), LOGOFF_TIMEOUT)
        except TimeoutError:
            protocol.transport.abort()

    async def _one_session(self) -> float:
        """Run one connection from connect to loss; return the delay before the next try."""
        state = self.state
        try:
            await self._connect()
            await self._login()
        except AMIConnectionError as exc:
            state.connection_errors[exc.reason] = state.connection_errors.get(exc.reason, 0) + 1
            state.last_error = f"connection {exc.reason}: {exc}"
            self._log.warning("cannot connect to %s: %s", self.config.address, exc)
            self._close()
            return self._backoff.next_delay()
        except AMILoginError as exc:
            state.login_failures[exc.reason] = state.login_failures.get(exc.reason, 0) + 1
            state.last_error = f"login {exc.reason}: {exc}"
            self._log.warning("login as %r failed: %s", self.config.username, exc)
            self._close()
            if exc.reason == "auth":
                return self._auth_backoff.next_delay()
            return self._backoff.next_delay()

        self._backoff.reset()
        self._auth_backoff.reset()
        state.set_up(True)
        state.last_error = ""
        self._log.info("logged in to %s", self.config.address)
        try:
            reason, detail = await self._serve()
        finally:
            state.set_up(False)
            self._close()
        if self._stopping:
            return 0.0  # our own Logoff: not a disconnect worth counting
        state.disconnects[reason] = state.disconnects.get(reason, 0) + 1
        state.last_error = f"disconnected ({reason}): {detail}"
        self._log.warning("AMI session lost (%s): %s", reason, detail)
        return self._backoff.next_delay()

    # ------------------------------------------------------------------ connect and login

    async def _connect(self) -> None:
        cfg = self.config
        self.state.connection_attempts += 1
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _AMIProtocol(self.state),
                    cfg.host,
                    cfg.port,
                    ssl=self._ssl,
                    server_hostname=(cfg.tls_server_name or cfg.host) if self._ssl else None,
                ),
                cfg.connect_timeout,
            )
        except TimeoutError:
            raise AMIConnectionError(
                "timeout", f"no TCP connection within {cfg.connect_timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            why = getattr(exc, "verify_message", None) or exc.reason or exc
            raise AMIConnectionError("tls", f"TLS handshake failed: {why}") from None
        except ConnectionRefusedError:
            raise AMIConnectionError(
                "refused", "connection refused (AMI disabled, wrong port or bindaddr?)"
            ) from None
        except socket.gaierror as exc:
            raise AMIConnectionError(
                "unreachable", f"cannot resolve {cfg.host!r}: {exc.strerror}"
            ) from None
        except OSError as exc:
            unreachable = {
                errno.EHOSTUNREACH,
                errno.ENETUNREACH,
                errno.EHOSTDOWN,
                errno.EADDRNOTAVAIL,
            }
            reason = "unreachable" if exc.errno in unreachable else "other"
            raise AMIConnectionError(reason, exc.strerror or str(exc)) from None
        self._protocol = protocol
        try:
            banner = await asyncio.wait_for(asyncio.shield(protocol.banner), cfg.connect_timeout)
        except TimeoutError:
            raise AMIConnectionError(
                "timeout", f"connected but no AMI banner within {cfg.connect_timeout:g} s"
            ) from None
        if not banner.startswith("Asterisk Call Manager/"):
            shown = banner[:60].encode("ascii", "backslashreplace").decode("ascii")
            raise AMIConnectionError("other", f"not an AMI port: banner {shown!r}")
        self.state.apply_banner(banner)

    async def _login(self) -> None:
        cfg = self.config
        timeout = max(cfg.connect_timeout, LOGIN_TIMEOUT_MIN)
        try:
            response, _ = await self._request(
                "Login", timeout=timeout, Username=cfg.username, Secret=cfg.secret, Events="on"
            )
        except TimeoutError:
            raise AMILoginError("timeout", f"no answer to Login within {timeout:g} s") from None
        except AMISessionLost:
            raise AMILoginError("error", "connection closed during Login") from None
        if (response.get("Response") or "").lower() != "success":
            message = response.get("Message") or "(no message)"
            reason = "auth" if message.strip().lower() == "authentication failed" else "error"
            if reason == "auth":
                message += " (wrong username or secret, or the user's permit/deny ACL)"
            raise AMILoginError(reason, message)

    # ------------------------------------------------------------------ logged in

    async def _serve(self) -> tuple[str, str]:
        protocol = self._protocol
        assert protocol is not None
        workers = [
            asyncio.create_task(self._initial_sync_then_resync(), name="resync"),
            asyncio.create_task(self._ping_loop(), name="ping"),
        ]
        closed: asyncio.Future[Exception | None] = asyncio.ensure_future(
            asyncio.shield(protocol.closed)
        )
        waited: list[asyncio.Future[Any]] = [closed, *workers]
        try:
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            closed.cancel()
        for task in workers:
            if task in done and not task.cancelled():
                exc = task.exception()
                if isinstance(exc, AMISessionLost) and exc.reason != "eof":
                    return exc.reason, str(exc)
        if self.state.shutdown_seen:
            return "shutdown", "Asterisk announced Shutdown"
        if protocol.closed.done():
            exc = protocol.closed.result()
            if exc is not None:
                return "error", str(exc) or type(exc).__name__
            return "eof", "connection closed by Asterisk"
        for task in workers:
            if task in done and not task.cancelled() and task.exception() is not None:
                return "error", repr(task.exception())
        return "error", "session ended"

    async def _initial_sync_then_resync(self) -> None:
        skip: set[str] = set()  # optional actions this session's server lacks
        await self._sync_core()
        await self._resync()
        await self._poll_optional(skip)
        while True:
            await asyncio.sleep(self.config.resync_interval)
            await self._sync_core()
            await self._resync()
            await self._poll_optional(skip)

    async def _poll_optional(self, skip: set[str]) -> None:
        """Peers, registrations and (opt-in) queues, where the server has the modules."""
        await polls.poll_optional(
            self._request,
            self.state,
            queues=self.config.queues,
            skip=skip,
            timeout=max(self.config.ping_interval, 30.0),
            logger=self._log,
        )

    async def _sync_core(self) -> None:
        timeout = self.config.ping_interval
        try:
            settings, _ = await self._request("CoreSettings", timeout=timeout)
            if settings.get("Response") == "Success":
                self.state.apply_core_settings(settings)
            status, _ = await self._request("CoreStatus", timeout=timeout)
            if status.get("Response") == "Success":
                self.state.apply_core_status(status)
            else:
                self._log.warning("CoreStatus refused: %s (grant write=system or reporting)",
                                  status.get("Message"))  # fmt: skip
        except TimeoutError:
            raise AMISessionLost("ping_timeout", "no answer to CoreSettings/CoreStatus") from None

    async def _resync(self) -> None:
        state = self.state
        state.resync_begin()
        try:
            response, items = await self._request(
                "CoreShowChannels",
                timeout=max(self.config.ping_interval, 30.0),
                complete_event="CoreShowChannelsComplete",
            )
        except TimeoutError:
            raise AMISessionLost("ping_timeout", "no answer to CoreShowChannels") from None
        if (response.get("Response") or "").lower() != "success":
            self._log.warning("CoreShowChannels refused: %s (grant write=system or reporting)",
                              response.get("Message"))  # fmt: skip
            state.resync_complete_aborted()
            return
        added, removed = state.resync_complete(items)
        if added or removed:
            self._log.info("resync: %d channels added, %d removed", added, removed)

    async def _ping_loop(self) -> None:
        interval = self.config.ping_interval
        while True:
            await asyncio.sleep(interval)
            start = time.monotonic()
            try:
                await self._request("Ping", timeout=interval)
            except TimeoutError:
                raise AMISessionLost("ping_timeout", f"no Pong within {interval:g} s") from None
            self.state.ping_rtt = time.monotonic() - start

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self, name: str, *, timeout: float, complete_event: str | None = None, **fields: str
    ) -> tuple[Message, list[Message]]:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.closed.done():
            raise AMISessionLost("eof", "not connected")
        action_id = f"amiexp-{next(self._ids)}"
        future: asyncio.Future[tuple[Message, list[Message]]] = (
            asyncio.get_running_loop().create_future()
        )
        protocol.pending[action_id] = _Pending(future, complete_event)
        protocol.transport.write(serialize(action(name, action_id, **fields)))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            protocol.pending.pop(action_id, None)

    def _close(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
