"""The simulator's PJSIP carriers over real sockets, checked against the Asterisk 22 captures.

Every event and response the simulator sends with ``trunks`` > 0 must have the header names, in
the order, of the same message in ``tests/fixtures/pjsip`` (computed here from the raw bytes),
and the privileges; the outcomes per carrier behaviour must be the capture's; the recorded
answers (ListCommands for both users, Permission denied, No Contacts found, unknown commands)
come back byte for byte; the list answers follow the live state (reachability, channels,
registration, queue callers).
"""

from __future__ import annotations

import asyncio
import gzip
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from test_pjsip_scripts import SCRIPT_OF_PREFIX, outcome_table

from ami_exporter.state.vicidial import call_type
from ami_simulator.server import TRUNK_SCRIPTS, SimulatedAsterisk, SimulatorConfig

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "pjsip"
TOOL = ROOT / "tools" / "generate_pjsip_scripts.py"
Pairs = list[tuple[str, str]]
FAST = {
    "port": 0,
    "calls_per_second": 0,
    "auth_delay": 0.05,
    "hold_time": 0.3,
    "ring_time": 0.05,
    "post_dial_delay": 0.05,
    "ring_timeout": 0.15,
    "queue_wait": 0.2,
    "rtcp_interval": 0.1,
    "seed": 11,
}


# -- the captures, read without the project's parser ------------------------------------------


def split(data: bytes) -> list[Pairs]:
    text = data.decode("utf-8", "surrogateescape")
    out: list[Pairs] = []
    for block in text.split("\r\n\r\n"):
        if block.strip():
            pairs = [line.partition(": ") for line in block.split("\r\n")]
            # A header without a value may lack the space ("Key:").
            out.append([(k, v) if sep else (k.removesuffix(":"), "") for k, sep, v in pairs])
    return out


