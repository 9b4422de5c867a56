"""Runs the real exporter pieces (clients, state, collector, HTTP) in the test's event loop."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.client.connection import AMIClient
from ami_exporter.config.model import ServerConfig
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def server_config(
    port: int, name: str = "test", secret: str = "s3cret", **kw: float | bool | str
) -> ServerConfig:
    kw.setdefault("ping_interval", 5.0)
    kw.setdefault("resync_interval", 60.0)
    kw.setdefault("connect_timeout", 2.0)
    return ServerConfig(name, "127.0.0.1", port, "exporter", secret, **kw)


@dataclass
class Exporter:
    states: list[ServerState]
    clients: list[AMIClient]
    web: WebServer

    @property
    def state(self) -> ServerState:
        return self.states[0]

    async def scrape_text(self, accept: str = "") -> str:
        url = f"http://127.0.0.1:{self.web.port}/metrics"
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})

        def fetch() -> str:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
                return str(resp.read().decode())

        return await asyncio.to_thread(fetch)

    async def scrape(self) -> Samples:
        out: Samples = {}
        for family in text_string_to_metric_families(await self.scrape_text()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_exporter(
    *servers: ServerConfig, resync_grace: float = 0.2
) -> AsyncIterator[Exporter]:
    states = [ServerState(s.name, resync_grace=resync_grace) for s in servers]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    clients = [AMIClient(s, st) for s, st in zip(servers, states, strict=True)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        yield Exporter(states, clients, web)
    finally:
        await asyncio.wait([asyncio.create_task(c.stop()) for c in clients], timeout=2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await web.stop()
