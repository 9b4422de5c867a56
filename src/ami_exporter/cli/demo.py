"""``--demo``: a simulated Asterisk in the exporter's own process, with call traffic.

The only module that imports :mod:`ami_simulator`, and only once the demo starts, so the
exporter itself never loads the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Final

from ami_exporter.config.model import ServerConfig

log = logging.getLogger("ami_exporter")

DEMO_CALLS_PER_SECOND: Final = 2.0
DEMO_USERNAME: Final = "exporter"
STOP_TIMEOUT: Final = 0.5


@contextlib.asynccontextmanager
async def demo_server() -> AsyncIterator[ServerConfig]:
    """Start the simulator on a free loopback port; yield the server to monitor; stop it."""
    from ami_simulator.server import SimulatedAsterisk, SimulatorConfig

    secret = secrets.token_urlsafe(16)
    simulator = SimulatedAsterisk(
        SimulatorConfig(
            port=0,
            username=DEMO_USERNAME,
            secret=secret,
            calls_per_second=DEMO_CALLS_PER_SECOND,
        )
    )
    await simulator.start()
    log.info("demo: simulated Asterisk on 127.0.0.1:%d", simulator.port)
    try:
        yield ServerConfig("demo", "127.0.0.1", simulator.port, DEMO_USERNAME, secret)
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(simulator.stop(), STOP_TIMEOUT)
