"""``/metrics?collect[]=<collector>`` (node_exporter's) and ``?name[]=<family>``
(client_python's), over real HTTP on 127.0.0.1, against the whole exposition of the same state.

The expected family sets are taken from the whole, unfiltered answer (parsed with
prometheus_client's parser) and from each metrics module's own table, never from the filter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from helpers import core_settings_answer, replay_events
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families
from test_web import fetch

from ami_exporter.metrics import health, peers
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer

pytestmark = pytest.mark.unit

TIMEOUT = 5.0
EXPORTER_OWN = ("process_", "asterisk_exporter_", "ami_exporter_")  # always served


@pytest.fixture
async def server() -> AsyncIterator[WebServer]:
    state = ServerState("pbx1")
    replay_events(state, "03-originate-200.exporter.raw")
    replay_events(state, "pjsip/trunk-down.listener.raw")  # peers and registrations
    state.apply_core_settings(core_settings_answer())
    state.record_session_up()
    states = [state, ServerState("pbx2")]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    try:
        yield web
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)


async def families(web: WebServer, path: str, accept: str = "") -> dict[str, list[object]]:
    status, _, body = await fetch(web.port, path, headers={"Accept": accept} if accept else {})
    assert status == 200, body
    text = body.decode()
    parse = om_families if accept else text_string_to_metric_families
    return {f.name: f.samples for f in parse(text)}


def table_names(module: object) -> set[str]:
    return {row.name for row in module.TABLE}  # type: ignore[attr-defined]


def collectors_reported(found: dict[str, list[object]]) -> set[str]:
    samples = found.get("ami_exporter_scrape_collector_success", [])
    return {s.labels["collector"] for s in samples}  # type: ignore[attr-defined]


async def test_collect_selects_one_collector_and_keeps_the_exporters_own(
    server: WebServer,
) -> None:
    whole = await families(server, "/metrics")
    only = await families(server, "/metrics?collect[]=peers")
    assert table_names(peers) <= set(whole)
    ours = {n for n in whole if not n.startswith(EXPORTER_OWN)}
    expected = {n for n in ours if n in table_names(peers)}
    assert {n for n in only if not n.startswith(EXPORTER_OWN)} == expected
    assert only["asterisk_peer_up"] == whole["asterisk_peer_up"]
    assert "process_cpu_seconds" in only  # as node_exporter keeps process_* under collect[]
    assert collectors_reported(only) == {"peers"}
    assert len(collectors_reported(whole)) >= 8


async def test_collect_is_repeatable_and_url_encoded_brackets_work(server: WebServer) -> None:
    whole = await families(server, "/metrics")
    both = await families(server, "/metrics?collect%5B%5D=peers&collect[]=health")
    expected = {n for n in whole if n in table_names(peers) | table_names(health)}
    assert {n for n in both if not n.startswith(EXPORTER_OWN)} == expected
    assert collectors_reported(both) == {"peers", "health"}


async def test_an_unknown_collector_is_a_400_naming_it_and_the_known_ones(
    server: WebServer,
) -> None:
    status, _, body = await fetch(server.port, "/metrics?collect[]=peers&collect[]=nosuch")
    assert status == 400
    text = body.decode()
    assert "unknown collector 'nosuch'" in text
    for known in ("health", "core", "channels", "outcomes", "security", "peers", "queues"):
        assert known in text
    assert server.scrapes.encodings == 0


async def test_name_selects_families_by_family_or_sample_name(server: WebServer) -> None:
    whole = await families(server, "/metrics")
    one = await families(server, "/metrics?name[]=asterisk_ami_up")
    assert set(one) == {"asterisk_ami_up"}
    assert one["asterisk_ami_up"] == whole["asterisk_ami_up"]
    # A counter's sample name (client_python matches sample names) selects its family too.
    two = await families(
        server, "/metrics?name[]=asterisk_ami_events_total&name[]=process_open_fds"
    )
    assert set(two) == {"asterisk_ami_events", "process_open_fds"}
    assert two["asterisk_ami_events"] == whole["asterisk_ami_events"]
    none = await families(server, "/metrics?name[]=no_such_family")
    assert none == {}


async def test_collect_and_name_together_in_openmetrics(server: WebServer) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    path = "/metrics?collect[]=health&name[]=asterisk_ami_up&name[]=asterisk_peer_up"
    found = await families(server, path, accept)
    assert set(found) == {"asterisk_ami_up"}  # asterisk_peer_up is not the health collector's
    _, _, body = await fetch(server.port, path, headers={"Accept": accept})
    assert body.endswith(b"# EOF\n")


async def test_scrapes_with_different_selections_never_share_a_body(server: WebServer) -> None:
    """Sent in the same instant: the sharing (same Accept, same gzip) must still keep the
    selections apart, and the same selection in any order shares one encoding."""
    paths = [
        "/metrics",
        "/metrics?collect[]=peers",
        "/metrics?collect[]=health&collect[]=peers",
        "/metrics?collect[]=peers&collect[]=health",
        "/metrics?name[]=asterisk_ami_up",
    ]
    answers = await asyncio.gather(*(fetch(server.port, p) for p in paths))
    names = [{f.name for f in text_string_to_metric_families(b.decode())} for _, _, b in answers]
    assert "asterisk_ami_up" in names[0] and "asterisk_peer_up" in names[0]
    assert "asterisk_ami_up" not in names[1] and "asterisk_peer_up" in names[1]
    assert names[2] == names[3]
    assert names[4] == {"asterisk_ami_up"}
    assert 4 <= server.scrapes.encodings <= 5
