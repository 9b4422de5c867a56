"""chan_sip peers and registrations as a real Asterisk 18.26.4 reports them (``fixtures/sip18``).

``trunk-down-sip``: the carrier's SIPp was killed at 5 s and restarted at 36.5 s (``PeerStatus``
Unreachable with ``Time: -1`` at 13.0 s, Reachable without ``Time`` at 37.0 s); the registrar's
was killed at 52.5 s and restarted at 129.1 s (``Registry`` Registered at 19.2 s, ``Request
Sent`` at 74.2 s and every 10 s after, Registered again at 131.7 s). chan_sip publishes
``Request Sent`` only when a REGISTER went unanswered for ``registertimeout`` (its
``sip_reg_timeout``); a refresh that succeeds shows nothing but the next ``Registered``.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import FIXTURES, FakeClock, ev, read_capture, value, wait_for
from test_permissions import (
    ExporterFactory,
    RecordedAsterisk,
    ServerFactory,
    listener_events,
    recorded_answers,
    run_recorded,
)

from ami_exporter.ami.protocol import AMIParser, Message
from ami_exporter.state import peers as peers_module
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.e2e

S = {"server": "test"}
TRUNK_DOWN = "sip18/trunk-down-sip.listener.raw"
# The registrar's port, from the recorded SIPshowregistry answer (Host, Port, Username).
REGISTRATION = "lab@127.0.0.1:5274"


def sip_show_peer() -> dict[str, list[bytes]]:
    """The recorded SIPshowpeer (Peer: carrier) and PJSIPShowEndpoint (Endpoint: pjcarrier)
    answers of commands.admin."""
    admin = recorded_answers("sip18/commands.admin")
    return {name: admin[name] for name in ("sipshowpeer", "pjsipshowendpoint")}


def sip_peers_status(answers: str) -> dict[str, str]:
    text = b"".join(recorded_answers(answers)["sippeers"]).decode()
    return dict(re.findall(r"ObjectName: (\S+)\r\n(?:.*\r\n)*?Status: ([^\r\n]*)", text))


@pytest.mark.parametrize("events_after_polls", [False, True])
@pytest.mark.parametrize("user", ["exporter", "leastpriv"])
async def test_trunk_down_sip_with_the_recorded_answers(
    ami_server: ServerFactory, exporter: ExporterFactory, user: str, events_after_polls: bool
) -> None:
    answers = f"sip18/answers.{user}"
    asterisk = RecordedAsterisk(
        answers, listener_events(TRUNK_DOWN), events_after_polls, extra=sip_show_peer()
    )
    exp = await run_recorded(ami_server, exporter, asterisk)
    # Reachable came without Time: one SIPshowpeer for the carrier gives its round trip.
    await wait_for(lambda: "SIPshowpeer" in asterisk.sent, what="the SIPshowpeer re-poll")
    if user == "exporter":
        await wait_for(lambda: "PJSIPShowEndpoint" in asterisk.sent, what="the endpoint detail")
    await exp.client._request("Ping", timeout=5)
    assert asterisk.server is not None
    asked = [m for m in asterisk.server.received if m.name == "SIPshowpeer"]
    assert [m.get("Peer") for m in asked] == ["carrier"]
    m = await exp.scrape()
    assert sip_peers_status(answers) == {
        "carrier": "OK (1 ms)",
        "carrier2": "OK (1 ms)",
        "self": "Unmonitored",
    }
    assert value(m, "asterisk_peer_up", **S, tech="SIP", peer="carrier") == 1
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="SIP", peer="carrier") == 0.001
    assert value(m, "asterisk_peer_up", **S, tech="SIP", peer="carrier2") == 1
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="SIP", peer="carrier2") == 0.001
    # qualify = no: Asterisk checks nothing, so neither up nor down.
    assert value(m, "asterisk_peer_up", **S, tech="SIP", peer="self") is None
    assert value(m, "asterisk_peers", **S, tech="SIP", status="unmonitored") == 1
    assert value(m, "asterisk_peer_up", **S, tech="IAX2", peer="iaxtrunk") is None
    assert value(m, "asterisk_peers", **S, tech="IAX2", status="unmonitored") == 1
    # The PJSIP endpoint (qualified, "Not in use") only where the user may list endpoints.
    pjcarrier = value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="pjcarrier")
    assert pjcarrier == (1 if user == "exporter" else None)
    # No event gave its round trip: its detail did (ContactStatusDetail RoundtripUsec 462).
    rtt = value(m, "asterisk_peer_rtt_seconds", **S, tech="PJSIP", peer="pjcarrier")
    assert rtt == (462e-6 if user == "exporter" else None)
    assert value(m, "asterisk_registration_up", **S, tech="SIP", registration=REGISTRATION) == 1
    registrations = [k for (n, k) in m if n == "asterisk_registration_up"]
    assert len(registrations) == 1  # the event's "lab@127.0.0.1" folded into the polled one


def _message_times() -> list[tuple[float, Message]]:
    """Each message of the listener capture with the time its last byte arrived (.jsonl)."""
    records = [
        json.loads(line) for line in (FIXTURES / "sip18/trunk-down-sip.listener.jsonl").open()
    ]
    raw = read_capture(TRUNK_DOWN)
    parser = AMIParser(expect_banner=True)
    out: list[tuple[float, Message]] = []
    offset = 0
    for record in records:
        if record["dir"] != "S>C":
            continue
        chunk = raw[offset : offset + record["len"]]
        offset += record["len"]
        out.extend((record["t"], msg) for msg in parser.feed(chunk))
    assert offset == len(raw)
    return out


def test_a_refresh_that_never_completes_on_the_captures_timeline() -> None:
    clock = FakeClock(0.0)
    state = ServerState("test", clock=clock)
    # The exporter's first poll (the recorded answer: State Registered, Refresh 45).
    answer = b"".join(
        b + b"\r\n\r\n" for b in recorded_answers("sip18/answers.exporter")["sipshowregistry"]
    )
    items = [m for m in AMIParser(expect_banner=False).feed(answer) if m.name == "RegistryEntry"]
    refresh = float(items[0]["Refresh"])
    state.peers.apply_registry_list(items)
    timeline = [(t, msg) for t, msg in _message_times() if msg.name == "Registry"]
    statuses = [(round(t, 1), msg["Status"]) for t, msg in timeline]
    assert statuses[0] == (19.2, "Registered") and statuses[-1] == (131.7, "Registered")
    assert {s for _, s in statuses[1:-1]} == {"Request Sent"} and len(statuses) == 8
    registered_at = timeline[0][0]
    # Down once the registrar's expiry has passed: chan_sip refreshes 15 s before it.
    deadline = registered_at + refresh + 15.0
    registration = state.peers.registrations[("SIP", REGISTRATION)]
    seen: list[tuple[float, bool]] = []
    probes: list[tuple[float, bool]] = []
    for t, msg in timeline:
        clock.now = t
        state.handle_event(msg)
        seen.append((round(t, 1), state.peers.registration_up(registration)))
        if msg["Status"] == "Request Sent" and not probes:  # between events: read at scrape
            for probe in (deadline - 0.01, deadline):
                clock.now = probe
                probes.append((round(probe, 2), state.peers.registration_up(registration)))
    assert seen == [
        (19.2, True),
        (74.2, True),  # the refresh's first attempt timed out: the registration still holds
        (84.2, False),
        (94.2, False),
        (104.2, False),
        (114.2, False),
        (124.2, False),
        (131.7, True),
    ]
    assert probes == [(79.2, True), (79.21, False)] or probes == [(79.19, True), (79.2, False)]


def test_two_registrations_to_one_host_on_two_ports_do_not_collide() -> None:
    state = ServerState("test")
    answer = b"".join(
        b + b"\r\n\r\n" for b in recorded_answers("sip18/answers.exporter")["sipshowregistry"]
    )
    entry = next(
        m for m in AMIParser(expect_banner=False).feed(answer) if m.name == "RegistryEntry"
    )
    other = Message(
        "event",
        "RegistryEntry",
        [(k, {"Port": "5275", "State": "Rejected"}.get(k, v)) for k, v in entry.headers],
    )
    state.peers.apply_registry_list([entry, other])
    up = {
        name: state.peers.registration_up(r) for (_, name), r in state.peers.registrations.items()
    }
    assert up == {"lab@127.0.0.1:5274": True, "lab@127.0.0.1:5275": False}
    # A Registry event names the host, not the port: neither is guessed; a re-poll is asked.
    state.handle_event(
        ev("Registry", ChannelType="SIP", Username="lab", Domain="127.0.0.1", Status="Rejected")
    )
    assert {
        name: state.peers.registration_up(r) for (_, name), r in state.peers.registrations.items()
    } == up
    assert state.peers.pop_wanted() == ("SIPshowregistry", "")


def test_sip_show_peer_re_polls_are_rate_limited() -> None:
    clock = FakeClock(0.0)
    state = ServerState("test", clock=clock)
    for i in range(10):  # a peer flapping every second
        clock.now = float(i)
        for status in ("Unreachable", "Reachable"):
            state.handle_event(
                ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus=status)
            )
    assert state.peers.pop_wanted() == ("SIPshowpeer", "carrier")
    assert state.peers.pop_wanted() is None  # once per REFRESH_PEER_INTERVAL
    clock.now = peers_module.REFRESH_PEER_INTERVAL
    state.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Unreachable")
    )
    state.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Reachable")
    )
    assert state.peers.pop_wanted() == ("SIPshowpeer", "carrier")
    # Agent phones (all digits) are not selected: their round trip is not asked for.
    state.handle_event(ev("PeerStatus", ChannelType="SIP", Peer="SIP/1001", PeerStatus="Reachable"))
    assert state.peers.pop_wanted() is None
    # A 1.8/11 PeerStatus carries Time: nothing to ask.
    clock.now += peers_module.REFRESH_PEER_INTERVAL
    state.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Unreachable")
    )
    state.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Reachable", Time="12")
    )
    assert state.peers.pop_wanted() is None
    assert state.peers.peers[("SIP", "carrier")].rtt == 0.012


def test_dynamic_peers_without_qualify_are_up_while_registered() -> None:
    state = ServerState("test")
    state.configure(peers_include=".")
    fields = dict(
        re.findall(
            r"(\w+): ([^\r\n]*)", recorded_answers("sip18/answers.exporter")["sippeers"][3].decode()
        )
    )
    assert fields["ObjectName"] == "self" and fields["Status"] == "Unmonitored"

    def entry(name: str, dynamic: str, address: str) -> Message:
        changes = {"ObjectName": name, "Dynamic": dynamic, "IPaddress": address}
        return Message(
            "event",
            "PeerEntry",
            [
                ("Event", "PeerEntry"),
                *((k, changes.get(k, v)) for k, v in fields.items() if k != "Event"),
            ],
        )

    state.peers.apply_peer_list(
        [
            entry("self", "no", "127.0.0.1"),
            entry("1001", "yes", "10.0.0.5"),
            entry("1002", "yes", "-none-"),
        ]
    )
    got = {name: (p.status, p.up) for (_, name), p in state.peers.peers.items()}
    assert got == {
        "self": ("unmonitored", None),
        "1001": ("registered", True),
        "1002": ("unregistered", False),
    }
