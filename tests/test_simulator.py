"""Tests of the AMI simulator against the real Asterisk 22.10.1 captures in tests/fixtures."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ami_exporter.ami.protocol import AMIParser, Message, serialize
from ami_simulator.server import SimulatedAsterisk, SimulatorConfig, main

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "s3cret"  # the captures' test-only credential, the simulator's default

CAPTURE_OF = {
    "answered": "03-originate-100.exporter.raw",
    "busy": "03-originate-200.exporter.raw",
    "congestion": "03-originate-300.exporter.raw",
    "unallocated": "03-originate-400.exporter.raw",
    "no_answer": "03-originate-600.exporter.raw",
    "rejected": "03-originate-720.exporter.raw",
    "failed_originate": "03-originate-invalid-tech.exporter.raw",
}


def capture(name: str) -> list[Message]:
    return AMIParser(expect_banner=True).feed((FIXTURES / name).read_bytes())


def call_events(messages: list[Message]) -> list[Message]:
    """The events of a 03 capture's call: after the Originate response, before the Logoff."""
    start = next(
        i for i, m in enumerate(messages) if m.get("Message") == "Originate successfully queued"
    )
    return [m for m in messages[start + 1 :] if m.kind == "event"]


def keys(message: Message) -> list[str]:
    return [k for k, _ in message.headers]


def per_channel(events: list[Message]) -> dict[str, list[str]]:
    """Event names per Local half (';1'/';2'), by any header naming that channel."""
    names = {m["Channel"]: m["Channel"][-2:] for m in events if m.name == "Newchannel"}
    out: dict[str, list[str]] = {half: [] for half in names.values()}
    for m in events:
        for channel, half in names.items():
            if any(value == channel for _, value in m.headers):
                out[half].append(m.name)
    return out


