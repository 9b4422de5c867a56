"""SIGHUP and ``POST /-/reload``: re-read the configuration files and apply them without a
restart, as Prometheus does.

``POST /-/reload`` (or PUT) is served with ``--web.enable-lifecycle``; it runs the same reload
as SIGHUP (:meth:`Reloader.reload`, one at a time) and answers its outcome: 200, or 500 with
the one-line reason the old configuration stays.

What a reload re-reads, with the flags and the environment of the start (flags are never
reloaded: the listen address, the telemetry path, the log level and format, ``--ami.*`` and
``$AMI_SECRET`` stay as they were):

* ``--config.file``: the servers, and each ``secret_file`` it names; servers are added,
  removed or restarted without touching the others (:mod:`ami_exporter.cli.fleet`);
* ``--ami.secret-file``: the secret of the one server the flags describe, or the default one;
* ``--web.config.file``: ``basic_auth_users`` apply to the next request, and
  ``tls_server_config`` (certificate, key, client CA, versions) to the next connection
  (:mod:`ami_exporter.web.tlsreload`). Turning TLS on or off needs a restart: such a file is
  rejected.

Everything is read and checked, off the event loop, before anything changes, exactly as at
start; a file that is unreadable or invalid rejects the whole reload: the old configuration
keeps running, the one-line ``file:line`` error is logged at error level and
``ami_exporter_config_last_reload_successful`` drops to 0 until a reload succeeds. With none of
these files (single server from flags and ``$AMI_SECRET``, or ``--demo``), SIGHUP only logs
that there is nothing to reload. SIGTERM and SIGINT stop the exporter, during a reload too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from ami_exporter.cli.fleet import Fleet
from ami_exporter.cli.logsetup import setup_logging
from ami_exporter.cli.prepare import Prepared, prepare
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.model import ExporterConfig
from ami_exporter.config.web import WebConfig
from ami_exporter.metrics.reload import ReloadStatus
from ami_exporter.web.server import WebServer
from ami_exporter.web.tlsreload import ReloadableSSLContext

__all__ = ["ReloadSource", "Reloader", "Signal", "Signals"]

log = logging.getLogger("ami_exporter")

# Reading the files (and checking bcrypt hashes, ~0.3 s each at cost 12) runs in a thread;
# past this, the reload fails rather than wait on a file that never ends.
LOAD_TIMEOUT: Final = 60.0
# The flags that name a file a reload re-reads.
RELOADED_FLAGS: Final = (
    ("config_file", "--config.file"),
    ("ami_secret_file", "--ami.secret-file"),
    ("web_config_file", "--web.config.file"),
)

T = TypeVar("T")


class Signal(enum.Enum):
    STOP = "stop"
    RELOAD = "reload"


class Signals:
    """SIGTERM and SIGINT ask to stop, SIGHUP to reload (several SIGHUPs meanwhile: once)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)

    async def next(self) -> Signal:
        """The next request; a stop wins over a reload that is pending too."""
        if not self.stop.is_set() and not self.reload.is_set():
            await _first(self.stop.wait(), self.reload.wait())
        if self.stop.is_set():
            return Signal.STOP
        self.reload.clear()
        return Signal.RELOAD


