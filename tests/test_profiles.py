"""The exporter against every simulated Asterisk version (11, 13, 16, 18, 20, 22).

The same traffic (one call of each outcome) must give the same numbers in every dialect:
calls, hangups by cause, originates by result, dials, channels created and live. The
originate reasons of Asterisk 11 follow its pre-12.3 derivation (reference 3.6) and are checked
separately. Each profile's own wire quirks (banner, FullyBooted, Dial SubEvent, CoreShowChannel
keys, missing modules) are checked on the raw stream.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import Samples, running_exporter, server_config, value, wait_for

from ami_exporter.ami.protocol import AMIParser, Message, serialize
from ami_simulator.profiles import PROFILES, VERSIONS
from ami_simulator.server import OUTCOMES, SimulatedAsterisk, SimulatorConfig

FAMILIES = (
    "asterisk_hangups_total",
    "asterisk_originates_total",
    "asterisk_dials_total",
    "asterisk_channels_created_total",
    "asterisk_active_channels",
    "asterisk_active_calls",
)


def simulator(version: str) -> SimulatedAsterisk:
    return SimulatedAsterisk(
        SimulatorConfig(
            port=0,
            calls_per_second=0,
            ring_time=0.05,
            auth_delay=0.05,
            seed=3,
            asterisk_version=version,
        )
    )


def pick(samples: Samples, *, by_result_only: bool = False) -> dict[tuple[str, ...], float]:
    """The call metrics of a scrape, keyed by name and labels (server dropped)."""
    out: dict[tuple[str, ...], float] = {}
    for (name, labels), v in samples.items():
        if name not in FAMILIES:
            continue
        rest = dict(labels)
        rest.pop("server", None)
        if by_result_only and name == "asterisk_originates_total":
            rest.pop("reason", None)
        key = (name, *sorted(f"{k}={x}" for k, x in rest.items()))
        out[key] = out.get(key, 0.0) + v
    return out


async def run_traffic(version: str) -> tuple[Samples, Samples]:
    """(scrape while an answered call is up, scrape after every outcome has ended)."""
    sim = simulator(version)
    await sim.start()
    try:
        config = server_config(sim.port, queues=True)
        async with running_exporter(config) as exp:
            await wait_for(lambda: exp.state.up and exp.state.version != "", what="login")
            sim.start_call("answered", hold_time=1.5)
            await wait_for(lambda: exp.state.channels_by_state.get("up", 0) == 2, what="answer")
            during = await exp.scrape()
            for outcome in OUTCOMES:
                sim.start_call(outcome, hold_time=0.05)
            await wait_for(
                lambda: (
                    not sim._calls
                    and not exp.state.channels
                    and sum(exp.state.originates.values()) == len(OUTCOMES) + 1
                ),
                timeout=10,
                what="every call to end",
            )
            await asyncio.sleep(0.1)
            after = await exp.scrape()
    finally:
        await sim.stop()
    return during, after


async def test_every_profile_gives_the_same_numbers() -> None:
    results = {version: await run_traffic(version) for version in VERSIONS}
    ref_during, ref_after = results["22"]
    assert value(ref_during, "asterisk_active_channels", server="test", tech="Local") == 2
    assert value(ref_during, "asterisk_active_calls", server="test") == 1
    assert value(ref_after, "asterisk_dials_total", server="test", status="answer") == 2
    assert value(ref_after, "asterisk_dials_total", server="test", status="busy") == 1
    for version, (during, after) in results.items():
        assert pick(during) == pick(ref_during), version
        old = PROFILES[version].old_events
        assert pick(after, by_result_only=old) == pick(ref_after, by_result_only=old), version
        info = [labels for (name, labels) in after if name == "asterisk_info"]
        assert info and ("version", PROFILES[version].asterisk_version) in info[0], version
    # Asterisk 11: a Local originate that ends before answer is reason 1 whatever the cause.
    after_11 = results["11"][1]
    assert (
        value(
            after_11, "asterisk_originates_total", server="test", result="failure", reason="hangup"
        )
        == 3
    )
    assert (
        value(
            after_11, "asterisk_originates_total", server="test", result="failure", reason="failed"
        )
        == 1
    )
    assert (
        value(
            ref_after, "asterisk_originates_total", server="test", result="failure", reason="failed"
        )
        == 4
    )


class RawClient:
    """A bare AMI session on the simulator, to look at the wire of each profile."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = AMIParser()
        self.messages: list[Message] = []

    async def read_until(self, predicate: object, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not any(predicate(m) for m in self.messages):  # type: ignore[operator]
                data = await self.reader.read(65536)
                assert data, "connection closed"
                self.messages += self.parser.feed(data)

        await asyncio.wait_for(loop(), timeout)

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write(serialize(pairs))


@pytest.mark.parametrize("version", VERSIONS)
async def test_profile_wire_dialect(version: str) -> None:
    profile = PROFILES[version]
    sim = simulator(version)
    await sim.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        client = RawClient(reader, writer)
        client.send(("Action", "Login"), ("Username", "exporter"), ("Secret", "s3cret"))
        await client.read_until(lambda m: m.name == "FullyBooted")
        assert client.parser.banner == f"Asterisk Call Manager/{profile.ami_version}"
        booted = next(m for m in client.messages if m.name == "FullyBooted")
        assert ("Uptime" in booted) == (int(version) >= 16)
        sim.start_call("busy")
        await client.read_until(lambda m: m.name == "OriginateResponse")
        await client.read_until(lambda m: m.name == "Hangup" and m.get("Channel", "")[-2:] == ";1")
        names = {m.name for m in client.messages}
        if version == "11":
            assert {"Dial"} <= names and not names & {"DialBegin", "DialEnd", "SuccessfulAuth"}
            ends = [m for m in client.messages if m.name == "Dial" and m["SubEvent"] == "End"]
            assert [m["DialStatus"] for m in ends] == ["BUSY"]
            assert not any("Linkedid" in m for m in client.messages if m.kind == "event")
            hangup = next(m for m in client.messages if m.name == "Hangup")
            assert [k for k, _ in hangup.headers][2:4] == ["Channel", "Uniqueid"]
        else:
            assert {"DialBegin", "DialEnd", "SuccessfulAuth"} <= names and "Dial" not in names
            assert all("Linkedid" in m for m in client.messages if m.name == "Newchannel")
        newexten = next(m for m in client.messages if m.name == "Newexten")
        assert newexten["Privilege"] == ("call,all" if version == "13" else "dialplan,all")
        # a held call in CoreShowChannels, in the version's key set
        sim.start_call("answered", hold_time=5)
        await client.read_until(lambda m: m.name == "Newstate")
        client.send(("Action", "CoreShowChannels"), ("ActionID", "csc"))
        await client.read_until(lambda m: m.name == "CoreShowChannelsComplete")
        items = [m for m in client.messages if m.name == "CoreShowChannel"]
        assert items
        keys = {k for k, _ in items[0].headers}
        if version == "11":
            assert {"UniqueID", "CallerIDnum", "BridgedChannel"} <= keys and "Linkedid" not in keys
            complete = next(m for m in client.messages if m.name == "CoreShowChannelsComplete")
            assert [k for k, _ in complete.headers][-1] == "ActionID"
        else:
            assert {"Uniqueid", "Linkedid", "BridgeId"} <= keys
        # the modules each version has
        for action_name in ("SIPpeers", "PJSIPShowContacts", "IAXpeerlist"):
            client.send(("Action", action_name), ("ActionID", action_name))
            await client.read_until(
                lambda m, a=action_name: m.kind == "response" and m.get("ActionID") == a
            )
            response = next(
                m
                for m in client.messages
                if m.kind == "response" and m.get("ActionID") == action_name
            )
            present = {"SIPpeers": profile.chan_sip, "PJSIPShowContacts": profile.pjsip}.get(
                action_name, True
            )
            assert (response["Response"] == "Success") == present, (version, action_name)
        writer.close()
    finally:
        await sim.stop()
