"""The exporter end to end over real loopback sockets: captures replayed, and the simulator.

Each test runs the real client, state, collector and HTTP server and reads the numbers from a
real scrape of /metrics.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from amiserver import CAPTURED_CHANNELS, LOGIN_EVENTS, TestAMIServer, silence
from helpers import (
    Capture,
    Exporter,
    closed_port,
    server_config,
    value,
    wait_for,
)

from ami_exporter.client.connection import (
    AUTH_BACKOFF_BASE,
    AUTH_BACKOFF_CAP,
    BACKOFF_JITTER,
    Backoff,
)
from ami_exporter.state.server import ServerState
from ami_simulator.server import SimulatedAsterisk

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]
S = {"server": "test"}


def ghosts(state: ServerState) -> int:
    """Channels counted as removed by a resync, once their grace period is over."""
    state.tick()
    return state.resync_removed


async def test_replay_of_a_busy_call_gives_exact_metrics(
    ami_server: AMIServerFactory, exporter: ExporterFactory, capture: Capture
) -> None:
    events = capture.events("03-originate-200.exporter.raw")
    ami = await ami_server(events=events)
    exp = await exporter(server_config(ami.port))
    await wait_for(
        lambda: sum(exp.state.events.values()) >= len(events), what="all replayed events"
    )
    started = time.time()
    m = await exp.scrape()
    assert value(m, "asterisk_ami_up", **S) == 1
    assert value(m, "asterisk_ami_connection_attempts_total", **S) == 1
    assert (
        value(m, "asterisk_hangups_total", **S, tech="Local", cause="17", cause_name="USER_BUSY")
        == 1
    )
    assert (
        value(m, "asterisk_hangups_total", **S, tech="Local", cause="0", cause_name="NOTDEFINED")
        == 1
    )
    assert value(m, "asterisk_originates_total", **S, result="failure", reason="busy") == 1
    assert value(m, "asterisk_originates_total", **S, result="success", reason="answered") == 0
    assert value(m, "asterisk_dials_total", **S, status="busy") == 1
    assert value(m, "asterisk_channels_created_total", **S, tech="Local") == 2
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 0
    assert value(m, "asterisk_active_calls", **S) == 0
    assert value(m, "asterisk_channel_duration_seconds_count", **S, tech="Local") == 2
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 0
    assert (
        value(m, "asterisk_info", **S, version="22.10.1", ami_version="11.0.0", system_name="") == 1
    )
    # FullyBooted said Uptime: 13 at login.
    startup = value(m, "asterisk_core_startup_timestamp_seconds", **S)
    assert startup is not None and abs(startup - (started - 13)) < 3
    # Events by name, counted independently from the raw capture. The list items of our own
    # resync (CoreShowChannelsComplete) are answers to us, not events: never counted.
    raw = capture.raw("03-originate-200.exporter.raw").decode()
    expected = Counter(line[7:] for line in raw.split("\r\n") if line.startswith("Event: "))
    for name, n in expected.items():
        assert value(m, "asterisk_ami_events_total", **S, event=name) == n, name
    last = value(m, "asterisk_ami_last_event_timestamp_seconds", **S)
    assert last is not None and abs(last - started) < 5


async def test_exporter_started_during_calls_learns_them_from_the_resync(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    calls = {msg["Linkedid"] for msg in CAPTURED_CHANNELS}
    ami = await ami_server(channels=CAPTURED_CHANNELS)
    exp = await exporter(server_config(ami.port))
    await wait_for(lambda: exp.state.resync_added == 10, what="resync")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 10
    assert value(m, "asterisk_active_calls", **S) == len(calls)
    assert value(m, "asterisk_active_channels_by_state", **S, state="up") == 10
    assert value(m, "asterisk_ami_resync_channels_added_total", **S) == 10
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0


async def test_wrong_secret_is_counted_and_backed_off(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """The retry comes after the authentication backoff (30 s, + up to 20 % jitter), not the
    1 s of ordinary failures; time compressed 100 times by the client's ``backoff_scale``."""
    scale = 0.01
    ami = await ami_server(secret="right", auth_delay=0)
    exp = await exporter(server_config(ami.port, secret="wrong"), backoff_scale=scale)
    await wait_for(lambda: exp.state.login_failures["auth"] == 2, what="a retried auth failure")
    m = await exp.scrape()
    assert [a.ok for a in ami.logins] == [False, False]
    gap = (ami.logins[1].time - ami.logins[0].time) / scale  # simulated seconds
    assert AUTH_BACKOFF_BASE - 0.5 <= gap <= AUTH_BACKOFF_BASE * (1 + BACKOFF_JITTER) + 10, gap
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="auth") == 2
    assert value(m, "asterisk_ami_connection_attempts_total", **S) == 2
    assert value(m, "asterisk_ami_up", **S) == 0
    assert "Authentication failed" in exp.state.last_error


@pytest.mark.unit
def test_backoff_schedules() -> None:
    rng = random.Random(7)
    auth = Backoff(AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, rng)
    delays = [auth.next_delay() for _ in range(8)]
    assert all(d >= 30 for d in delays)
    assert all(d <= 300 for d in delays)
    assert delays[-1] == 300
    assert delays == sorted(delays)
    plain = Backoff(1.0, 60.0, rng)
    delays = [plain.next_delay() for _ in range(10)]
    for i, d in enumerate(delays[:6]):
        assert 2**i <= d <= 2**i * 1.2
    assert delays[-1] == 60
    plain.reset()
    assert plain.next_delay() <= 1.2


async def test_connection_refused_is_counted_and_retried(exporter: ExporterFactory) -> None:
    with closed_port() as port:
        exp = await exporter(server_config(port), backoff_scale=0.1)
        await wait_for(lambda: exp.state.connection_attempts >= 2, what="retry")
        m = await exp.scrape()
    assert value(m, "asterisk_ami_connection_errors_total", **S, reason="refused") >= 1
    assert value(m, "asterisk_ami_up", **S) == 0


