"""The exporter end to end over real loopback sockets: captures replayed, and the simulator.

Each test runs the real client, state, collector and HTTP server and reads the numbers from a
real scrape of /metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest
from ami_replay import ReplayServer
from conftest import read_capture
from exporter_harness import running_exporter, server_config, value, wait_for

from ami_exporter.ami.protocol import AMIParser
from ami_exporter.client.connection import AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, Backoff
from ami_simulator.server import SimulatedAsterisk, SimulatorConfig


async def test_replay_of_a_busy_call_gives_exact_metrics() -> None:
    async with ReplayServer("03-originate-200.exporter.raw") as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            await wait_for(lambda: sum(exp.state.events.values()) >= len(ami.events),
                           what="all replayed events")  # fmt: skip
            started = time.time()
            m = await exp.scrape()
    s = {"server": "test"}
    assert value(m, "asterisk_ami_up", **s) == 1
    assert value(m, "asterisk_ami_connection_attempts_total", **s) == 1
    assert value(m, "asterisk_hangups_total", **s, tech="Local", cause="17",
                 cause_name="USER_BUSY") == 1  # fmt: skip
    assert value(m, "asterisk_hangups_total", **s, tech="Local", cause="0",
                 cause_name="NOTDEFINED") == 1  # fmt: skip
    assert value(m, "asterisk_originates_total", **s, result="failure", reason="busy") == 1
    assert value(m, "asterisk_originates_total", **s, result="success", reason="answered") == 0
    assert value(m, "asterisk_dials_total", **s, status="busy") == 1
    assert value(m, "asterisk_channels_created_total", **s, tech="Local") == 2
    assert value(m, "asterisk_active_channels", **s, tech="Local") == 0
    assert value(m, "asterisk_active_calls", **s) == 0
    assert value(m, "asterisk_channel_duration_seconds_count", **s, tech="Local") == 2
    assert value(m, "asterisk_ami_malformed_messages_total", **s) == 0
    assert value(m, "asterisk_info", **s, version="22.10.1", ami_version="11.0.0",
                 system_name="") == 1  # fmt: skip
    # FullyBooted said Uptime: 13 at login.
    startup = value(m, "asterisk_core_startup_timestamp_seconds", **s)
    assert startup is not None and abs(startup - (started - 13)) < 3
    # Events by name, counted independently from the raw capture. The list items of our own
    # resync (CoreShowChannelsComplete) are answers to us, not events: never counted.
    raw = read_capture("03-originate-200.exporter.raw").decode()
    expected = Counter(line[7:] for line in raw.split("\r\n") if line.startswith("Event: "))
    for name, n in expected.items():
        assert value(m, "asterisk_ami_events_total", **s, event=name) == n, name
    assert value(m, "asterisk_ami_events_total", **s, event="CoreShowChannelsComplete") is None
    last = value(m, "asterisk_ami_last_event_timestamp_seconds", **s)
    assert last is not None and abs(last - started) < 5


async def test_exporter_started_during_calls_learns_them_from_the_resync() -> None:
    listed = [
        msg for msg in AMIParser().feed(read_capture("04-coreshowchannels.exporter.raw"))
        if msg.name == "CoreShowChannel" and msg.action_id == "csc-1"
    ]  # fmt: skip
    assert len(listed) == 10
    calls = {msg["Linkedid"] for msg in listed}
    async with ReplayServer("01-login-success.exporter.raw", channels=listed) as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            await wait_for(lambda: exp.state.resync_added == 10, what="resync")
            m = await exp.scrape()
    assert value(m, "asterisk_active_channels", server="test", tech="Local") == 10
    assert value(m, "asterisk_active_calls", server="test") == len(calls)
    assert value(m, "asterisk_active_channels_by_state", server="test", state="up") == 10
    assert value(m, "asterisk_ami_resync_channels_added_total", server="test") == 10
    assert value(m, "asterisk_ami_resync_channels_removed_total", server="test") == 0


async def test_wrong_secret_is_counted_and_backed_off() -> None:
    async with ReplayServer(None, secret="right") as ami:
        async with running_exporter(server_config(ami.port, secret="wrong")) as exp:
            await wait_for(lambda: exp.state.login_failures["auth"] == 1, what="auth failure")
            await asyncio.sleep(2.0)  # an unbacked-off client would have retried by now
            m = await exp.scrape()
    assert [ok for _, ok in ami.logins] == [False]
    assert value(m, "asterisk_ami_login_failures_total", server="test", reason="auth") == 1
    assert value(m, "asterisk_ami_up", server="test") == 0
    assert "Authentication failed" in exp.state.last_error


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


async def test_connection_refused_is_counted_and_retried() -> None:
    async with ReplayServer(None) as ami:
        port = ami.port  # now closed: nothing listens there
    async with running_exporter(server_config(port)) as exp:
        await wait_for(lambda: exp.state.connection_attempts >= 2, timeout=4, what="retry")
        m = await exp.scrape()
    assert value(m, "asterisk_ami_connection_errors_total", server="test", reason="refused") >= 1
    assert value(m, "asterisk_ami_up", server="test") == 0


async def test_unanswered_ping_means_a_dead_session() -> None:
    async with ReplayServer("01-login-success.exporter.raw", answer_pings=False) as ami:
        cfg = server_config(ami.port, ping_interval=0.3)
        async with running_exporter(cfg) as exp:
            await wait_for(lambda: exp.state.up, what="login")
            t0 = time.monotonic()
            await wait_for(lambda: exp.state.disconnects["ping_timeout"] == 1, what="ping timeout")
            # Detected within two ping intervals (plus scheduling slack).
            assert time.monotonic() - t0 < 2 * 0.3 + 0.3
            await wait_for(lambda: exp.state.connection_attempts >= 2, what="reconnect")


async def test_malformed_message_is_counted_and_skipped() -> None:
    garbage = (
        b"this is not AMI\r\n\r\n"
        b"Event: Hangup\r\nChannel: SIP/a-1\r\nUniqueid: 9.9\r\nCause: 16\r\n\r\n"
    )
    async with ReplayServer("01-login-success.exporter.raw", extra=garbage) as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            await wait_for(lambda: exp.state.events.get("Hangup") == 1, what="hangup after junk")
            m = await exp.scrape()
    assert value(m, "asterisk_ami_malformed_messages_total", server="test") == 1
    assert value(m, "asterisk_hangups_total", server="test", tech="SIP", cause="16",
                 cause_name="NORMAL_CLEARING") == 1  # fmt: skip


@pytest.fixture
async def simulator() -> SimulatedAsterisk:
    sim = SimulatedAsterisk(SimulatorConfig(port=0, calls_per_second=0, auth_delay=0.05,
                                            ring_time=0.05, seed=1))  # fmt: skip
    await sim.start()
    try:
        yield sim  # type: ignore[misc]
    finally:
        await sim.stop()


def _live(exp_state: object) -> int:
    return sum(exp_state.channels_by_tech.values())  # type: ignore[attr-defined]


async def test_simulator_traffic_matches_metrics(simulator: SimulatedAsterisk) -> None:
    async with running_exporter(server_config(simulator.port)) as exp:
        await wait_for(lambda: exp.state.up, what="login")
        outcomes = ["answered", "busy", "congestion", "no_answer", "unallocated", "rejected",
                    "failed_originate"]  # fmt: skip
        for outcome in outcomes:
            simulator.start_call(outcome, hold_time=0.2)
        await wait_for(lambda: sum(exp.state.originates.values()) == len(outcomes)
                       and not simulator.active_channels() and _live(exp.state) == 0,
                       what="all calls over")  # fmt: skip
        m = await exp.scrape()
    s = {"server": "test"}
    assert value(m, "asterisk_originates_total", **s, result="success", reason="answered") == 1
    assert value(m, "asterisk_originates_total", **s, result="failure", reason="busy") == 1
    assert value(m, "asterisk_originates_total", **s, result="failure", reason="congestion") == 1
    assert value(m, "asterisk_originates_total", **s, result="failure", reason="failed") == 4
    assert value(m, "asterisk_channels_created_total", **s, tech="Local") == 12
    causes = {"16": 2, "17": 1, "34": 1, "0": 2, "19": 2, "1": 2, "21": 2}
    for cause, n in causes.items():
        got = sum(v for (name, labels), v in m.items()
                  if name == "asterisk_hangups_total" and ("cause", cause) in labels)  # fmt: skip
        assert got == n, cause


async def test_resync_when_exporter_starts_mid_call(simulator: SimulatedAsterisk) -> None:
    for _ in range(3):
        simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: len(simulator.active_channels()) == 6, what="calls up")
    async with running_exporter(server_config(simulator.port)) as exp:
        await wait_for(lambda: exp.state.resync_added == 6, what="resync")
        m = await exp.scrape()
    assert value(m, "asterisk_active_channels", server="test", tech="Local") == 6
    assert value(m, "asterisk_active_calls", server="test") == 3


async def test_lost_hangups_are_removed_by_the_resync(simulator: SimulatedAsterisk) -> None:
    async with running_exporter(server_config(simulator.port)) as exp:
        await wait_for(lambda: exp.state.up, what="login")
        for _ in range(2):
            simulator.start_call("answered", hold_time=30)
        await wait_for(lambda: _live(exp.state) == 4, what="calls tracked")
        # The calls end while the exporter is disconnected: their Hangups are never seen.
        simulator.end_all_calls_silently()
        await simulator.drop_connections()
        await wait_for(lambda: exp.state.disconnects["eof"] == 1, what="disconnect")
        await wait_for(lambda: exp.state.up and _live(exp.state) == 0, timeout=6,
                       what="reconnect and resync")  # fmt: skip
        await asyncio.sleep(0.3)  # past the resync grace
        m = await exp.scrape()
    assert value(m, "asterisk_ami_resync_channels_removed_total", server="test") == 4
    assert value(m, "asterisk_active_calls", server="test") == 0
    assert value(m, "asterisk_ami_disconnects_total", server="test", reason="eof") == 1


async def test_asterisk_restart_mid_call(simulator: SimulatedAsterisk) -> None:
    async with running_exporter(server_config(simulator.port)) as exp:
        await wait_for(lambda: exp.state.up, what="login")
        simulator.start_call("answered", hold_time=30)
        await wait_for(lambda: _live(exp.state) == 2, what="call tracked")
        await simulator.restart(downtime=0.2)
        await wait_for(lambda: exp.state.disconnects["shutdown"] == 1, what="shutdown seen")
        await wait_for(lambda: exp.state.up, timeout=6, what="reconnect")
        simulator.start_call("answered", hold_time=30)
        await wait_for(lambda: _live(exp.state) == 2, what="new call tracked")
        m = await exp.scrape()
    assert value(m, "asterisk_active_channels", server="test", tech="Local") == 2
    assert value(m, "asterisk_active_calls", server="test") == 1
    assert value(m, "asterisk_ami_disconnects_total", server="test", reason="shutdown") == 1
    assert value(m, "asterisk_ami_connection_attempts_total", server="test") == 2


async def test_an_unexpected_error_costs_one_session_not_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in a handler must not stop the server from being monitored for good."""
    from ami_exporter.state.server import ServerState

    calls = {"n": 0}
    original = ServerState.apply_banner

    def flaky(self: ServerState, banner: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected bug")  # raised while connecting, outside any handler
        original(self, banner)

    monkeypatch.setattr(ServerState, "apply_banner", flaky)
    async with ReplayServer("01-login-success.exporter.raw") as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            await wait_for(lambda: calls["n"] >= 2 and exp.state.up, timeout=8,
                           what="second session after the injected error")  # fmt: skip
            assert exp.state.version == "22.10.1"
