"""PJSIP endpoints as a real Asterisk 22.10.1 reports them (``fixtures/pjsip``), and the
cardinality of the peer families.

``trunk-down``: the carrier's SIPp was killed and restarted (``ContactStatus``/``PeerStatus``
Unreachable, then Reachable, for ``carrier`` only); ``carrier2`` sent no event at all. Its
static AOR contact is not listed by ``PJSIPShowContacts`` (``No Contacts found``); only
``PJSIPShowEndpoints`` (write class ``system``) lists it, with its device state.
"""

from __future__ import annotations

import re

import pytest
from helpers import FakeClock, ev, read_capture, replay_events, samples_of, value, wait_for
from prometheus_client import generate_latest
from test_permissions import (
    ExporterFactory,
    RecordedAsterisk,
    ServerFactory,
    listener_events,
    recorded_answers,
    run_recorded,
)

from ami_exporter.ami.protocol import AMIParser, Message
from ami_exporter.ami.session import ActionResult
from ami_exporter.client.polls import poll_optional
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.e2e

S = {"server": "test"}
TRUNK_DOWN = "pjsip/trunk-down.listener.raw"


def endpoint_list(answers: str) -> dict[str, dict[str, str]]:
    """EndpointList items of a recorded answer: name -> fields (parsed here, by hand)."""
    out: dict[str, dict[str, str]] = {}
    for block in recorded_answers(answers)["pjsipshowendpoints"]:
        fields = dict(
            line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
            for line in block.decode().split("\r\n")
        )
        if fields.get("Event") == "EndpointList":
            out[fields["ObjectName"]] = fields
    return out


def aor_qualify(answers: str) -> dict[str, int]:
    text = b"".join(recorded_answers(answers)["pjsipshowaors"]).decode()
    names = re.findall(r"ObjectName: (\S+)", text)
    frequencies = [int(f) for f in re.findall(r"QualifyFrequency: (\d+)", text)]
    return dict(zip(names, frequencies, strict=True))


def final_contact_status(name: str) -> dict[str, str]:
    """Each endpoint's last ContactStatus in a listener capture, from the bytes."""
    out: dict[str, str] = {}
    for block in read_capture(name).split(b"\r\n\r\n"):
        if block.startswith(b"Event: ContactStatus"):
            fields = dict(line.split(": ", 1) for line in block.decode().split("\r\n")[1:])
            out[fields["EndpointName"]] = fields["ContactStatus"]
    return out


@pytest.mark.parametrize("events_after_polls", [False, True])
async def test_trunk_down_with_the_exporter_users_answers(
    ami_server: ServerFactory, exporter: ExporterFactory, events_after_polls: bool
) -> None:
    asterisk = RecordedAsterisk(
        "pjsip/answers.exporter", listener_events(TRUNK_DOWN), events_after_polls
    )
    exp = await run_recorded(ami_server, exporter, asterisk)
    m = await exp.scrape()
    # carrier qualified in the events; carrier2 never sent one: the endpoint list has it.
    assert final_contact_status(TRUNK_DOWN) == {"carrier": "Reachable"}
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier") == 1
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier2") == 1
    # The carrier's last qualify (RoundtripUsec 1028) after the restart, where the events
    # came after the poll; where the poll came last, it agreed and kept it.
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="PJSIP", peer="carrier") == 0.001028
    # Every endpoint, from the recorded list: qualified AORs follow the device state, the
    # others are not monitored (no asterisk_peer_up), an endpoint without AOR neither.
    endpoints = endpoint_list("pjsip/answers.exporter")
    qualify = aor_qualify("pjsip/answers.exporter")
    for name, fields in endpoints.items():
        got = value(m, "asterisk_peer_up", **S, tech="PJSIP", peer=name)
        if not fields["Aor"] or qualify[fields["Aor"]] == 0:
            assert got is None, name
        else:
            assert got == (0 if fields["DeviceState"] == "Unavailable" else 1), name
    peers = samples_of(m, "asterisk_peers")
    assert sum(peers.values()) == len(endpoints) == 9
    # The first reachable endpoint with no round trip known had its detail asked for: carrier2
    # where the events came first, carrier where the polls did. This server answers Permission
    # denied for what it has no recording of: the action is then skipped for the session.
    assert asterisk.server is not None
    details = [m.get("Endpoint") for m in asterisk.server.received if m.name == "PJSIPShowEndpoint"]
    assert details == (["carrier"] if events_after_polls else ["carrier2"])
    assert value(m, "asterisk_peers", **S, tech="PJSIP", status="unmonitored") == 3
    assert value(m, "asterisk_registration_up", **S, tech="PJSIP", registration="regtrunk") == 1


@pytest.mark.parametrize("events_after_polls", [False, True])
async def test_trunk_down_with_the_least_privileged_users_answers(
    ami_server: ServerFactory, exporter: ExporterFactory, events_after_polls: bool
) -> None:
    asterisk = RecordedAsterisk(
        "pjsip/answers.leastpriv", listener_events(TRUNK_DOWN), events_after_polls
    )
    exp = await run_recorded(ami_server, exporter, asterisk)
    m = await exp.scrape()
    # write = reporting: no endpoint list; carrier qualified in the events, carrier2 is unknown.
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier") == 1
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier2") is None
    assert value(m, "asterisk_peer_status_changes_total", **S, tech="PJSIP", peer="carrier") == 2
    assert value(m, "asterisk_registration_up", **S, tech="PJSIP", registration="regtrunk") == 1
    assert "PJSIPShowEndpoints" not in asterisk.sent


