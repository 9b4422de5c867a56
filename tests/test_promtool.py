"""Lint the exposition with Prometheus' own ``promtool check metrics``.

promtool (Debian package ``prometheus``) must be installed: a missing promtool is a failure, not
a skip, so CI cannot silently stop checking the exposition.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    PROMETHEUS_HINT,
    clean_env,
    core_settings_answer,
    replay_events,
    require_binary,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def promtool() -> str:
    return require_binary("promtool", install=PROMETHEUS_HINT)


def promtool_check(exposition: bytes) -> None:
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=20,
        check=False,
    )
    problems = (result.stdout + result.stderr).decode(errors="replace").strip()
    assert result.returncode == 0, f"promtool exit {result.returncode}:\n{problems}"
    assert problems == "", f"promtool reported:\n{problems}"


def promtool_accepts_openmetrics() -> bool:
    result = subprocess.run(
        [promtool(), "check", "metrics", "--help"], capture_output=True, timeout=20, check=False
    )
    return b"openmetrics" in (result.stdout + result.stderr).lower()


def scrape(port: int, accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=3) as resp:  # noqa: S310 - local URL
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


@pytest.fixture
def demo_exporter(tmp_path: Path, free_port: int) -> Iterator[int]:
    port = free_port
    env = clean_env()
    log = (tmp_path / "exporter.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ami_exporter",
            "--demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def wait_for_calls(port: int, calls: int, timeout: float = 15.0) -> bytes:
    """Scrape until the demo made at least ``calls`` originates and ended some channels."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        try:
            _, _, body = scrape(port)
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
            continue
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        originates = families.get("asterisk_originates")
        hangups = families.get("asterisk_hangups")
        seen = sum(s.value for s in originates.samples) if originates else 0.0
        if seen >= calls and hangups is not None and hangups.samples:
            return body
        time.sleep(0.3)
    pytest.fail(f"demo made {seen} originates in {timeout} s, wanted {calls}")


def test_demo_scrape_passes_promtool(demo_exporter: int) -> None:
    wait_for_calls(demo_exporter, 3)
    status, content_type, body = scrape(demo_exporter)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b'asterisk_ami_up{server="demo"} 1.0' in body
    promtool_check(body)


def test_demo_openmetrics_scrape(demo_exporter: int) -> None:
    wait_for_calls(demo_exporter, 3)
    status, content_type, body = scrape(demo_exporter, OPENMETRICS)
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    # prometheus_client's OpenMetrics parser is strict (types, suffixes, histogram buckets).
    names = {f.name for f in om_families(text)}
    assert {"asterisk_ami_up", "asterisk_hangups", "asterisk_originates"} <= names
    if promtool_accepts_openmetrics():
        promtool_check(body)


def test_every_metric_family_passes_promtool() -> None:
    """All families populated from real captures, including the histogram, lint clean."""
    state = ServerState("pbx1")
    for name in ("03-originate-200.exporter.raw", "03-originate-800.exporter.raw"):
        replay_events(state, name)
    state.apply_core_settings(core_settings_answer())
    state.record_session_up()
    state.record_ping(0.001)
    state.record_received()
    registry = build_registry([state, ServerState("other")])
    promtool_check(generate_latest(registry))
    families = {f.name for f in om_families(om_generate_latest(registry).decode())}
    assert "asterisk_channel_duration_seconds" in families
