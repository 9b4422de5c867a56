"""Fixtures of the whole suite, and its tiers (markers ``unit``, ``e2e``, ``fuzz``).

Every test belongs to exactly one tier: its module's, from :data:`TIER_OF_MODULE`, unless
it is marked with another one itself. A module missing from the table fails the collection,
so a new test file must choose its tier (``tests/README.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from amiserver import TestAMIServer
from helpers import (
    PKI,
    Capture,
    Exporter,
    Proc,
    make_pki,
    running_exporter,
    simulator_config,
)
from helpers import free_port as _free_port

from ami_exporter.config.model import ServerConfig
from ami_simulator.server import SimulatedAsterisk

TIERS = ("unit", "e2e", "fuzz")
TIER_OF_MODULE = {
    "test_alerts.py": "unit",
    "test_amiserver.py": "unit",
    "test_architecture.py": "e2e",
    "test_check.py": "e2e",
    "test_cli.py": "e2e",
    "test_dashboard.py": "unit",
    "test_dockerfile.py": "unit",
    "test_exporter.py": "e2e",
    "test_faults.py": "e2e",
    "test_field_coverage.py": "unit",
    "test_fuzz.py": "fuzz",
    "test_profiles.py": "e2e",
    "test_prometheus_e2e.py": "e2e",
    "test_promtool.py": "e2e",
    "test_protocol.py": "unit",
    "test_security.py": "unit",
    "test_simulator.py": "e2e",
    "test_simulator_scripts.py": "unit",
    "test_state.py": "unit",
    "test_state_machine.py": "fuzz",
    "test_statuspage.py": "unit",
    "test_web.py": "unit",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if not tiers:
            module = Path(str(item.fspath)).name
            if module not in TIER_OF_MODULE:
                raise pytest.UsageError(
                    f"{item.nodeid}: no tier; add {module!r} to TIER_OF_MODULE in "
                    f"tests/conftest.py or mark the test with one of {TIERS}"
                )
            item.add_marker(TIER_OF_MODULE[module])
        elif len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier: {sorted(tiers)}")


# ---------------------------------------------------------------------------- data and ports


@pytest.fixture(scope="session")
def capture() -> Capture:
    """The captures of ``tests/fixtures``: ``capture.raw(name)``, ``.messages``, ``.events``."""
    return Capture()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """Certificates from trustme: ``ca``, ``server`` (127.0.0.1, localhost), ``other-host``,
    ``client``, and ``rogue-ca``/``rogue-client`` (a CA nobody trusts)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def free_port() -> int:
    """A loopback port that is free (for a process that must be told its port)."""
    return _free_port()


# ---------------------------------------------------------------------------- servers


@pytest.fixture
async def ami_server() -> AsyncIterator[Callable[..., Awaitable[TestAMIServer]]]:
    """``ami = await ami_server(**options)``: a started :class:`TestAMIServer`, closed (and its
    hooks' errors raised) at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**options: Any) -> TestAMIServer:
            return await stack.enter_async_context(TestAMIServer(**options))

        yield start


@pytest.fixture
async def make_simulator() -> AsyncIterator[Callable[..., Awaitable[SimulatedAsterisk]]]:
    """``sim = await make_simulator(**SimulatorConfig fields)``: started, stopped at the end.

    Defaults (``helpers.simulator_config``): a free port, no generated traffic, fast logins."""
    started: list[SimulatedAsterisk] = []

    async def start(**overrides: Any) -> SimulatedAsterisk:
        sim = SimulatedAsterisk(simulator_config(**overrides))
        await sim.start()
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in reversed(started):
            await sim.stop()


@pytest.fixture
async def simulator(
    make_simulator: Callable[..., Awaitable[SimulatedAsterisk]],
) -> SimulatedAsterisk:
    """A started simulator with the defaults of :func:`make_simulator`."""
    return await make_simulator()


@pytest.fixture
async def exporter(
    ami_server: object, make_simulator: object
) -> AsyncIterator[Callable[..., Awaitable[Exporter]]]:
    """``exp = await exporter(server_config(port), ...)``: the exporter in this event loop.

    It stops (Logoff) at the end of the test, before any server of ``ami_server`` or
    ``make_simulator`` closes."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*servers: ServerConfig, **options: Any) -> Exporter:
            return await stack.enter_async_context(running_exporter(*servers, **options))

        yield start


# ---------------------------------------------------------------------------- processes


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Background processes of the test, stopped at its end (SIGTERM, then SIGKILL)."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()
