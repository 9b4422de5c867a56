"""The exporter proper, and the composition root: states, AMI clients, registry, web server.

Runs until SIGTERM or SIGINT, then logs off every server within :data:`SHUTDOWN_BUDGET`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Final

from ami_exporter.cli.demo import demo_server
from ami_exporter.client.connection import AMIClient
from ami_exporter.config.model import ExporterConfig, ServerConfig
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History
from ami_exporter.web.security import WebSecurity
from ami_exporter.web.server import HTTPLimits, WebServer

log = logging.getLogger("ami_exporter")

# Leave time for Logoff and closing within the 2 s an orchestrator usually grants.
SHUTDOWN_BUDGET: Final = 1.0
EXIT_OK: Final = 0
EXIT_CANNOT_LISTEN: Final = 1


async def serve(
    config: ExporterConfig, web_security: WebSecurity | None = None, *, demo: bool = False
) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    security = web_security if web_security is not None else WebSecurity()
    if not demo:
        return await _serve(config, config.servers, security)
    async with demo_server() as server:
        return await _serve(config, [server], security)


async def _serve(
    config: ExporterConfig, servers: Sequence[ServerConfig], security: WebSecurity
) -> int:
    states = [ServerState(s.name) for s in servers]
    history = History(states)  # status page sparklines; sampled off the event path
    web = WebServer(
        build_registry(states),
        states,
        host=config.listen_host,
        port=config.listen_port,
        telemetry_path=config.telemetry_path,
        ssl_context=security.ssl_context,
        basic_auth=security.basic_auth,
        history=history,
        limits=HTTPLimits(max_connections=config.max_connections),
    )
    if not await _listen(web, config, security):
        return EXIT_CANNOT_LISTEN
    clients = [AMIClient(s, st) for s, st in zip(servers, states, strict=True)]
    tasks = [asyncio.create_task(c.run(), name=f"ami:{c.config.name}") for c in clients]
    tasks.append(asyncio.create_task(history.run(), name="history"))
    await _stop_signal()
    log.info("shutting down")
    await asyncio.wait([asyncio.create_task(c.stop()) for c in clients], timeout=SHUTDOWN_BUDGET)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await web.stop()
    return EXIT_OK


async def _listen(web: WebServer, config: ExporterConfig, security: WebSecurity) -> bool:
    """Start the web server and log where; False (logged) when the address cannot be bound."""
    try:
        await web.start()
    except OSError as exc:
        log.error(
            "cannot listen on %s:%d: %s",
            config.listen_host,
            config.listen_port,
            exc.strerror or exc,
        )
        return False
    where = config.listen_host or "0.0.0.0"  # what ":PORT" means
    scheme = "https" if security.ssl_context is not None else "http"
    log.info("listening on %s://%s:%d%s", scheme, where, web.port, config.telemetry_path)
    return True


async def _stop_signal() -> None:
    """Return at the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
