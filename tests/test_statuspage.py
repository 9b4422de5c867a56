"""The status page at ``/``: rendering (history, sparklines, causes, errors, escaping, no caller
data), the bounded history, and the real page in headless Chromium against ``--demo``."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    REPO,
    FakeClock,
    clean_env,
    free_port,
    http_get,
    replay_events,
    require_binary,
    wait_for,
)

from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History, take_sample
from ami_exporter.web.statuspage import human_duration, render_status_page, sparkline

CALLER_DATA = ("5551000", "AMI Test")  # CallerIDNum / CallerIDName of the captures and simulator
NOW = 1_795_771_000.0  # the captures' epoch


def fed_state(clock: FakeClock, name: str = "pbx1") -> ServerState:
    state = replay_events(ServerState(name, clock=clock), "03-originate-200.exporter.raw")
    state.record_session_up()
    return state


def test_page_with_history() -> None:
    clock = FakeClock(NOW)
    state = fed_state(clock)
    history = History([state], interval=10, points=180, clock=clock)
    for capture in ("03-originate-100.exporter.raw", "03-originate-300.exporter.raw", None):
        history.sample()
        clock.now += 10
        if capture:
            replay_events(state, capture)
    page = render_status_page([state], history, now=clock.now).decode()
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "default-src 'none'" in page  # no external asset could load even if one slipped in
    for forbidden in ("<script", "http://", "https://", "src="):
        assert forbidden not in page
    assert '<span class="badge up">up</span>' in page
    assert page.count('<svg class="spark"') == 4
    assert "Asterisk AMI status" in page and "1 of 1 servers up" in page
    # Three originates in the window (200, 100, 300), two since the first sample 30 s ago.
    assert 'Originates, last 30 s</div><div class="value">2</div>' in page
    assert "3 since start" in page
    # The causes of those calls, most frequent first, with a hint.
    causes = page.split('<table class="causes">')[1].split("</table>")[0]
    assert "<td>16</td><td>NORMAL_CLEARING</td>" in causes
    assert '<td>17</td><td>USER_BUSY</td><td class="hint">busy</td>' in causes
    assert "<td>34</td><td>NORMAL_CIRCUIT_CONGESTION</td>" in causes
    assert 'href="/metrics"' in page and 'href="/-/healthy"' in page and 'href="/-/ready"' in page
    for text in CALLER_DATA:
        assert text not in page


def test_page_without_history_and_escaping() -> None:
    clock = FakeClock(NOW)
    state = ServerState('<img src=x onerror="alert(1)">', clock=clock)
    state.record_login_failure("error", '<script>alert("x")</script>')
    page = render_status_page([state], None, telemetry_path="/m&x", now=clock.now).decode()
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'href="/m&amp;x"' in page
    assert '<span class="badge down">down</span>' in page
    assert "no history yet" in page and "No hangup seen yet." in page
    assert page.count('<svg class="spark"') == 4  # drawn even with a single point


def test_last_error_is_kept_after_recovery() -> None:
    clock = FakeClock(NOW)
    state = ServerState("pbx1", clock=clock)
    state.record_disconnect("eof", "connection closed by Asterisk")
    clock.now += 120
    state.record_session_up()  # what the client does at each login: clears last_error
    clock.now += 60
    page = render_status_page([state], now=clock.now).decode()
    assert '<div class="error past"><strong>Last error</strong> (' in page
    assert "3 min ago): disconnected (eof): connection closed by Asterisk" in page
    assert "AMI up since " in page and "(1 min)" in page


def test_history_is_bounded_and_sampled_periodically() -> None:
    clock = FakeClock(NOW)
    state = ServerState("pbx1", clock=clock)
    history = History([state], interval=10, points=3, clock=clock)
    for i in range(5):
        clock.now = 1000.0 + i
        history.sample()
    assert [s.timestamp for s in history.series(state)] == [1002.0, 1003.0, 1004.0]
    assert history.series(ServerState("other")) == []
    with pytest.raises(ValueError, match="interval"):
        History([state], interval=0)


async def test_history_run_samples_on_a_schedule() -> None:
    """A sample at once, then one per interval on a fixed schedule, never early."""
    interval = 0.02
    loop = asyncio.get_running_loop()
    state = ServerState("pbx1")
    history = History([state], interval=interval, points=1000, clock=loop.time)
    start = loop.time()
    task = asyncio.create_task(history.run())
    try:
        await wait_for(lambda: len(history.series(state)) >= 6, what="six samples")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elapsed = loop.time() - start
    stamps = [sample.timestamp for sample in history.series(state)]
    assert stamps[0] - start < interval  # the first sample right away
    for k, stamp in enumerate(stamps):
        assert stamp - stamps[0] >= k * interval - 1e-6, stamps  # never ahead of the schedule
    assert len(stamps) <= elapsed / interval + 1, (len(stamps), elapsed)


def test_take_sample_counts() -> None:
    clock = FakeClock(NOW)
    state = fed_state(clock)
    sample = take_sample(state, clock.now)
    assert (sample.originates, sample.originates_failed) == (1, 1)  # 200 = busy
    assert sample.hangups == sum(state.hangups.values()) > 0
    assert sample.channels == 0 and sample.up


def test_sparkline_shapes() -> None:
    svg = sparkline([(0.0, 0.0), (10.0, 5.0), (20.0, 2.0)], label="a <b>", color="#123456")
    assert svg.startswith('<svg class="spark" viewBox="0 0 200 40"')
    assert "<title>a &lt;b&gt;</title>" in svg
    assert 'points="0.0,38.0 100.0,2.0 200.0,23.6"' in svg
    assert "<polyline" in sparkline([], label="empty", color="#000")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (200, "3 min 20 s"),
        (1800, "30 min"),
        (7500, "2 h 5 min"),
        (90000, "1 d 1 h"),
        (-5, "0 s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# ---------------------------------------------------------------------------- headless Chromium


def _sum(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.e2e
def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    browser = require_binary(
        "chromium",
        "chromium-browser",
        install="apt-get install -y --no-install-recommends chromium (Debian); .ci/run does",
    )
    port = free_port()
    env = clean_env()
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ami_exporter",
            "--demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            try:
                metrics = http_get(base + "/metrics")[1]
                if (
                    _sum(metrics, "asterisk_originates_total") >= 2
                    and _sum(metrics, "asterisk_hangups_total") >= 2
                ):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the demo placed no calls within 30 s"
            time.sleep(0.2)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--mute-audio",
            f"--user-data-dir={tmp_path / 'profile'}",
        ]
        dom = subprocess.run(
            [browser, *flags, "--dump-dom", base + "/"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert dom.returncode == 0, dom.stderr[-2000:]
        page = dom.stdout
        shot = tmp_path / "page.png"
        screenshot = subprocess.run(
            [browser, *flags, f"--screenshot={shot}", "--window-size=1200,900", base + "/"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=5)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        log.close()

    # The rendered DOM: server name, AMI up, numbers, sparklines, causes, links.
    assert "<title>AMI status: 1/1 up - ami-exporter</title>" in page
    assert '<span class="name">demo</span>' in page
    assert '<span class="badge up">up</span>' in page
    assert "AMI up since " in page
    assert "Asterisk 22.10.1" in page
    assert page.count('<svg class="spark"') == 4
    assert "<polyline" in page
    assert '<table class="causes">' in page
    assert re.search(r"<tr><td>\d+</td><td>[A-Z_]+</td>", page), "no hangup cause row"
    assert 'href="/metrics"' in page and 'href="/-/healthy"' in page and 'href="/-/ready"' in page
    for text in CALLER_DATA:
        assert text not in page, f"caller data {text!r} on the page"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