async def test_unanswered_ping_means_a_dead_session(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    ami = await ami_server(on_action={"Ping": silence})
    exp = await exporter(server_config(ami.port, ping_interval=0.3), backoff_scale=0.1)
    await wait_for(lambda: exp.state.up, what="login")
    t0 = time.monotonic()
    await wait_for(lambda: exp.state.disconnects["ping_timeout"] == 1, what="ping timeout")
    # Detected within two ping intervals (plus scheduling slack).
    assert time.monotonic() - t0 < 2 * 0.3 + 0.3
    await wait_for(lambda: len(ami.connections) >= 2, what="reconnect")
    assert exp.state.connection_attempts >= 2


async def test_malformed_message_is_counted_and_skipped(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    garbage = (
        b"this is not AMI\r\n\r\n"
        b"Event: Hangup\r\nChannel: SIP/a-1\r\nUniqueid: 9.9\r\nCause: 16\r\n\r\n"
    )
    ami = await ami_server(events=[*LOGIN_EVENTS, garbage])
    exp = await exporter(server_config(ami.port))
    await wait_for(lambda: exp.state.events.get("Hangup") == 1, what="hangup after junk")
    m = await exp.scrape()
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 1
    assert (
        value(
            m, "asterisk_hangups_total", **S, tech="SIP", cause="16", cause_name="NORMAL_CLEARING"
        )
        == 1
    )


async def test_simulator_traffic_matches_metrics(
    simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    exp = await exporter(server_config(simulator.port))
    await wait_for(lambda: exp.state.up, what="login")
    outcomes = [
        "answered",
        "busy",
        "congestion",
        "no_answer",
        "unallocated",
        "rejected",
        "failed_originate",
    ]
    for outcome in outcomes:
        simulator.start_call(outcome, hold_time=0.2)
    await wait_for(
        lambda: (
            sum(exp.state.originates.values()) == len(outcomes)
            and not simulator.active_channels()
            and exp.live() == 0
        ),
        what="all calls over",
    )
    m = await exp.scrape()
    assert value(m, "asterisk_originates_total", **S, result="success", reason="answered") == 1
    assert value(m, "asterisk_originates_total", **S, result="failure", reason="busy") == 1
    assert value(m, "asterisk_originates_total", **S, result="failure", reason="congestion") == 1
    assert value(m, "asterisk_originates_total", **S, result="failure", reason="failed") == 4
    assert value(m, "asterisk_channels_created_total", **S, tech="Local") == 12
    causes = {"16": 2, "17": 1, "34": 1, "0": 2, "19": 2, "1": 2, "21": 2}
    for cause, n in causes.items():
        got = sum(
            v
            for (name, labels), v in m.items()
            if name == "asterisk_hangups_total" and ("cause", cause) in labels
        )
        assert got == n, cause


async def test_resync_when_exporter_starts_mid_call(
    simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    for _ in range(3):
        simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: len(simulator.active_channels()) == 6, what="calls up")
    exp = await exporter(server_config(simulator.port))
    await wait_for(lambda: exp.state.resync_added == 6, what="resync")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 6
    assert value(m, "asterisk_active_calls", **S) == 3


async def test_lost_hangups_are_removed_by_the_resync(
    simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    exp = await exporter(server_config(simulator.port), backoff_scale=0.1)
    await wait_for(lambda: exp.state.up, what="login")
    for _ in range(2):
        simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: exp.live() == 4, what="calls tracked")
    # The calls end while the exporter is disconnected: their Hangups are never seen.
    simulator.end_all_calls_silently()
    await simulator.drop_connections()
    await wait_for(lambda: exp.state.disconnects["eof"] == 1, what="disconnect")
    await wait_for(lambda: exp.state.up and exp.live() == 0, what="reconnect and resync")
    await wait_for(lambda: ghosts(exp.state) == 4, what="the resync grace to run out")
    m = await exp.scrape()
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 4
    assert value(m, "asterisk_active_calls", **S) == 0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 1


async def test_asterisk_restart_mid_call(
    simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    exp = await exporter(server_config(simulator.port))
    await wait_for(lambda: exp.state.up, what="login")
    simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: exp.live() == 2, what="call tracked")
    await simulator.restart(downtime=0.2)
    await wait_for(lambda: exp.state.disconnects["shutdown"] == 1, what="shutdown seen")
    await wait_for(lambda: exp.state.up, timeout=6, what="reconnect")
    simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: exp.live() == 2, what="new call tracked")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 2
    assert value(m, "asterisk_active_calls", **S) == 1
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="shutdown") == 1
    assert value(m, "asterisk_ami_connection_attempts_total", **S) == 2


async def test_an_unexpected_error_costs_one_session_not_the_server(
    monkeypatch: pytest.MonkeyPatch, ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """A bug in a handler must not stop the server from being monitored for good."""
    calls = {"n": 0}
    original = ServerState.apply_banner

    def flaky(self: ServerState, banner: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected bug")  # raised while connecting, outside any handler
        original(self, banner)

    monkeypatch.setattr(ServerState, "apply_banner", flaky)
    ami = await ami_server()
    exp = await exporter(server_config(ami.port), backoff_scale=0.1)
    # CoreSettings answered in the second session: it logged in and synced.
    await wait_for(lambda: exp.state.version == "22.10.1", what="a second, working session")
    assert calls["n"] == 2 and exp.state.up
    assert exp.state.connection_attempts == len(ami.connections) == 2
    assert [a.ok for a in ami.logins] == [True]  # the first session died before its Login