class Client:
    """A raw AMI client: socket + the project's parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AMIParser(expect_banner=True)
        self.pending: list[Message] = []
        self.eof = False

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write(serialize(pairs))

    async def _fill(self, timeout: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (TimeoutError, ConnectionError):
            return False
        if not data:
            self.eof = True
            return False
        self.pending += self.parser.feed(data)
        return True

    async def until(self, pred: Callable[[Message], bool], timeout: float = 3.0) -> list[Message]:
        """Messages up to and including the first that matches ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.pending):
                if pred(m):
                    got, self.pending = self.pending[: i + 1], self.pending[i + 1 :]
                    return got
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no matching message; got {[m.name for m in self.pending]}")
            await self._fill(left)

    async def quiet(self, idle: float = 0.3, limit: float = 3.0) -> list[Message]:
        """Everything until nothing arrives for ``idle`` seconds (or EOF)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.eof and await self._fill(idle):
            pass
        got, self.pending = self.pending, []
        return got

    async def wait_eof(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            await self._fill(deadline - time.monotonic())
        assert self.eof

    async def login(self, events: str = "on", secret: str = SECRET) -> list[Message]:
        self.send(
            ("Action", "Login"),
            ("Username", "exporter"),
            ("Secret", secret),
            ("ActionID", "login-1"),
            ("Events", events),
        )
        return await self.until(lambda m: m.kind == "response")

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedAsterisk]:
    simulator = SimulatedAsterisk(
        SimulatorConfig(port=0, calls_per_second=0, ring_time=0.02, auth_delay=0.05, seed=1)
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


async def logged_in(sim: SimulatedAsterisk, events: str = "on") -> Client:
    client = await Client.connect(sim.port)
    await client.login(events)
    if events == "on":
        await client.until(lambda m: m.name == "SuccessfulAuth")
    return client


@pytest.mark.parametrize("outcome", sorted(CAPTURE_OF))
async def test_call_events_match_capture(sim: SimulatedAsterisk, outcome: str) -> None:
    expected = call_events(capture(CAPTURE_OF[outcome]))
    client = await logged_in(sim)
    sim.start_call(outcome, hold_time=0.05)
    got = await client.quiet(idle=0.25)
    client.close()
    assert all(m.kind == "event" for m in got)
    assert Counter(m.name for m in got) == Counter(m.name for m in expected)
    shapes = {m.name: keys(m) for m in expected}
    for m in expected:  # the capture itself is consistent per event name
        assert keys(m) == shapes[m.name]
    for m in got:
        assert keys(m) == shapes[m.name], m.name
    assert per_channel(got) == per_channel(expected)
    privileges = {m.name: m.get("Privilege") for m in expected}
    assert {m.name: m.get("Privilege") for m in got} == privileges
    assert sim.active_channels() == []
    assert sim.stats[outcome] == 1


async def test_call_values_look_like_asterisk(sim: SimulatedAsterisk) -> None:
    client = await logged_in(sim)
    sim.start_call("busy")
    sim.start_call("answered", hold_time=0.05)
    got = await client.quiet(idle=0.25)
    client.close()
    new = [m for m in got if m.name == "Newchannel"]
    assert [m["Channel"] for m in new] == [
        "Local/200@test-00000000;1",
        "Local/200@test-00000000;2",
        "Local/100@test-00000001;1",
        "Local/100@test-00000001;2",
    ]
    assert [m["Uniqueid"].split(".")[1] for m in new] == ["0", "1", "2", "3"]
    assert new[1]["Linkedid"] == new[0]["Uniqueid"]
    hangups = {m["Channel"][-10:]: (m["Cause"], m["Cause-txt"]) for m in got if m.name == "Hangup"}
    assert hangups == {
        "00000000;1": ("0", "Unknown"),
        "00000000;2": ("17", "User busy"),
        "00000001;1": ("16", "Normal Clearing"),
        "00000001;2": ("16", "Normal Clearing"),
    }
    reasons = [(m["Response"], m["Reason"]) for m in got if m.name == "OriginateResponse"]
    assert sorted(reasons) == [("Failure", "5"), ("Success", "4")]


async def test_failed_originate_is_one_event(sim: SimulatedAsterisk) -> None:
    client = await logged_in(sim)
    sim.start_call("failed_originate")
    (event,) = await client.quiet(idle=0.2)
    client.close()
    assert event.name == "OriginateResponse"
    assert (event["Channel"], event["Uniqueid"], event["Reason"]) == ("Foo/bar", "<unknown>", "0")


async def test_login_success_matches_capture(sim: SimulatedAsterisk) -> None:
    real = capture("01-login-success.exporter.raw")
    client = await Client.connect(sim.port)
    got = await client.login()
    got += await client.until(lambda m: m.name == "SuccessfulAuth")
    assert client.parser.banner == "Asterisk Call Manager/11.0.0"
    assert [keys(m) for m in got] == [keys(m) for m in real[:3]]
    assert got[0].headers == real[0].headers
    assert got[1]["Privilege"] == "system,all"
    assert got[1]["Status"] == "Fully Booted"
    assert got[2]["LocalAddress"] == f"IPV4/TCP/127.0.0.1/{sim.port}"
    assert got[2]["SessionID"].startswith("0x")
    client.send(("Action", "Ping"), ("ActionID", "ping-1"))
    (pong,) = await client.until(lambda m: m.kind == "response")
    assert keys(pong) == keys(real[3])
    assert pong["Ping"] == "Pong"
    assert abs(float(pong["Timestamp"]) - time.time()) < 5
    client.send(("Action", "Logoff"), ("ActionID", "logoff-1"))
    (bye,) = await client.until(lambda m: m.kind == "response")
    assert bye.headers == real[4].headers
    await client.wait_eof()
    assert [(u, ok) for _, u, ok in sim.login_attempts] == [("exporter", True)]


async def test_login_failure_delays_and_closes(sim: SimulatedAsterisk) -> None:
    watcher = await logged_in(sim)
    client = await Client.connect(sim.port)
    started = time.monotonic()
    (resp,) = await client.login(secret="wrong")
    assert time.monotonic() - started >= 0.05
    assert resp.headers == [
        ("Response", "Error"),
        ("ActionID", "login-1"),
        ("Message", "Authentication failed"),
    ]
    await client.wait_eof()
    (event,) = await watcher.until(lambda m: m.name == "InvalidPassword")
    watcher.close()
    assert event["AccountID"] == "exporter"
    assert [(u, ok) for _, u, ok in sim.login_attempts] == [("exporter", True), ("exporter", False)]


async def test_before_login_and_errors_match_capture(sim: SimulatedAsterisk) -> None:
    client = await Client.connect(sim.port)
    client.send(("Action", "Ping"), ("ActionID", "na-ping"))
    client.send(("Action", "CoreStatus"))
    denied = await client.until(lambda m: m.get("ActionID") is None)
    assert [m.headers for m in denied] == [
        [("Response", "Error"), ("ActionID", "na-ping"), ("Message", "Permission denied")],
        [("Response", "Error"), ("Message", "Permission denied")],
    ]
    real = capture("02-login-failure.goodlogin.raw")
    await client.login(events="off")
    client.send(("Action", "Command"), ("Command", "core show version"), ("ActionID", "good-cmd"))
    client.send(("Action", "NoSuchAction"), ("ActionID", "good-unknown"))
    client.send(("Action", "Logoff"), ("ActionID", "good-logoff"))
    got = await client.until(lambda m: m.get("Response") == "Goodbye")
    assert [m.headers for m in got] == [m.headers for m in real[1:]]
    await client.wait_eof()


async def test_core_status_and_settings_keys(sim: SimulatedAsterisk) -> None:
    real = {m.get("ActionID"): m for m in capture("05-commands.admin.raw")}
    client = await logged_in(sim, events="off")
    client.send(("Action", "CoreStatus"), ("ActionID", "corestatus-1"))
    client.send(("Action", "CoreSettings"), ("ActionID", "coresettings-1"))
    status, settings = await client.until(lambda m: m.get("ActionID") == "coresettings-1")
    client.close()
    assert keys(status) == keys(real["corestatus-1"])
    assert keys(settings) == keys(real["coresettings-1"])
    assert settings["AsteriskVersion"] == "22.10.1"
    assert status["CoreCurrentCalls"] == "0"


async def test_core_show_channels_agrees_with_events(sim: SimulatedAsterisk) -> None:
    real = capture("04-coreshowchannels.exporter.raw")
    real_item = next(m for m in real if m.name == "CoreShowChannel")
    client = await logged_in(sim)
    for _ in range(3):
        sim.start_call("answered", hold_time=5.0)
    sim.start_call("busy")
    events = await client.quiet(idle=0.2)
    live: set[str] = set()  # what an exporter consuming every event believes
    for m in events:
        if m.name == "Newchannel":
            live.add(m["Channel"])
        elif m.name == "Hangup":
            live.remove(m["Channel"])
    active = sim.active_channels()
    assert len(active) == 6
    assert {row["Channel"] for row in active} == live
    client.send(("Action", "CoreShowChannels"), ("ActionID", "csc-1"))
    got = await client.until(lambda m: m.name == "CoreShowChannelsComplete")
    assert keys(got[0]) == ["Response", "ActionID", "EventList", "Message"]
    items = [m for m in got if m.name == "CoreShowChannel"]
    assert all(keys(m) == keys(real_item) for m in items)
    assert got[-1]["ListItems"] == "6"
    reported = [{k: v for k, v in m.headers if k not in ("Event", "ActionID")} for m in items]
    assert sorted(reported, key=lambda r: r["Channel"]) == sorted(
        active, key=lambda r: r["Channel"]
    )
    assert {r["Application"] for r in reported} == {"Wait"}
    client.send(("Action", "CoreStatus"), ("ActionID", "cs"))
    (status,) = await client.until(lambda m: m.kind == "response")
    assert status["CoreCurrentCalls"] == "6"
    sim.end_all_calls_silently()
    assert sim.active_channels() == []
    assert await client.quiet(idle=0.1) == []
    client.close()


async def test_events_off_and_events_action(sim: SimulatedAsterisk) -> None:
    quiet = await logged_in(sim, events="off")
    sim.start_call("busy")
    assert await quiet.quiet(idle=0.15) == []
    quiet.send(("Action", "Events"), ("EventMask", "on"), ("ActionID", "ev"))
    (resp,) = await quiet.until(lambda m: m.kind == "response")
    assert resp.headers == [("Response", "Success"), ("ActionID", "ev"), ("Events", "On")]
    sim.start_call("failed_originate")
    (event,) = await quiet.quiet(idle=0.15)
    assert event.name == "OriginateResponse"
    quiet.close()


async def test_restart_sends_shutdown_and_resets(sim: SimulatedAsterisk) -> None:
    client = await logged_in(sim)
    sim.start_call("answered", hold_time=10.0)
    await client.quiet(idle=0.15)
    assert len(sim.active_channels()) == 2
    restart = asyncio.create_task(sim.restart(downtime=0.3))
    got = await client.until(lambda m: m.name == "Shutdown")
    await client.wait_eof()
    hangups = [m for m in got if m.name == "Hangup"]
    assert [(m["Cause"], m["Cause-txt"]) for m in hangups] == [("0", "Unknown")] * 2
    assert got[-1].headers == [
        ("Event", "Shutdown"),
        ("Privilege", "system,all"),
        ("Shutdown", "Cleanly"),
        ("Restart", "True"),
    ]
    assert sim.active_channels() == []
    await asyncio.sleep(0.1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", sim.port)
    await restart
    again = await Client.connect(sim.port)
    await again.login()
    (booted,) = await again.until(lambda m: m.name == "FullyBooted")
    assert int(booted["Uptime"]) <= 1
    sim.start_call("busy")
    events = await again.quiet(idle=0.2)
    again.close()
    first = next(m for m in events if m.name == "Newchannel")
    assert first["Uniqueid"].endswith(".0")
    assert first["Channel"] == "Local/200@test-00000000;1"


async def test_drop_connections_keeps_calls(sim: SimulatedAsterisk) -> None:
    client = await logged_in(sim)
    sim.start_call("answered", hold_time=10.0)
    await client.quiet(idle=0.1)
    assert sim.sessions == 1
    await sim.drop_connections()
    await client.wait_eof()
    assert sim.sessions == 0
    assert len(sim.active_channels()) == 2


async def test_traffic_generator_rate_and_mix() -> None:
    config = SimulatorConfig(
        port=0,
        calls_per_second=200,
        hold_time=0.2,
        ring_time=0.02,
        seed=7,
        mix={"answered": 1, "busy": 1},
    )
    sim = SimulatedAsterisk(config)
    await sim.start()
    client = await logged_in(sim)
    got = await client.quiet(idle=0.3, limit=1.0)
    await sim.stop()
    started = sum(sim.stats.values())
    assert 100 <= started <= 320
    assert set(k for k, v in sim.stats.items() if v) == {"answered", "busy"}
    assert any(m.name == "Hangup" for m in got)


async def test_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        await SimulatedAsterisk(SimulatorConfig(host="0.0.0.0", port=0)).start()


def test_cli_refuses_non_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--listen", "0.0.0.0:5038"]) == 2
    err = capsys.readouterr().err
    assert "non-loopback" in err
    assert err.count("\n") == 1


async def test_slow_reader_is_logged_off() -> None:
    # Like Asterisk's 100 ms writetimeout: a session that stops reading is closed.
    config = SimulatorConfig(port=0, calls_per_second=1000, hold_time=0.5, seed=5)
    sim = SimulatedAsterisk(config)
    await sim.start()
    client = await logged_in(sim)  # then never read again: the StreamReader buffer fills up
    for _ in range(160):  # up to 8 s; usually well under 1 s
        if not sim.sessions:
            break
        await asyncio.sleep(0.05)
    await sim.stop()
    client.close()
    assert sim.sessions == 0