async def test_peer_series_are_not_exported_while_the_session_is_down(
    ami_server: ServerFactory, exporter: ExporterFactory
) -> None:
    asterisk = RecordedAsterisk("pjsip/answers.exporter", listener_events(TRUNK_DOWN))
    exp = await run_recorded(ami_server, exporter, asterisk)
    await exp.client.stop()
    await wait_for(lambda: not exp.state.up, what="the session down")
    m = await exp.scrape()
    for family in ("asterisk_peer_up", "asterisk_peer_rtt_seconds", "asterisk_peers"):
        assert not samples_of(m, family), family
    assert not samples_of(m, "asterisk_registration_up")
    # Counters stay.
    assert value(m, "asterisk_peer_status_changes_total", **S, tech="PJSIP", peer="carrier") == 2


def test_no_contacts_found_keeps_static_contacts_and_drops_registered_ones() -> None:
    state = ServerState("test")
    peers = state.peers
    state.handle_event(
        ev(
            "ContactStatus",
            URI="sip:127.0.0.1:5070",
            ContactStatus="Reachable",
            AOR="carrier",
            EndpointName="carrier",
            RoundtripUsec="1028",
        )
    )
    state.handle_event(
        ev(
            "ContactStatus",
            URI="sip:p@10.0.0.2",
            ContactStatus="Created",
            AOR="ph",
            EndpointName="ph",
        )
    )
    assert peers.peers[("PJSIP", "ph")].up
    peers.apply_contact_list([])  # "No Contacts found": no registered contact any more
    assert peers.peers[("PJSIP", "carrier")].status == "reachable"
    assert peers.peers[("PJSIP", "ph")].status == "unregistered"


def test_cardinality_of_ten_thousand_flapping_peers() -> None:
    """Issue 13: 10,000 peers through 8 statuses made up to 110k series. Now the per-peer
    series are the selected peers' (here 20 trunks; 10,000 numeric agent phones are not)."""
    clock = FakeClock()
    state = ServerState("test", clock=clock)
    state.record_session_up()
    statuses = ("Reachable", "Lagged", "Unreachable", "Registered", "Unregistered", "Unknown")
    names = [str(1000 + i) for i in range(10_000)] + [f"trunk{i}" for i in range(20)]
    for status in statuses:
        for name in names:
            state.handle_event(
                ev("PeerStatus", ChannelType="SIP", Peer=f"SIP/{name}", PeerStatus=status, Time="5")
            )
    text = generate_latest(build_registry([state])).decode()
    series = [line for line in text.splitlines() if line.startswith("asterisk_peer")]
    per_peer = [s for s in series if 'peer="' in s]
    assert len(per_peer) <= 3 * 20  # up, rtt, changes of the 20 trunks
    aggregated = [s for s in series if 'peer="' not in s]
    assert len(aggregated) <= 2 * 3 * 8 + 2  # (tech x status) twice, the two drop counters
    assert value_of(text, 'asterisk_peers{server="test",status="unknown",tech="SIP"}') == 10_020


def value_of(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_collector_peers_off_sends_no_peer_poll_and_exports_no_peer_series() -> None:
    state = ServerState("test")
    state.configure(peers=False)
    state.record_session_up()
    replay_events(state, TRUNK_DOWN)
    sent: list[str] = []
    failed = Message("response", "Error", [("Response", "Error"), ("Message", "whatever")])

    async def request(name: str, **kw: object) -> ActionResult:
        sent.append(name)
        return ActionResult("x", name, failed)

    await poll_optional(request, state, queues=True, skip=set(), timeout=1)
    assert sent == ["QueueStatus", "QueueSummary"]
    text = generate_latest(build_registry([state])).decode()
    assert not [line for line in text.splitlines() if line.startswith("asterisk_peer")]
    assert "asterisk_registration_up{" not in text


def test_an_endpoint_no_event_named_gets_its_round_trip_from_its_detail() -> None:
    """Polls only (no event): the endpoint list makes carrier and carrier2 reachable without a
    round trip; PJSIPShowEndpoint's ContactStatusDetail (recorded for carrier) gives it."""
    state = ServerState("test")
    answers = recorded_answers("pjsip/answers.exporter")

    def items(blocks: list[bytes]) -> list[Message]:
        return AMIParser(expect_banner=False).feed(b"".join(b + b"\r\n\r\n" for b in blocks))

    state.peers.apply_aor_list(items(answers["pjsipshowaors"]))
    state.peers.apply_endpoint_list(items(answers["pjsipshowendpoints"]))
    wanted = []
    while (what := state.peers.pop_wanted()) is not None:
        wanted.append(what)
    assert wanted == [("PJSIPShowEndpoint", "carrier"), ("PJSIPShowEndpoint", "carrier2")]
    detail = items(recorded_answers("pjsip/commands.admin")["pjsipshowendpoint"])
    (contact,) = [m for m in detail if m.name == "ContactStatusDetail"]
    assert (contact["Status"], contact["RoundtripUsec"]) == ("Reachable", "367")
    state.peers.apply_endpoint_detail(detail)
    carrier = state.peers.peers[("PJSIP", "carrier")]
    assert (carrier.status, carrier.rtt) == ("reachable", 367e-6)
    # Asked once: the next poll does not ask again within the interval.
    state.peers.apply_endpoint_list(items(answers["pjsipshowendpoints"]))
    assert state.peers.pop_wanted() is None
