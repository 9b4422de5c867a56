"""``--demo``: a simulated Asterisk in the exporter's own process, with every feature on.

The simulator plays an Asterisk 22 with PJSIP carriers as recorded in ``tests/fixtures/pjsip``:
calls over :data:`DEMO_TRUNKS` carriers with the captured outcome mix (answered, busy, 503,
404, 480, 603, ring-out, calls to a carrier that is down), seeded post-dial delays, RTCP reports
with loss, jitter and MES (one carrier in four degraded), inbound calls, a queue with agents
(joins, abandons, agent connects and completions), qualify and registration flaps, and VICIdial
call IDs as caller names; the exporter watches it with queues and VICIdial call types on, so
every dashboard panel has data.

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

DEMO_CALLS_PER_SECOND: Final = 3.0
DEMO_USERNAME: Final = "exporter"
DEMO_TRUNKS: Final = 8  # carrier, carrier2 ... carrier8
DEMO_HOLD_TIME: Final = 15.0  # answered calls last 7.5-22.5 s: several RTCP reports each
DEMO_FLAP_INTERVAL: Final = 90.0  # a carrier or the registration fails about every 90 s
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
            hold_time=DEMO_HOLD_TIME,
            ring_time=2.0,
            vicidial=True,
            trunks=DEMO_TRUNKS,
            flap_interval=DEMO_FLAP_INTERVAL,
        )
    )
    await simulator.start()
    log.info(
        "demo: simulated Asterisk 22 on 127.0.0.1:%d with %d PJSIP carriers",
        simulator.port,
        DEMO_TRUNKS,
    )
    try:
        yield ServerConfig(
            "demo",
            "127.0.0.1",
            simulator.port,
            DEMO_USERNAME,
            secret,
            queues=True,
            vicidial=True,
        )
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(simulator.stop(), STOP_TIMEOUT)
