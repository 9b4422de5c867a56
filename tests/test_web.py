"""The HTTP side, in-process: /metrics (text, OpenMetrics, gzip, HEAD, keep-alive), the landing
page, /-/healthy and /-/ready, error statuses, and the full metric contract fed from captures."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator

import pytest
from helpers import core_settings_answer, replay_events
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.channels import DIAL_LABELS
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer

TIMEOUT = 5.0

Response = tuple[int, dict[str, str], bytes]


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b""
    if length and not head_only:
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    return status, headers, body


def _request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def fetch(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        writer.write(_request(method, path, {"Connection": "close", **(headers or {})}))
        await writer.drain()
        return await _read_response(reader, head_only=method == "HEAD")
    finally:
        writer.close()


def feed_capture(state: ServerState) -> None:
    """Feed the busy originate capture and a CoreSettings answer into ``state``."""
    replay_events(state, "03-originate-200.exporter.raw")
    state.apply_core_settings(core_settings_answer())
    state.record_session_up()
    state.record_ping(0.0025)
    state.record_received()


@pytest.fixture
async def states() -> list[ServerState]:
    return [ServerState("pbx1"), ServerState("<b>x</b>")]


@pytest.fixture
async def server(states: list[ServerState]) -> AsyncIterator[WebServer]:
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    assert web.port != 0
    try:
        yield web
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)


# ---------------------------------------------------------------------------- /metrics


async def test_metrics_text_format(server: WebServer) -> None:
    status, headers, body = await fetch(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "asterisk_ami_up" in names
    assert "ami_exporter_build_info" in names


async def test_metrics_openmetrics(server: WebServer) -> None:
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    status, headers, body = await fetch(server.port, "/metrics", headers={"Accept": accept})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in om_families(text)}
    up = families["asterisk_ami_up"]
    assert {s.labels["server"]: s.value for s in up.samples} == {"pbx1": 0.0, "<b>x</b>": 0.0}


async def test_metrics_gzip(server: WebServer) -> None:
    status, headers, body = await fetch(
        server.port, "/metrics", headers={"Accept-Encoding": "gzip, deflate"}
    )
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert "asterisk_ami_up" in {f.name for f in text_string_to_metric_families(text)}


async def test_metrics_no_gzip_unless_asked(server: WebServer) -> None:
    _, headers, body = await fetch(server.port, "/metrics")
    assert "content-encoding" not in headers
    assert body.startswith(b"# HELP")


async def test_head_has_no_body(server: WebServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_request("HEAD", "/metrics", {"Connection": "close"}))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes
    finally:
        writer.close()
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest == b""


async def test_keep_alive_two_requests_one_connection(server: WebServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_request("GET", "/metrics"))
        await writer.drain()
        status1, headers1, body1 = await _read_response(reader)
        assert status1 == 200
        assert headers1["connection"] == "keep-alive"
        assert b"asterisk_ami_up" in body1
        writer.write(_request("GET", "/-/healthy", {"Connection": "close"}))
        await writer.drain()
        status2, headers2, body2 = await _read_response(reader)
        assert status2 == 200
        assert body2 == b"Healthy\n"
        assert headers2["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


async def test_pipelined_requests(server: WebServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_request("GET", "/-/healthy") + _request("GET", "/-/healthy"))
        await writer.drain()
        for _ in range(2):
            status, _, body = await _read_response(reader)
            assert (status, body) == (200, b"Healthy\n")
    finally:
        writer.close()


async def test_post_with_body_does_not_poison_keep_alive(server: WebServer) -> None:
    """A 405 answer must not leave the request body to be read as the next request: either
    the server really closes the connection, or it consumed the body (Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        body = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"  # would be a 404 if parsed
        post = _request("POST", "/metrics", {"Content-Length": str(len(body))}) + body
        writer.write(post)
        await writer.drain()
        status, headers, _ = await _read_response(reader)
        assert status == 405
        if headers.get("connection") == "close":
            # ...and it does close: nothing more is answered, the body least of all.
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            return
        writer.write(_request("GET", "/-/healthy", {"Connection": "close"}))
        await writer.drain()
        status2, _, body2 = await _read_response(reader)
        assert (status2, body2) == (200, b"Healthy\n")
    finally:
        writer.close()


# ---------------------------------------------------------------------------- other paths


async def test_landing_page(server: WebServer, states: list[ServerState]) -> None:
    states[0].record_session_up()
    status, headers, body = await fetch(server.port, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    page = body.decode()
    assert '<a href="/metrics">' in page
    assert "pbx1" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<b>x</b>" not in page
    # One section per server, with its state (the page itself: tests/test_statuspage.py).
    sections = page.split('<section class="server">')[1:]
    row_a = next(part for part in sections if "pbx1" in part)
    row_b = next(part for part in sections if "&lt;b&gt;x" in part)
    assert '<span class="badge up">up</span>' in row_a
    assert '<span class="badge down">down</span>' in row_b


async def test_healthy(server: WebServer) -> None:
    status, _, body = await fetch(server.port, "/-/healthy")
    assert (status, body) == (200, b"Healthy\n")


async def test_ready_waits_for_every_server(server: WebServer, states: list[ServerState]) -> None:
    status, _, body = await fetch(server.port, "/-/ready")
    assert status == 503
    assert b"pbx1" in body
    states[0].record_session_up()
    status, _, _ = await fetch(server.port, "/-/ready")
    assert status == 503
    states[1].record_session_up()
    status, _, _ = await fetch(server.port, "/-/ready")
    assert status == 200
    # Ready means "logged in once": a later disconnect does not make it unready again.
    states[1].record_session_down()
    status, _, _ = await fetch(server.port, "/-/ready")
    assert status == 200


async def test_unknown_path_404(server: WebServer) -> None:
    status, _, _ = await fetch(server.port, "/nope")
    assert status == 404


async def test_post_405(server: WebServer) -> None:
    status, headers, _ = await fetch(server.port, "/metrics", method="POST")
    assert status == 405
    assert "GET" in headers.get("allow", "")


async def test_query_string_ignored(server: WebServer) -> None:
    """Query parameters other than collect[] and name[] (tests/test_scrape_filter.py) are
    ignored: the answer is the whole exposition all the same."""
    _, _, whole = await fetch(server.port, "/metrics")
    status, _, body = await fetch(server.port, "/metrics?names=asterisk_ami_up&x=1")
    assert status == 200

    def families(text: bytes) -> set[str]:
        return {f.name for f in text_string_to_metric_families(text.decode())}

    assert families(body) == families(whole)
    assert len(families(body)) > 1


async def test_bad_request_line(server: WebServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        status, _, _ = await _read_response(reader)
        assert status == 400
    finally:
        writer.close()


async def test_custom_telemetry_path() -> None:
    states = [ServerState("a")]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0, telemetry_path="/m")
    await web.start()
    try:
        status, _, body = await fetch(web.port, "/m")
        assert status == 200
        assert b"asterisk_ami_up" in body
        status, _, _ = await fetch(web.port, "/metrics")
        assert status == 404
        _, _, page = await fetch(web.port, "/")
        assert b'<a href="/m">' in page
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)


async def test_stop_closes_idle_keep_alive_connections() -> None:
    states = [ServerState("a")]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    try:
        writer.write(_request("GET", "/-/healthy"))
        await writer.drain()
        status, _, _ = await _read_response(reader)
        assert status == 200
        await asyncio.wait_for(web.stop(), 2.0)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


# ---------------------------------------------------------------------------- metric contract

# name (as exposed in HELP/TYPE) -> (type, has a server label)
CONTRACT: dict[str, tuple[str, bool]] = {
    "asterisk_ami_up": ("gauge", True),
    "asterisk_ami_connection_attempts_total": ("counter", True),
    "asterisk_ami_connection_errors_total": ("counter", True),
    "asterisk_ami_login_failures_total": ("counter", True),
    "asterisk_ami_disconnects_total": ("counter", True),
    "asterisk_ami_last_event_timestamp_seconds": ("gauge", True),
    "asterisk_ami_ping_rtt_seconds": ("gauge", True),
    "asterisk_ami_events_total": ("counter", True),
    "asterisk_ami_malformed_messages_total": ("counter", True),
    "asterisk_ami_resync_channels_removed_total": ("counter", True),
    "asterisk_info": ("gauge", True),
    "asterisk_core_startup_timestamp_seconds": ("gauge", True),
    "asterisk_core_reload_timestamp_seconds": ("gauge", True),
    "asterisk_active_channels": ("gauge", True),
    "asterisk_active_channels_by_state": ("gauge", True),
    "asterisk_active_calls": ("gauge", True),
    "asterisk_channels_created_total": ("counter", True),
    "asterisk_hangups_total": ("counter", True),
    "asterisk_originates_total": ("counter", True),
    "asterisk_dials_total": ("counter", True),
    "asterisk_channel_duration_seconds": ("histogram", True),
    "asterisk_security_events_total": ("counter", True),
    "ami_exporter_build_info": ("gauge", False),
}


def _family_name(exposed: str, kind: str) -> str:
    # prometheus_client's parser names counter families without the _total suffix.
    return exposed.removesuffix("_total") if kind == "counter" else exposed


async def test_metric_contract_with_real_events() -> None:
    state = ServerState("pbx1")
    feed_capture(state)
    states = [state]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    try:
        status, _, body = await fetch(web.port, "/metrics")
    finally:
        await asyncio.wait_for(web.stop(), TIMEOUT)
    assert status == 200
    text = body.decode()
    lines = text.splitlines()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    for exposed, (kind, with_server) in CONTRACT.items():
        helps = [ln for ln in lines if ln.startswith(f"# HELP {exposed} ")]
        types = [ln for ln in lines if ln == f"# TYPE {exposed} {kind}"]
        assert len(helps) == 1, f"{exposed}: HELP line missing or repeated"
        assert len(helps[0]) > len(f"# HELP {exposed} "), f"{exposed}: empty HELP"
        assert len(types) == 1, f"{exposed}: no '# TYPE {exposed} {kind}'"
        family = families[_family_name(exposed, kind)]
        assert family.type == kind
        assert family.samples, f"{exposed}: no samples once the state has data"
        for sample in family.samples:
            if with_server:
                assert sample.labels.get("server") == "pbx1", (exposed, sample)
            else:
                assert "server" not in sample.labels, (exposed, sample)

    def values(name: str, *keys: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(s.labels[k] for k in keys): s.value
            for s in families[name].samples
            if s.name in (name, name + "_total")
        }

    assert values("asterisk_ami_up", "server") == {("pbx1",): 1.0}
    assert values("asterisk_ami_ping_rtt_seconds", "server") == {("pbx1",): 0.0025}
    assert values("asterisk_info", "version", "ami_version", "system_name") == {
        ("22.10.1", "11.0.0", ""): 1.0
    }
    startup = values("asterisk_core_startup_timestamp_seconds", "server")[("pbx1",)]
    assert abs(startup - (time.time() - 13)) < 60  # FullyBooted said Uptime: 13
    assert values("asterisk_channels_created", "tech") == {("Local",): 2.0}
    assert values("asterisk_active_channels", "tech") == {("Local",): 0.0}
    assert sum(values("asterisk_active_channels_by_state", "state").values()) == 0.0
    assert values("asterisk_active_calls", "server") == {("pbx1",): 0.0}
    hangups = values("asterisk_hangups", "cause", "cause_name")
    assert hangups[("17", "USER_BUSY")] == 1.0
    assert sum(hangups.values()) == 2.0
    originates = values("asterisk_originates", "result", "reason")
    assert originates[("failure", "busy")] == 1.0
    assert sum(originates.values()) == 1.0
    dials = values("asterisk_dials", "status")
    assert dials == {**{(s,): 0.0 for s in DIAL_LABELS}, ("busy",): 1.0}
    events = values("asterisk_ami_events", "event")
    assert events[("Newchannel",)] == 2.0
    assert events[("Hangup",)] == 2.0
    assert events[("OriginateResponse",)] == 1.0
    assert values("asterisk_security_events", "service", "event") == {
        ("AMI", "SuccessfulAuth"): 1.0
    }
    count = [
        s.value
        for s in families["asterisk_channel_duration_seconds"].samples
        if s.name == "asterisk_channel_duration_seconds_count"
    ]
    assert count == [2.0]
    inf = [
        s.value
        for s in families["asterisk_channel_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
    ]
    assert inf == [2.0]
