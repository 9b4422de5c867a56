"""Asyncio AMI client: one per configured server, reconnecting forever.

It wraps the sans-IO parser in an :class:`asyncio.Protocol`: bytes are parsed and applied to
the server's state inside ``data_received``, so intake runs as soon as the loop sees data and
never waits on a scrape, a timer or another coroutine. Per-event work is a few dict updates;
Asterisk logs off any session that stops reading for 100 ms (its ``writetimeout``), so nothing
slow may ever run on this path.

Session life cycle: connect (timeout) -> banner -> ``Login`` (``Events: on``) ->
``ListCommands`` (what this user may call: nothing else is ever sent) -> ``CoreSettings``,
``CoreStatus``, ``CoreShowChannels`` (rebuild the live channel set) -> the optional polls
(:mod:`.polls`) -> ``Ping`` every ``ping_interval``, resync every ``resync_interval`` and the
targeted re-polls the state asks for (at most one a second) until the session dies -> back off
-> again. Only read-only actions are ever sent.
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
from typing import Any

from ami_exporter.ami.errors import AMIConnectionError, AMILoginError, AMISessionLost
from ami_exporter.ami.session import ActionResult, ClientSession, login_failure
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
# What replaces the secret in any text a server sends back (a login error that echoes it).
REDACTED = "<redacted>"
# Targeted re-polls (SIPshowpeer after a PeerStatus change): at most one per this interval.
REFRESH_GAP = 1.0


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


class _AMIProtocol(asyncio.Protocol):
    """Moves received bytes through the sans-IO session into the state, synchronously."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.session = ClientSession(parse=state.parsed_event_names)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        self.waiting: dict[str, asyncio.Future[ActionResult]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        got = self.session.receive(data)
        state = self.state
        if got.banner is not None and not self.banner.done():
            self.banner.set_result(got.banner)
        if got.malformed:
            state.record_malformed(got.malformed)
        if got.messages:
            state.record_received()
        if got.names:
            state.record_events(got.names, got.events)
        for result in got.results:
            future = self.waiting.pop(result.action_id, None)
            if future is not None and not future.done():
                future.set_result(result)

    def eof_received(self) -> bool:
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.receive_eof()  # a trailing partial message is dropped, never half-applied
        if not self.closed.done():
            self.closed.set_result(exc)
        error = AMISessionLost("eof", "connection closed")
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()


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
        self._allowed: polls.Allowed = None  # this session's ListCommands (None: unknown)
        self._stopping = False
        self._log = logging.LoggerAdapter(log, {"server": config.name})
        # Every per-server option, the optional collectors included (--collector.*, YAML keys).
        state.configure(
            peers_include=config.peers_include,
            peers_exclude=config.peers_exclude,
            trunks_include=config.trunks_include,
            trunks_exclude=config.trunks_exclude,
            vicidial=config.vicidial,
            peers=config.peers,
            trunks=config.trunks,
            rtp=config.rtp,
            queues=config.queues,
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
                self.state.record_session_down()
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
        state.peers.wanted.clear()  # re-polls asked for in an earlier session: stale
        try:
            await self._connect()
            await self._login()
        except AMIConnectionError as exc:
            detail = self._redacted(str(exc))
            state.record_connect_error(exc.reason, detail)
            self._log.warning("cannot connect to %s: %s", self.config.address, detail)
            self._close()
            return self._backoff.next_delay()
        except AMILoginError as exc:
            detail = self._redacted(str(exc))
            state.record_login_failure(exc.reason, detail)
            self._log.warning("login as %r failed: %s", self.config.username, detail)
            self._close()
            if exc.reason == "auth":
                return self._auth_backoff.next_delay()
            return self._backoff.next_delay()

        self._backoff.reset()
        self._auth_backoff.reset()
        state.record_session_up()
        self._log.info("logged in to %s", self.config.address)
        try:
            reason, detail = await self._serve()
        finally:
            state.record_session_down()
            self._close()
        if self._stopping:
            return 0.0  # our own Logoff: not a disconnect worth counting
        detail = self._redacted(detail)
        state.record_disconnect(reason, detail)
        self._log.warning("AMI session lost (%s): %s", reason, detail)
        return self._backoff.next_delay()

    def _redacted(self, text: str) -> str:
        """``text`` (a server may have put in it what we sent) without our secret, for the
        state, and so for the status page, and for the logs."""
        secret = self.config.secret
        return text.replace(secret, REDACTED) if secret and secret in text else text

    # ------------------------------------------------------------------ connect and login

    async def _connect(self) -> None:
        cfg = self.config
        self.state.record_connect_attempt()
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
            result = await self._request(
                "Login", timeout=timeout, Username=cfg.username, Secret=cfg.secret, Events="on"
            )
        except TimeoutError:
            raise AMILoginError("timeout", f"no answer to Login within {timeout:g} s") from None
        except AMISessionLost:
            raise AMILoginError("error", "connection closed during Login") from None
        failure = login_failure(result.response)
        if failure is not None:
            message = result.response.get("Message") or "(no message)"
            if failure == "auth":
                message += " (wrong username or secret, or the user's permit/deny ACL)"
            raise AMILoginError("auth" if failure == "auth" else "error", message)

    # ------------------------------------------------------------------ logged in

    async def _serve(self) -> tuple[str, str]:
        protocol = self._protocol
        assert protocol is not None
        wanted = asyncio.Event()
        self.state.peers.on_wanted = wanted.set
        workers = [
            asyncio.create_task(self._initial_sync_then_resync(wanted), name="resync"),
            asyncio.create_task(self._ping_loop(), name="ping"),
        ]
        closed: asyncio.Future[Exception | None] = asyncio.ensure_future(
            asyncio.shield(protocol.closed)
        )
        waited: list[asyncio.Future[Any]] = [closed, *workers]
        try:
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.state.peers.on_wanted = None
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

    async def _initial_sync_then_resync(self, wanted: asyncio.Event) -> None:
        skip: set[str] = set()  # optional actions this session's server lacks
        self._allowed = await polls.learn_commands(
            self._request, timeout=self.config.ping_interval, logger=self._log
        )
        self._skip_core(skip)
        await self._sync_core(skip)
        await self._resync(skip)
        await self._poll_optional(skip)
        refresh = asyncio.create_task(self._refresh_loop(wanted, skip), name="refresh")
        try:
            while True:
                await asyncio.sleep(self.config.resync_interval)
                await self._sync_core(skip)
                await self._resync(skip)
                await self._poll_optional(skip)
        finally:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)

    def _skip_core(self, skip: set[str]) -> None:
        """The core actions ListCommands does not list for this user: never sent."""
        missing = [a for a in polls.CORE_ACTIONS[:3] if not polls.allows(self._allowed, a)]
        if missing:
            skip.update(missing)
            # A misconfiguration that costs the live channel set: a warning at each login.
            self._log.warning(
                "%s not in ListCommands for this user; not sent (grant write = reporting)",
                ", ".join(missing),
            )

    async def _poll_optional(self, skip: set[str]) -> None:
        """Peers, registrations and (opt-in) queues, where this user may ask for them."""
        await polls.poll_optional(
            self._request,
            self.state,
            queues=self.config.queues,
            skip=skip,
            timeout=max(self.config.ping_interval, 30.0),
            logger=self._log,
            allowed=self._allowed,
        )

    async def _refresh_loop(self, wanted: asyncio.Event, skip: set[str]) -> None:
        """Targeted re-polls the state asks for (a chan_sip peer's round trip after a
        PeerStatus change), at most one a REFRESH_GAP: one small answer instead of a whole
        SIPpeers list, and a flapping fleet cannot turn into a flood of actions."""
        while True:
            if not self.state.peers.wanted:  # some may have come with the login's events
                await wanted.wait()
            wanted.clear()
            sent = True
            while sent:
                sent = await polls.refresh_one(
                    self._request,
                    self.state,
                    allowed=self._allowed,
                    skip=skip,
                    timeout=self.config.ping_interval,
                )
                if sent:  # the rate limit itself: a pause, not a wait for anything
                    await asyncio.sleep(REFRESH_GAP)

    async def _sync_core(self, skip: set[str]) -> None:
        timeout = self.config.ping_interval
        status: ActionResult | None = None
        try:
            if "CoreSettings" not in skip:
                settings = await self._request("CoreSettings", timeout=timeout)
                if settings.ok:
                    self.state.apply_core_settings(settings.response)
            if "CoreStatus" not in skip:
                status = await self._request("CoreStatus", timeout=timeout)
        except TimeoutError:
            raise AMISessionLost("ping_timeout", "no answer to CoreSettings/CoreStatus") from None
        if status is None:
            return
        if status.ok:
            self.state.apply_core_status(status.response)
        else:
            why = status.response.get("Message")
            self._log.warning("CoreStatus refused: %s (grant write=system or reporting)", why)

    async def _resync(self, skip: set[str]) -> None:
        if "CoreShowChannels" in skip:
            return
        state = self.state
        state.resync_begin()
        try:
            result = await self._request(
                "CoreShowChannels",
                timeout=max(self.config.ping_interval, 30.0),
                complete_event="CoreShowChannelsComplete",
                list_items=("CoreShowChannel",),
            )
        except TimeoutError:
            raise AMISessionLost("ping_timeout", "no answer to CoreShowChannels") from None
        if not result.ok:
            why = result.response.get("Message")
            self._log.warning("CoreShowChannels refused: %s (grant write=system or reporting)", why)
            state.resync_complete_aborted()
            return
        if result.truncated:
            # A partial snapshot would drop every live channel past the cut: keep the live set.
            self._log.warning(
                "CoreShowChannels listed more than the %d items kept; resync skipped",
                len(result.items),
            )
            state.resync_complete_aborted()
            return
        added, removed = state.resync_complete(result.items)
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
            self.state.record_ping(time.monotonic() - start)
            self.state.tick()  # periodic state upkeep, off the scrape path

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        name: str,
        *,
        timeout: float,
        complete_event: str | None = None,
        list_items: tuple[str, ...] = (),
        **fields: str,
    ) -> ActionResult:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.closed.done():
            raise AMISessionLost("eof", "not connected")
        session = protocol.session
        action_id, data = session.send(
            name, complete_event=complete_event, list_items=list_items, **fields
        )
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        protocol.waiting[action_id] = future
        protocol.transport.write(data)
        try:
            result = await asyncio.wait_for(future, timeout)
        except BaseException as exc:
            if complete_event is not None:
                self._list_incomplete(name, exc)
            raise
        finally:
            if protocol.waiting.pop(action_id, None) is not None:
                # Timed out or cancelled: late answers drop, and so do the items collected.
                session.abandon(action_id)
        if result.truncated:
            self.state.record_list_incomplete(name, "truncated")
        return result

    def _list_incomplete(self, action: str, exc: BaseException) -> None:
        """Count a list answer that never completed: timed out, or its session ended."""
        if isinstance(exc, TimeoutError):
            self.state.record_list_incomplete(action, "timeout")
        elif isinstance(exc, AMISessionLost | asyncio.CancelledError) and not self._stopping:
            self.state.record_list_incomplete(action, "lost")

    @property
    def buffered_bytes(self) -> int:
        """Bytes the session holds while waiting for the end of a message."""
        protocol = self._protocol
        return protocol.session.buffered if protocol is not None else 0

    def _close(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