@dataclass(frozen=True)
class ReloadSource:
    """How the configuration was made at start, to make it again: the flags, the environment."""

    args: argparse.Namespace
    env: Mapping[str, str]

    @property
    def files(self) -> list[str]:
        """``--flag FILE`` for each file a reload would re-read."""
        named = ((flag, getattr(self.args, dest, None)) for dest, flag in RELOADED_FLAGS)
        return [f"{flag} {path}" for flag, path in named if path]

    def load(self) -> Prepared:
        """The configuration as :func:`~ami_exporter.cli.prepare.prepare` makes it at start."""
        return prepare(self.args, dict(self.env), warn=log.warning)

    def mask(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` in every log line from now on (as at start)."""
        setup_logging(self.args.log_level, self.args.log_format, secrets)


class Reloader:
    """Applies a re-read configuration to the running exporter, or keeps the old one."""

    def __init__(
        self,
        source: ReloadSource | None,
        config: ExporterConfig,
        fleet: Fleet,
        web: WebServer,
        tls: ReloadableSSLContext | None,
        status: ReloadStatus,
        *,
        budget: float,
    ) -> None:
        self.source = source if source is not None and source.files else None
        self.fleet = fleet
        self.web = web
        self.tls = tls
        self.status = status
        self.budget = budget  # for the removed and restarted servers' Logoff
        self._secrets = {s.secret for s in config.servers}
        self._users = _users(config.web)
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()  # SIGTERM/SIGINT, once run() has the signals

    async def run(self, signals: Signals) -> None:
        """Reload at each SIGHUP; return at SIGTERM or SIGINT, even in the middle of reading."""
        self._stop = signals.stop
        while await signals.next() is Signal.RELOAD:
            await self.reload("SIGHUP")

    async def reload(self, origin: str = "POST /-/reload") -> str | None:
        """Re-read and apply the configuration, as SIGHUP does: None when done (or nothing to
        reload), else the one-line reason the old configuration stays (logged, counted).

        One reload at a time: a SIGHUP and ``POST /-/reload`` meanwhile wait their turn.
        """
        async with self._lock:
            if self.source is None:
                log.info(
                    "%s: nothing to reload "
                    "(no --config.file, --web.config.file or --ami.secret-file)",
                    origin,
                )
                return None
            log.info("%s: reloading %s", origin, ", ".join(self.source.files))
            prepared = await _first(self._load(self.source), self._stop.wait())
            if not isinstance(prepared, Prepared):
                return prepared if isinstance(prepared, str) else "the exporter is stopping"
            try:
                await self._apply(self.source, prepared)
            except ConfigError as exc:  # a CA file changed since it was read: nothing changed
                return self._failed(str(exc))
            except Exception as exc:  # a bug must cost this reload, never the running exporter
                log.exception("reload failed while applying the new configuration")
                self.status.failed()
                return f"applying the new configuration failed: {type(exc).__name__}"
            return None

    def _failed(self, reason: str) -> str:
        log.error("reload failed, the previous configuration stays: %s", reason)
        self.status.failed()
        return reason

    async def _load(self, source: ReloadSource) -> Prepared | str:
        """The new configuration, checked; else why it cannot be used (logged, counted)."""
        try:
            prepared = await asyncio.wait_for(_in_thread(source.load), LOAD_TIMEOUT)
            self._check(prepared)
        except ConfigError as exc:
            return self._failed(str(exc))
        except TimeoutError:
            return self._failed(f"reading it took over {LOAD_TIMEOUT:.0f} s")
        except Exception as exc:  # a bug must cost this reload, never the running exporter
            log.exception("reload failed, the previous configuration stays")
            self.status.failed()
            return f"reading the configuration failed: {type(exc).__name__}"
        return prepared

    def _check(self, prepared: Prepared) -> None:
        """Refuse what the running listener cannot take: TLS turned on or off."""
        if (prepared.web.ssl_context is not None) != (self.tls is not None):
            web = prepared.config.web
            where = web.path if web is not None else "--web.config.file"
            turned = "off" if self.tls is not None else "on"
            raise ConfigError(f"{where}: turning TLS {turned} takes a restart")

    async def _apply(self, source: ReloadSource, prepared: Prepared) -> None:
        secrets = {s.secret for s in prepared.config.servers}
        if secrets - self._secrets:
            # Old and new: a server logging off may still hold its old secret.
            source.mask(self._secrets | secrets)
        changes = await self.fleet.apply(prepared.config.servers, self.budget)
        self._secrets = secrets
        if self.tls is not None and prepared.web.ssl_context is not None:
            self.tls.current = prepared.web.ssl_context  # for the connections accepted next
        users = _users(prepared.config.web)
        if users != self._users:  # else keep the checker, and the passwords it has verified
            self.web.basic_auth = prepared.web.basic_auth  # for the next request
            self._users = users
        self.status.succeeded(time.time())
        log.info("configuration reloaded; servers: %s", changes)


def _users(web: WebConfig | None) -> tuple[tuple[str, bytes], ...]:
    return tuple((u.name, u.bcrypt_hash) for u in web.users) if web is not None else ()


async def _first(*aws: Awaitable[object]) -> object:
    """The result of whichever of ``aws`` finishes first; the others are cancelled."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return next(iter(done)).result()


async def _in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread: the loop keeps running meanwhile, and a read that never
    ends (a FIFO, a hung network mount) can neither stall it nor hold up the exit, as a
    thread of the default executor would (``asyncio.run`` joins those)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # given up on (timeout, stop)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(), None)
        except Exception as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="config-reload", daemon=True).start()
    return await future