def raw(name: str) -> bytes:
    data = (FIXTURES / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def messages(name: str) -> list[Pairs]:
    return split(raw(name).split(b"\r\n", 1)[1])  # the banner line first


def kind(message: Pairs) -> str:
    key, value = message[0]
    return value if key == "Event" else f"Response:{value}"


def first(message: Pairs, key: str) -> str | None:
    return next((v for k, v in message if k == key), None)


def captured_shapes() -> tuple[dict[str, set[tuple[str, ...]]], dict[str, set[str]]]:
    """Every header-name list and Privilege each message kind has in the PJSIP captures."""
    shapes: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    privileges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(FIXTURES.glob("*.raw*")):
        for m in messages(path.name):
            shapes[kind(m)].add(tuple(k for k, _ in m))
            privilege = first(m, "Privilege")
            if privilege is not None:
                privileges[kind(m)].add(privilege)
    return shapes, privileges


SHAPES, PRIVILEGES = captured_shapes()


def recorded_answer(name: str, action_id: str) -> bytes:
    """The bytes of one recorded answer: the response and its list events, by ActionID."""
    parts = [m for m in messages(name) if first(m, "ActionID") == action_id]
    return b"".join(b"".join(f"{k}: {v}\r\n".encode() for k, v in m) + b"\r\n" for m in parts)


# -- a raw client -----------------------------------------------------------------------------


class Client:
    """A raw AMI client that splits what it reads on blank lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""
        self.pending: list[Pairs] = []

    @classmethod
    async def login(cls, sim: SimulatedAsterisk, user: str = "exporter") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        client = cls(reader, writer)
        await reader.readline()  # the banner
        client.send(("Action", "Login"), ("Username", user), ("Secret", "s3cret"))
        await client.until(lambda m: kind(m) == "Response:Success")
        return client

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write(serialized(list(pairs)))

    async def until(self, done: Callable[[Pairs], bool], timeout: float = 5.0) -> list[Pairs]:
        """Messages up to and including the first ``done`` one."""
        got: list[Pairs] = []
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.pending):
                if done(m):
                    got += self.pending[: i + 1]
                    self.pending = self.pending[i + 1 :]
                    return got
            got += self.pending
            self.pending = []
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; last got {[kind(m) for m in got][-20:]}"
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except TimeoutError:
                pytest.fail(f"timed out; last got {[kind(m) for m in got][-20:]}")
            assert data, "connection closed"
            head, sep, self.buffer = (self.buffer + data).rpartition(b"\r\n\r\n")
            self.pending = split(head + sep) if sep else []

    async def quiet(self, idle: float = 0.3) -> list[Pairs]:
        """Everything that arrives until nothing has for ``idle`` seconds."""
        got, self.pending = self.pending, []
        while True:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), idle)
            except TimeoutError:
                return got
            assert data, "connection closed"
            head, sep, self.buffer = (self.buffer + data).rpartition(b"\r\n\r\n")
            got += split(head + sep) if sep else []

    async def collect(self, seconds: float) -> list[Pairs]:
        """Everything that arrives in the next ``seconds``."""
        got, self.pending = self.pending, []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except TimeoutError:
                break
            assert data, "connection closed"
            head, sep, self.buffer = (self.buffer + data).rpartition(b"\r\n\r\n")
            got += split(head + sep) if sep else []
        return got

    async def answer(self, *pairs: tuple[str, str]) -> list[Pairs]:
        """Send an action with ActionID ``t``: its response and list events (others skipped)."""
        self.send(*pairs, ("ActionID", "t"))

        def last(m: Pairs) -> bool:
            if first(m, "ActionID") != "t":
                return False
            return first(m, "EventList") == "Complete" or (
                kind(m).startswith("Response:") and first(m, "EventList") != "start"
            )

        return [m for m in await self.until(last) if first(m, "ActionID") == "t"]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[SimulatedAsterisk]]]:
    started: list[SimulatedAsterisk] = []

    async def make(**overrides: Any) -> SimulatedAsterisk:
        sim = SimulatedAsterisk(SimulatorConfig(**(FAST | overrides)))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


def serialized(message: Pairs) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in message) + b"\r\n"


def check_shape(message: Pairs) -> None:
    name = kind(message)
    assert name in SHAPES, f"{name}: not in the PJSIP captures"
    assert tuple(k for k, _ in message) in SHAPES[name], f"{name}: headers not as captured"
    privilege = first(message, "Privilege")
    if privilege is not None:
        assert privilege in PRIVILEGES[name], name


def outcome_of(events: list[Pairs]) -> dict[str, tuple[object, ...]]:
    """Per dialled number: (Hangup Cause, TechCause), DialEnd status, OriginateResponse."""
    channel_of: dict[str, str] = {}  # channel -> number
    out: dict[str, list[object]] = {}
    for m in events:
        name = kind(m)
        if name == "DialBegin":
            number = (first(m, "DialString") or "").partition("@")[0]
            channel_of[first(m, "DestChannel") or ""] = number
            out[number] = [None, None, None]
        channel = first(m, "Channel") or first(m, "DestChannel") or ""
        if name == "Hangup" and channel in channel_of:
            out[channel_of[channel]][0] = (first(m, "Cause"), first(m, "TechCause"))
        elif name == "DialEnd" and channel in channel_of:
            out[channel_of[channel]][1] = first(m, "DialStatus")
        elif name == "OriginateResponse":
            number = channel.removeprefix("PJSIP/").partition("@")[0]
            for chan, num in channel_of.items():
                if channel in (chan, f"PJSIP/{num}@" + channel.partition("@")[2]):
                    number = num
            if number in out:
                out[number][2] = (first(m, "Response"), first(m, "Reason"))
    return {number: tuple(values) for number, values in out.items()}


# -- calls ------------------------------------------------------------------------------------


async def test_every_trunk_message_has_a_captured_shape(start: Any) -> None:
    """Every call behaviour, a call to a carrier that is down, flaps, every PJSIP answer."""
    sim = await start(trunks=2)
    client = await Client.login(sim)
    for name in TRUNK_SCRIPTS:
        sim.start_trunk_call(name, "carrier")
    assert sim.trunks is not None
    sim.trunks.set_reachable("carrier2", False)
    sim.start_trunk_call("busy", "carrier2")  # the carrier is down: no channel at all
    sim.trunks.set_registered(False)
    sim.trunks.set_reachable("carrier2", True)
    sim.trunks.set_registered(True)
    events = await client.quiet(idle=1.0)
    answers: list[Pairs] = []
    for action in (
        "ListCommands",
        "PJSIPShowEndpoints",
        "PJSIPShowAors",
        "PJSIPShowContacts",
        "PJSIPShowRegistrationsOutbound",
        "QueueStatus",
        "QueueSummary",
        "SIPpeers",
        "CoreShowChannels",
    ):
        answers += await client.answer(("Action", action))
    answers += await client.answer(("Action", "PJSIPShowEndpoint"), ("Endpoint", "carrier"))
    client.close()
    seen = Counter(kind(m) for m in events + answers)
    for m in events + answers:
        if kind(m) != "Response:Success" or first(m, "EventList") is not None:
            check_shape(m)  # ListCommands' answer is checked byte for byte elsewhere
    for name in ("RTCPSent", "RTCPReceived", "QueueCallerJoin", "QueueCallerAbandon"):
        assert seen[name] > 0, name
    for name in ("AgentConnect", "AgentComplete", "ContactStatus", "Registry", "EndpointList"):
        assert seen[name] > 0, name
    # Nothing left over: every channel hung up, no caller waiting.
    assert sim.active_channels() == []


async def test_outcomes_are_the_captures(start: Any) -> None:
    """Per carrier behaviour: Hangup Cause/TechCause, DialEnd (none for a ring-out), and
    OriginateResponse (Reason 0 for the SIP failures, 3 for a ring-out) as in trunk-mix."""
    expected = outcome_table()  # from the raw trunk-mix bytes
    sim = await start(trunks=1)
    client = await Client.login(sim)
    for name in SCRIPT_OF_PREFIX.values():
        sim.start_trunk_call(name)
    got = outcome_of(await client.quiet(idle=1.0))
    client.close()
    assert len(got) == len(SCRIPT_OF_PREFIX)
    for number, outcome in got.items():
        prefix = number[:3] if number[:3] in SCRIPT_OF_PREFIX else number[0]
        assert {outcome} == expected[prefix], (SCRIPT_OF_PREFIX[prefix], outcome)


async def test_channels_directions_and_numbering(start: Any) -> None:
    """PJSIP/<endpoint>-<8 hex> numbered by chan_pjsip's own counter; outbound ChannelState 0,
    inbound 4; a carrier that is down gets an OriginateResponse and no channel."""
    sim = await start(trunks=3)
    client = await Client.login(sim)
    sim.start_trunk_call("answered", "carrier")
    sim.start_trunk_call("inbound", "carrier3")
    assert sim.trunks is not None
    sim.trunks.set_reachable("carrier2", False)
    sim.start_trunk_call("answered", "carrier2")
    events = await client.quiet(idle=1.0)
    client.close()
    new = [
        (first(m, "Channel"), first(m, "ChannelState")) for m in events if kind(m) == "Newchannel"
    ]
    assert new == [("PJSIP/carrier-00000000", "0"), ("PJSIP/carrier3-00000001", "4")]
    failed = [
        m for m in events if kind(m) == "OriginateResponse" and first(m, "Response") == "Failure"
    ]
    assert [(first(m, "Channel"), first(m, "Reason"), first(m, "Uniqueid")) for m in failed] == [
        ("PJSIP/2000003@carrier2", "0", "<unknown>")
    ]
    assert sim.trunk_stats == {"answered": 1, "inbound": 1, "trunk_down": 1}


async def test_rtcp_reports_repeat_with_per_carrier_quality(start: Any) -> None:
    """RTCPSent and RTCPReceived every interval while the call is up; counters grow; the
    degraded carrier2 loses more and jitters more than carrier; MES in 0..100."""
    sim = await start(trunks=2, hold_time=1.2, rtcp_interval=0.05)
    client = await Client.login(sim)
    for _ in range(3):
        sim.start_trunk_call("answered", "carrier")
        sim.start_trunk_call("answered", "carrier2")
    events = await client.quiet(idle=1.5)
    client.close()
    reports: dict[str, list[Pairs]] = defaultdict(list)
    for m in events:
        if kind(m) == "RTCPSent":
            reports[(first(m, "Channel") or "").split("-")[0]].append(m)
    assert set(reports) == {"PJSIP/carrier", "PJSIP/carrier2"}

    def mean(trunk: str, key: str) -> float:
        return statistics.mean(int(first(m, key) or 0) for m in reports[trunk])

    for trunk, got in reports.items():
        assert len(got) >= 9, trunk  # 3 calls x about 1.2 s / 0.05 s, at least a few each
        assert all(0 <= int(first(m, "Report0FractionLost") or -1) <= 255 for m in got)
        assert all(0.0 <= float(first(m, "MES") or -1) <= 100.0 for m in got)
    assert mean("PJSIP/carrier2", "Report0FractionLost") > mean(
        "PJSIP/carrier", "Report0FractionLost"
    )
    assert mean("PJSIP/carrier2", "Report0IAJitter") > mean("PJSIP/carrier", "Report0IAJitter")
    received = [m for m in events if kind(m) == "RTCPReceived"]
    assert received and all(float(first(m, "RTT") or 0) > 0 for m in received)
    for trunk in reports:  # per call, SentPackets grows report after report
        by_call: dict[str, list[int]] = defaultdict(list)
        for m in reports[trunk]:
            by_call[first(m, "Channel") or ""].append(int(first(m, "SentPackets") or 0))
        assert all(p == sorted(p) and len(set(p)) == len(p) for p in by_call.values())
    # No report after the channel's Hangup.
    hung: set[str] = set()
    for m in events:
        if kind(m) == "Hangup":
            hung.add(first(m, "Channel") or "")
        elif kind(m).startswith("RTCP"):
            assert first(m, "Channel") not in hung


async def test_queue_events_and_live_queue_answers(start: Any) -> None:
    """A caller waits (QueueStatus lists it, QueueSummary counts it), then an agent answers:
    AgentConnect HoldTime, AgentComplete TalkTime; another abandons: QueueCallerAbandon."""
    sim = await start(trunks=1, queue_wait=1.5, hold_time=0.3)
    client = await Client.login(sim)
    sim.start_trunk_call("queue_answered")
    await client.until(lambda m: kind(m) == "QueueCallerJoin")
    status = await client.answer(("Action", "QueueStatus"))
    summary = await client.answer(("Action", "QueueSummary"))
    entries = [m for m in status if kind(m) == "QueueEntry"]
    assert [first(m, "Position") for m in entries] == ["1"]
    assert first(entries[0], "Channel") == "PJSIP/carrier-00000000"
    (line,) = [m for m in summary if kind(m) == "QueueSummary"]
    assert first(line, "Callers") == "1"
    events = await client.until(lambda m: kind(m) == "Hangup", timeout=10)
    connect = next(m for m in events if kind(m) == "AgentConnect")
    complete = next(m for m in events if kind(m) == "AgentComplete")
    assert int(first(connect, "HoldTime") or -1) >= 0
    assert int(first(complete, "TalkTime") or -1) >= 0
    sim.start_trunk_call("queue_abandoned")
    events = await client.until(lambda m: kind(m) == "Hangup", timeout=10)
    assert any(kind(m) == "QueueCallerAbandon" for m in events)
    (params,) = [
        m for m in await client.answer(("Action", "QueueStatus")) if kind(m) == "QueueParams"
    ]
    client.close()
    assert (first(params, "Calls"), first(params, "Completed"), first(params, "Abandoned")) == (
        "0",
        "1",
        "1",
    )


# -- the recorded answers ---------------------------------------------------------------------


@pytest.mark.parametrize(("user", "write"), [("exporter", None), ("leastpriv", "reporting")])
async def test_recorded_answers_byte_for_byte(start: Any, user: str, write: str | None) -> None:
    """ListCommands per user, Permission denied (leastpriv: PJSIPShowEndpoints/Aors/Contacts),
    No Contacts found, and Invalid/unknown command for SIPpeers/SIPshowregistry/IAXpeerlist."""
    extra = {} if write is None else {"user_write": write}
    sim = await start(trunks=2, **extra)
    client = await Client.login(sim)
    sent = [
        m
        for m in split(raw(f"answers.{user}.sent"))
        if first(
            m,
            "ActionID",
        )
        != "l"
    ]
    for action_id, action in (
        ("a-0", "ListCommands"),
        ("a-4", "SIPpeers"),
        ("a-5", "SIPshowregistry"),
        ("a-6", "IAXpeerlist"),
        ("a-9", "PJSIPShowContacts"),
    ) + ((("a-7", "PJSIPShowEndpoints"), ("a-8", "PJSIPShowAors")) if write else ()):
        assert any(first(m, "Action") == action for m in sent)
        client.send(("Action", action), ("ActionID", action_id))
        got = (await client.until(lambda m, a=action_id: first(m, "ActionID") == a))[-1]
        assert serialized(got) == recorded_answer(f"answers.{user}.raw", action_id), action
    client.close()


async def test_list_answers_follow_the_live_state(start: Any) -> None:
    sim = await start(trunks=2, hold_time=3.0)
    client = await Client.login(sim)
    sim.start_trunk_call("answered", "carrier")
    await client.until(lambda m: kind(m) == "DialEnd")
    assert sim.trunks is not None
    sim.trunks.set_reachable("carrier2", False)
    sim.trunks.set_registered(False)
    endpoints = {
        first(m, "ObjectName"): (first(m, "DeviceState"), first(m, "ActiveChannels"))
        for m in await client.answer(("Action", "PJSIPShowEndpoints"))
        if kind(m) == "EndpointList"
    }
    assert endpoints == {"carrier": ("In use", "1"), "carrier2": ("Unavailable", "0")}
    channels = await client.answer(("Action", "CoreShowChannels"))
    for m in channels:
        check_shape(m)
    live = [first(m, "Channel") for m in channels if kind(m) == "CoreShowChannel"]
    assert live == ["PJSIP/carrier-00000000"]
    detail = await client.answer(("Action", "PJSIPShowEndpoint"), ("Endpoint", "carrier2"))
    assert [kind(m) for m in detail] == [
        kind(m) for m in split(recorded_answer("commands.admin.raw", "adm-3"))
    ]
    (contact,) = [m for m in detail if kind(m) == "ContactStatusDetail"]
    assert (first(contact, "Status"), first(contact, "URI")) == (
        "Unreachable",
        "sip:127.0.0.1:5072",
    )
    registrations = await client.answer(("Action", "PJSIPShowRegistrationsOutbound"))
    assert [
        first(m, "Status") for m in registrations if kind(m) == "OutboundRegistrationDetail"
    ] == ["Rejected"]
    assert first(registrations[-1], "NotRegistered") == "1"
    unknown = await client.answer(("Action", "PJSIPShowEndpoint"), ("Endpoint", "nobody"))
    assert kind(unknown[0]) == "Response:Error"
    client.close()


async def test_flaps_are_trunk_down_events(start: Any) -> None:
    """The carrier going down and back, and the registration failing and back, are the
    events trunk-down recorded, byte for byte (with the recorded round trip)."""
    sim = await start(trunks=1)
    client = await Client.login(sim)
    assert sim.trunks is not None
    sim.trunks.set_reachable("carrier", False)
    sim.trunks.set_reachable("carrier", True, rtt_usec=1028)
    sim.trunks.set_registered(True)
    sim.trunks.set_registered(False)
    sim.trunks.set_registered(True)
    names = ("PeerStatus", "ContactStatus", "DeviceStateChange", "Registry")
    got = [m for m in await client.quiet(idle=0.3) if kind(m) in names]
    client.close()
    recorded = [m for m in messages("trunk-down.listener.raw") if kind(m) in names]
    # trunk-down: down, up, then the registrar's Registered, Rejected, Registered; a call's
    # own device states (RINGING, INUSE...) come between, which the simulator leaves out.
    flaps = [m for m in recorded if first(m, "State") not in ("RINGING", "INUSE")]
    recorded = flaps[:7] + [m for m in flaps[7:] if kind(m) == "Registry"]
    assert [serialized(m) for m in got] == [serialized(m) for m in recorded]


async def test_flap_task_and_64_trunks(start: Any) -> None:
    """Generated traffic over 64 carriers at 300 calls/s for a second, flaps on their own."""
    sim = await start(trunks=64, calls_per_second=300, flap_interval=0.1, hold_time=0.5)
    client = await Client.login(sim)
    events = await client.collect(1.0)
    client.close()
    trunks = {
        (first(m, "Channel") or "").rpartition("-")[0] for m in events if kind(m) == "Newchannel"
    }
    assert len(trunks) > 32
    assert trunks <= {"PJSIP/carrier"} | {f"PJSIP/carrier{i}" for i in range(2, 65)}
    assert any(kind(m) in ("ContactStatus", "Registry") for m in events)
    assert sum(sim.trunk_stats.values()) > 100


async def test_bad_trunk_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="Asterisk 22"):
        SimulatedAsterisk(SimulatorConfig(port=0, trunks=2, asterisk_version="18"))
    with pytest.raises(ValueError, match="trunk_mix"):
        SimulatedAsterisk(SimulatorConfig(port=0, trunks=2, trunk_mix={"nonsense": 1.0}))


def test_generator_check_mode(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = subprocess.run(
        [sys.executable, str(TOOL), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert stale.stdout.count("not what the generator makes") == len(TRUNK_SCRIPTS) + 3


async def test_demo_turns_every_feature_on() -> None:
    """--demo: carriers with the outcome mix, RTCP, the queue, VICIdial call IDs, and the
    exporter told to poll queues and read VICIdial call types."""
    from ami_exporter.cli.demo import DEMO_TRUNKS, demo_server

    async with demo_server() as server:
        assert (server.queues, server.vicidial) == (True, True)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        client = Client(reader, writer)
        await reader.readline()
        client.send(("Action", "Login"), ("Username", server.username), ("Secret", server.secret))
        await client.until(lambda m: kind(m) == "Response:Success")
        endpoints = await client.answer(("Action", "PJSIPShowEndpoints"))
        assert len([m for m in endpoints if kind(m) == "EndpointList"]) == DEMO_TRUNKS
        events = await client.until(lambda m: kind(m) == "RTCPSent", timeout=20)
        client.close()
    names = {first(m, "CallerIDName") for m in events if kind(m) == "NewCallerid"}
    # VICIdial's own call-ID shape (V + 19 digits), as the exporter recognises it
    assert names and all(call_type(name) == "auto_dial" for name in names), names
    assert any((first(m, "Channel") or "").startswith("PJSIP/carrier") for m in events)


async def test_restart_hangs_up_trunk_calls_and_empties_the_queue(start: Any) -> None:
    sim = await start(trunks=1, hold_time=10.0, queue_wait=10.0)
    client = await Client.login(sim)
    sim.start_trunk_call("answered")
    sim.start_trunk_call("queue_answered")
    await client.until(lambda m: kind(m) == "QueueCallerJoin")
    restart = asyncio.create_task(sim.restart(downtime=0.1))
    got = await client.until(lambda m: kind(m) == "Shutdown")
    await restart
    hangups = [m for m in got if kind(m) == "Hangup"]
    assert len(hangups) == 2
    for m in hangups:
        check_shape(m)
    devices = {first(m, "Device") for m in got if kind(m) == "DeviceStateChange"}
    assert devices == {"PJSIP/carrier"}
    assert sim.active_channels() == []
    assert sim.trunks is not None and sim.trunks.queue_state.callers == []
