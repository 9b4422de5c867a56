"""``ami_exporter_scrape_collector_duration_seconds{collector}`` and
``ami_exporter_scrape_collector_success{collector}`` (node_exporter's self-metrics), and a
collector that raises: success 0, its families left out whole, the rest of the scrape served,
the failure logged once (rate limited), not once per scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from helpers import replay_events
from prometheus_client.parser import text_string_to_metric_families
from test_web import fetch

from ami_exporter.metrics import peers as peer_metrics
from ami_exporter.metrics.collector import build_registry
from ami_exporter.metrics.exposition import Exposition, negotiate
from ami_exporter.metrics.self import CollectorErrors
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer

pytestmark = pytest.mark.unit

TIMEOUT = 5.0
# The metrics modules of issue #14 that exist on this branch (trunks and rtp come later).
COLLECTORS = {"health", "core", "channels", "outcomes", "security", "peers", "queues", "vicidial"}


class Exploding(dict):  # type: ignore[type-arg]
    """A peers dict whose reading raises, as a bug in a collector would."""

    def items(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the peers collector")


def parsed(body: bytes) -> dict[str, dict[str, float]]:
    """family -> {collector label or '': value} for the two self-metric families, and the
    other families with an empty dict."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        out[family.name] = {s.labels.get("collector", ""): s.value for s in family.samples}
    return out


@pytest.fixture
async def web() -> AsyncIterator[tuple[WebServer, ServerState]]:
    state = ServerState("pbx1")
    replay_events(state, "pjsip/trunk-down.listener.raw")
    state.record_session_up()
    web = WebServer(build_registry([state]), [state], host="127.0.0.1", port=0)
    await web.start()
    try:
        yield web, state
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)


async def test_every_collector_reports_its_duration_and_success(
    web: tuple[WebServer, ServerState],
) -> None:
    server, state = web
    assert state.peers.peers, "the capture has peers"
    status, _, body = await fetch(server.port, "/metrics")
    assert status == 200
    found = parsed(body)
    success = found["ami_exporter_scrape_collector_success"]
    duration = found["ami_exporter_scrape_collector_duration_seconds"]
    assert set(success) >= COLLECTORS
    assert set(success) == set(duration)
    assert all(v == 1.0 for v in success.values())
    assert all(0.0 <= v < 5.0 for v in duration.values())
    assert "asterisk_peer_up" in found


async def test_a_raising_collector_gives_success_0_and_the_rest_is_served(
    web: tuple[WebServer, ServerState], caplog: pytest.LogCaptureFixture
) -> None:
    server, state = web
    _, _, before = await fetch(server.port, "/metrics")
    good = parsed(before)
    state.peers.peers = Exploding(state.peers.peers)
    caplog.set_level(logging.WARNING, "ami_exporter.metrics")
    for _ in range(3):
        status, _, body = await fetch(server.port, "/metrics")
        assert status == 200
        found = parsed(body)
        assert found["ami_exporter_scrape_collector_success"]["peers"] == 0.0
        others = {k: v for k, v in found["ami_exporter_scrape_collector_success"].items()}
        del others["peers"]
        assert set(others.values()) == {1.0}
        # Every family of the peers collector is gone, not half written (no stray HELP);
        # every other family is there.
        peer_families = {row.name for row in peer_metrics.TABLE}
        assert not peer_families & set(found)
        assert set(good) - peer_families <= set(found)
        assert b"asterisk_registration_up" not in body
    failures = [r for r in caplog.records if "collector peers" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    state.peers.peers = dict(state.peers.peers)
    _, _, body = await fetch(server.port, "/metrics")
    assert parsed(body)["ami_exporter_scrape_collector_success"]["peers"] == 1.0
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_failures_are_logged_again_after_the_interval_with_the_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("ami_exporter.metrics.self.time.monotonic", lambda: now[0])
    errors = CollectorErrors(logging.getLogger("t.self"), interval=300.0)
    caplog.set_level(logging.WARNING, "t.self")
    for step in range(10):
        now[0] += 60.0 if step else 0.0
        try:
            raise ValueError("boom")
        except ValueError:
            errors.failed("queues")
    messages = [r.getMessage() for r in caplog.records]
    # At 1000 s (first), then at 1300 s with the 4 unlogged failures before it and itself.
    assert len(messages) == 2
    assert "still failing (5 more failed scrapes" in messages[1]


def test_the_collectors_are_named_after_their_modules() -> None:
    registry = build_registry([ServerState("x")], process=False)
    names = Exposition(registry).collector_names()
    modules = {type(c).__module__.rsplit(".", 1)[-1] for c in registry.collectors}
    assert COLLECTORS <= set(names) <= modules
    body = Exposition(registry).encode(negotiate("")).decode()
    assert body.count("ami_exporter_scrape_collector_success{") == len(names)
