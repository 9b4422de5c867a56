"""The exporter proper, and the composition root: states, AMI clients, registry, web server.

Runs until SIGTERM or SIGINT, then logs off every server within :data:`SHUTDOWN_BUDGET`;
SIGHUP reloads the configuration files meanwhile (:mod:`ami_exporter.cli.reload`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Final

from ami_exporter.cli.demo import demo_server
from ami_exporter.cli.fleet import Fleet
from ami_exporter.cli.reload import Reloader, ReloadSource, Signals
from ami_exporter.config.model import ExporterConfig, ServerConfig
from ami_exporter.metrics.collector import build_registry
from ami_exporter.metrics.reload import ReloadStatus
from ami_exporter.web.history import History
from ami_exporter.web.security import WebSecurity
from ami_exporter.web.server import HTTPLimits, WebServer
from ami_exporter.web.tlsreload import ReloadableSSLContext

log = logging.getLogger("ami_exporter")

# Leave time for Logoff and closing within the 2 s an orchestrator usually grants.
SHUTDOWN_BUDGET: Final = 1.0
EXIT_OK: Final = 0
EXIT_CANNOT_LISTEN: Final = 1


async def serve(
    config: ExporterConfig,
    web_security: WebSecurity | None = None,
    *,
    demo: bool = False,
    reload: ReloadSource | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code.

    ``reload``: how SIGHUP re-reads the configuration (None: SIGHUP has nothing to reload).
    """
    security = web_security if web_security is not None else WebSecurity()
    if not demo:
        if config.shard is not None:
            log.info(
                "shard %s: watching %d servers of --config.file: %s",
                config.shard,
                len(config.servers),
                ", ".join(s.name for s in config.servers) or "none",
            )
        return await _serve(config, config.servers, security, reload)
    async with demo_server() as server:
        # The --collector.* flags apply to the demo's server as to any other.
        collectors: dict[str, Any] = dict(config.collectors)
        server = dataclasses.replace(server, **collectors)
        return await _serve(config, [server], security, None)


async def _serve(
    config: ExporterConfig,
    servers: Sequence[ServerConfig],
    security: WebSecurity,
    reload: ReloadSource | None,
) -> int:
    signals = Signals()  # from the start: a SIGHUP meanwhile waits, it does not kill
    fleet = Fleet()  # fleet.states: one live list for the registry, the web server, history
    status = ReloadStatus()
    history = History(fleet.states)  # status page sparklines; sampled off the event path
    # A context a reload can replace: renewed certificates without closing the listener.
    tls = ReloadableSSLContext(security.ssl_context) if security.ssl_context is not None else None
    web = WebServer(
        build_registry(fleet.states, status),
        fleet.states,
        host=config.listen_host,
        port=config.listen_port,
        addresses=config.addresses,
        telemetry_path=config.telemetry_path,
        ssl_context=tls,
        basic_auth=security.basic_auth,
        history=history,
        limits=HTTPLimits(max_connections=config.max_connections),
    )
    if config.shard is not None:
        web.landing_facts = (
            f"Shard {config.shard} (--config.shard): {len(servers)} servers of --config.file",
        )
    if not await _listen(web, config, security):
        return EXIT_CANNOT_LISTEN
    fleet.start(servers)
    sampler = asyncio.create_task(history.run(), name="history")
    reloader = Reloader(reload, config, fleet, web, tls, status, budget=SHUTDOWN_BUDGET)
    if config.enable_lifecycle:
        web.reload = reloader.reload  # POST /-/reload: the same as SIGHUP
    await reloader.run(signals)
    log.info("shutting down")
    await fleet.stop(SHUTDOWN_BUDGET)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    await web.stop()
    return EXIT_OK


async def _listen(web: WebServer, config: ExporterConfig, security: WebSecurity) -> bool:
    """Start the web server and log where; False (logged) when the address cannot be bound."""
    try:
        await web.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror or exc)  # it names the address
        return False
    scheme = "https" if security.ssl_context is not None else "http"
    for (host, _), port in zip(web.addresses, web.ports, strict=True):
        where = f"[{host}]" if ":" in host else host or "0.0.0.0"  # what ":PORT" means
        log.info("listening on %s://%s:%d%s", scheme, where, port, config.telemetry_path)
    return True
