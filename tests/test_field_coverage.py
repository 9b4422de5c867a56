"""Trunks/peers, registrations, queues and VICIdial call types: state, polls, simulator."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from amiserver import TestAMIServer
from helpers import (
    Capture,
    Exporter,
    ev,
    samples_of,
    server_config,
    value,
    wait_for,
)

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ActionResult
from ami_exporter.client.polls import poll_optional
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.model import ServerConfig
from ami_exporter.config.servers import load_config_file
from ami_exporter.state.channels import DIAL_LABELS
from ami_exporter.state.queues import QueueState
from ami_exporter.state.server import ServerState
from ami_exporter.state.vicidial import call_type
from ami_simulator.server import SimulatedAsterisk

S = {"server": "test"}
SimulatorFactory = Callable[..., Awaitable[SimulatedAsterisk]]
ExporterFactory = Callable[..., Awaitable[Exporter]]


# -- state: events -------------------------------------------------------------------------


def test_peer_events_of_every_kind() -> None:
    st = ServerState("x")
    # 1.8/11 chan_sip: Time in ms
    st.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Reachable", Time="23")
    )
    assert st.peers.peers[("SIP", "carrier")].up and st.peers.peers[("SIP", "carrier")].rtt == 0.023
    st.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Unreachable", Time="-1")
    )
    peer = st.peers.peers[("SIP", "carrier")]
    assert not peer.up and peer.rtt is None
    st.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/carrier", PeerStatus="Unreachable", Time="-1")
    )
    assert st.peers.changes == {("SIP", "reachable"): 1, ("SIP", "unreachable"): 1}
    assert peer.changes == 2
    # PJSIP contact with a round trip; a repeated status is no change
    for _ in range(2):
        st.handle_event(
            ev(
                "ContactStatus",
                URI="sip:2001@10.0.0.9:5060",
                ContactStatus="Reachable",
                AOR="2001",
                EndpointName="2001",
                RoundtripUsec="1500",
            )
        )
    assert st.peers.peers[("PJSIP", "2001")].rtt == 0.0015
    assert st.peers.changes[("PJSIP", "reachable")] == 1
    st.handle_event(
        ev(
            "ContactStatus",
            URI="sip:2001@10.0.0.9:5060",
            ContactStatus="Removed",
            AOR="2001",
            EndpointName="2001",
        )
    )
    assert not st.peers.peers[("PJSIP", "2001")].up
    # IAX2 and registrations
    st.handle_event(ev("PeerStatus", ChannelType="IAX2", Peer="IAX2/hq", PeerStatus="Lagged"))
    assert st.peers.peers[("IAX2", "hq")].up
    st.handle_event(
        ev("Registry", ChannelType="SIP", Username="u1", Domain="sip.example", Status="Registered")
    )
    st.handle_event(
        ev(
            "Registry",
            ChannelType="SIP",
            Username="u2",
            Domain="sip.example",
            Status="Rejected",
            Cause="AUTH_SECRET_FAILED",
        )
    )
    assert {k: st.peers.registration_up(r) for k, r in st.peers.registrations.items()} == {
        ("SIP", "u1@sip.example"): True,
        ("SIP", "u2@sip.example"): False,
    }


def test_peer_filter_and_peer_names_never_break_labels() -> None:
    st = ServerState("x")
    st.configure(peers_include="^carrier", peers_exclude="test$")
    for name in ("carrier-a", "carrier-test", "1001"):
        st.handle_event(
            ev("PeerStatus", ChannelType="PJSIP", Peer=f"PJSIP/{name}", PeerStatus="Reachable")
        )
    # Every peer is tracked (and counted in asterisk_peers); only the selected get series.
    assert {k for k, p in st.peers.peers.items() if p.selected} == {("PJSIP", "carrier-a")}
    assert st.peers.counts == {("PJSIP", "reachable"): 3}


def test_dial_subevent_and_masquerades_of_asterisk_11() -> None:
    st = ServerState("x")
    st.handle_event(
        ev(
            "Dial",
            SubEvent="Begin",
            Channel="SIP/a-1",
            UniqueID="1.1",
            DestUniqueID="1.2",
            Dialstring="100",
        )
    )
    st.handle_event(
        ev("Dial", SubEvent="End", Channel="SIP/a-1", UniqueID="1.1", DialStatus="ANSWER")
    )
    assert st.dials == {**dict.fromkeys(DIAL_LABELS, 0), "answer": 1}
    # 1.8/11: no Linkedid; Local halves are one call, a SIP channel is its own
    for uid, chan in (
        ("1.1", "Local/100@test-0001;1"),
        ("1.2", "Local/100@test-0001;2"),
        ("1.3", "SIP/trunk-0002"),
    ):
        st.handle_event(
            ev(
                "Newchannel",
                Channel=chan,
                ChannelState="0",
                ChannelStateDesc="Down",
                CallerIDNum="",
                CallerIDName="",
                AccountCode="",
                Exten="100",
                Context="test",
                Uniqueid=uid,
            )
        )
    assert st.active_calls == 2 and len(st.channels) == 3
    # A masquerade: the zombie's Hangup removes a channel without counting a hangup.
    st.handle_event(ev("Hangup", Channel="SIP/trunk-0002<ZOMBIE>", Uniqueid="1.3", Cause="0"))
    assert len(st.channels) == 2 and st.hangups == {}
    st.handle_event(
        ev("Newstate", Channel="SIP/x-0003<MASQ>", ChannelStateDesc="Up", Uniqueid="1.9")
    )
    assert "1.9" not in st.channels
    st.resync_begin()
    listed = [
        ev(
            "CoreShowChannel",
            Channel="Local/100@test-0001;1",
            UniqueID="1.1",
            ChannelStateDesc="Up",
            CallerIDnum="5551000",
        ),
        ev(
            "CoreShowChannel",
            Channel="Local/100@test-0001;2",
            UniqueID="1.2",
            ChannelStateDesc="Up",
        ),
        ev("CoreShowChannel", Channel="SIP/y-0004<ZOMBIE>", UniqueID="1.7", ChannelStateDesc="Up"),
    ]
    assert st.resync_complete(listed) == (0, 0)


def test_vicidial_call_ids() -> None:
    assert call_type("V1127093000000012345") == "auto_dial"
    assert call_type("M1127093000000012345") == "manual_dial"
    assert call_type("Y1127093000000012345") == "inbound"
    assert call_type("DC123456W1234567890W") == "three_way"
    assert call_type("V112709300000001234") is None  # 18 digits
    assert call_type("Victor") is None and call_type("") is None


def test_vicidial_counts_each_call_once_and_trunk_hangups() -> None:
    st = ServerState("x")
    st.configure(vicidial=True)
    cid = "V1127093000000012345"
    chans = [
        ("1.1", "Local/91555@default-0001;1"),
        ("1.2", "Local/91555@default-0001;2"),
        ("1.3", "SIP/carrier-0002"),
    ]
    for uid, chan in chans:
        st.handle_event(
            ev(
                "Newchannel",
                Channel=chan,
                Uniqueid=uid,
                Linkedid="1.1",
                ChannelStateDesc="Down",
                CallerIDName="<unknown>",
            )
        )
        st.handle_event(
            ev(
                "Newstate",
                Channel=chan,
                Uniqueid=uid,
                Linkedid="1.1",
                ChannelStateDesc="Up",
                CallerIDName=cid,
            )
        )
    for uid, chan in chans:
        st.handle_event(
            ev("Hangup", Channel=chan, Uniqueid=uid, Linkedid="1.1", CallerIDName=cid, Cause="17")
        )
    assert st.vicidial.calls["auto_dial"] == 1
    assert st.vicidial.hangups == {("auto_dial", "17"): 1}  # the trunk leg only
    # an inbound call ID in ConnectedLineName of an agent phone
    st.handle_event(
        ev(
            "Hangup",
            Channel="SIP/1001-0003",
            Uniqueid="2.1",
            CallerIDName="Bob",
            ConnectedLineName="Y1127093000000012399",
            Cause="16",
        )
    )
    assert st.vicidial.calls["inbound"] == 1
    # disabled: nothing counted
    off = ServerState("y")
    off.handle_event(ev("Hangup", Channel="SIP/a-1", Uniqueid="1", CallerIDName=cid, Cause="16"))
    assert sum(off.vicidial.calls.values()) == 0


# -- captures --------------------------------------------------------------------------------


def test_queue_polls_of_the_real_capture(capture: Capture) -> None:
    msgs = capture.messages("05-commands.admin.raw")
    status = [m for m in msgs if m.action_id == "queuestatus-1" and m.kind == "event"]
    summary = [m for m in msgs if m.action_id == "queuesummary-1" and m.kind == "event"]
    queues = QueueState()
    queues.apply_status(status)
    queues.apply_summary(summary)
    support = queues.queues["support"]
    assert (support.callers, support.completed, support.abandoned) == (0, 0, 0)
    assert support.members == {("not_in_use", "false"): 1}
    assert support.longest_hold == 0.0


async def test_unknown_action_of_the_real_capture_is_remembered(capture: Capture) -> None:
    msgs = capture.messages("05-commands.admin.raw")
    unknown = next(m for m in msgs if m.get("ActionID") == "unknown-1")
    assert (unknown.get("Message") or "").startswith("Invalid/unknown command")
    sent: list[str] = []

    async def request(name: str, **kw: object) -> ActionResult:
        sent.append(name)
        return ActionResult("unknown-1", name, unknown)

    st, skip = ServerState("x"), set[str]()
    log = logging.getLogger("test")
    for _ in range(3):
        await poll_optional(request, st, queues=True, skip=skip, timeout=1, logger=log)
    assert sent == [
        "SIPpeers",
        "IAXpeerlist",
        "PJSIPShowAors",
        "PJSIPShowEndpoints",
        "PJSIPShowContacts",
        "SIPshowregistry",
        "PJSIPShowRegistrationsOutbound",
        "QueueStatus",
        "QueueSummary",
    ]


@pytest.mark.e2e
async def test_replayed_queue_call_counts_queue_events(
    ami_server: Callable[..., Awaitable[TestAMIServer]],
    exporter: ExporterFactory,
    capture: Capture,
) -> None:
    events = capture.events("09-queue-call.exporter.raw")
    ami = await ami_server(events=events)
    exp = await exporter(server_config(ami.port, queues=True))
    await wait_for(lambda: sum(exp.state.events.values()) >= len(events), what="replayed events")
    await wait_for(lambda: "QueueSummary" in ami.actions, what="the queue polls")
    m = await exp.scrape()
    for name in ("QueueCallerJoin", "QueueCallerLeave", "AgentConnect", "AgentComplete"):
        assert value(m, "asterisk_ami_events_total", **S, event=name) == 1, name
    # The test server answers the polls with "Permission denied": the queue is known from its
    # live events alone (one caller joined and left, answered after 0 s, talked 4 s).
    q = {**S, "queue": "support"}
    assert value(m, "asterisk_queue_callers", **q) == 0
    assert value(m, "asterisk_queue_wait_seconds_count", **q, outcome="answered") == 1
    assert value(m, "asterisk_queue_talk_seconds_sum", **q) == 4
    assert value(m, "asterisk_ami_up", **S) == 1


# -- the exporter on the simulator -------------------------------------------------------------


class ActionLog:
    """The names of the actions a simulator receives, in order."""

    def __init__(self, sim: SimulatedAsterisk) -> None:
        self.names: list[str] = []
        original = sim._dispatch

        async def dispatch(session: object, message: Message) -> None:
            self.names.append(message.name)
            await original(session, message)  # type: ignore[arg-type]

        sim._dispatch = dispatch  # type: ignore[method-assign]

    async def more(self, name: str, rounds: int = 2) -> None:
        """Wait until ``name`` was asked ``rounds`` more times: the polls before the last one
        were answered and applied (a poll round starts when the previous one is done)."""
        target = self.names.count(name) + rounds
        await wait_for(lambda: self.names.count(name) >= target, what=f"{rounds} more {name}")


@pytest.mark.e2e
async def test_peers_and_registrations_on_asterisk_22(
    make_simulator: SimulatorFactory, exporter: ExporterFactory
) -> None:
    sim = await make_simulator(asterisk_version="22")
    actions = ActionLog(sim)
    exp = await exporter(server_config(sim.port, resync_interval=0.3))
    await wait_for(lambda: ("PJSIP", "carrier-pjsip") in exp.state.peers.peers, what="peer poll")
    await wait_for(lambda: actions.names.count("PJSIPShowContacts") >= 3, what="resyncs")
    m = await exp.scrape()
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier-pjsip") == 1
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="PJSIP", peer="carrier-pjsip") == 0.015
    # An agent phone (all digits): not selected by default, counted in asterisk_peers only.
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="2001") is None
    assert exp.state.peers.peers[("PJSIP", "2001")].up
    assert sum(v for k, v in samples_of(m, "asterisk_peers").items() if ("tech", "PJSIP") in k) >= 2
    assert value(m, "asterisk_peer_up", **S, tech="IAX2", peer="iax-peer") == 1
    assert (
        value(m, "asterisk_registration_up", **S, tech="PJSIP", registration="carrier-pjsip-reg")
        == 1
    )
    assert not [k for k in samples_of(m, "asterisk_peer_up") if ("tech", "SIP") in k]
    # chan_sip is gone in 22: asked once per session, never again
    assert actions.names.count("SIPpeers") == 1
    assert actions.names.count("SIPshowregistry") == 1
    assert "QueueStatus" not in actions.names  # queues are opt-in

    sim.extras.set_peer_status("PJSIP", "carrier-pjsip", "Unreachable")
    sim.extras.set_registration("PJSIP", "carrier-pjsip-reg", "Rejected")
    await wait_for(
        lambda: not exp.state.peers.peers[("PJSIP", "carrier-pjsip")].up, what="unreachable"
    )
    await wait_for(
        lambda: exp.state.peers.registrations[("PJSIP", "carrier-pjsip-reg")].status == "rejected",
        what="rejected",
    )
    await actions.more("PJSIPShowContacts")  # polls agree with the events: no flapping back
    m = await exp.scrape()
    assert value(m, "asterisk_peer_up", **S, tech="PJSIP", peer="carrier-pjsip") == 0
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="PJSIP", peer="carrier-pjsip") is None
    assert (
        value(
            m,
            "asterisk_peer_status_changes_total",
            **S,
            tech="PJSIP",
            peer="carrier-pjsip",
        )
        == 1
    )
    assert (
        value(m, "asterisk_registration_up", **S, tech="PJSIP", registration="carrier-pjsip-reg")
        == 0
    )


@pytest.mark.e2e
@pytest.mark.parametrize("version", ["11", "13", "16", "18", "20"])
async def test_chan_sip_peers_on_older_versions(
    make_simulator: SimulatorFactory, exporter: ExporterFactory, version: str
) -> None:
    sim = await make_simulator(asterisk_version=version)
    actions = ActionLog(sim)
    cfg = server_config(sim.port, resync_interval=0.3, peers_exclude="^iax")
    exp = await exporter(cfg)
    await wait_for(lambda: ("SIP", "carrier-sip") in exp.state.peers.peers, what="poll")
    sim.extras.set_peer_status("SIP", "carrier-sip", "Lagged", rtt_ms=900)
    sim.extras.set_peer_status("SIP", "1001", "Unreachable")
    await wait_for(
        lambda: exp.state.peers.peers[("SIP", "1001")].status == "unreachable", what="event"
    )
    await actions.more("SIPpeers")  # polls agree with the events
    m = await exp.scrape()
    assert value(m, "asterisk_peer_up", **S, tech="SIP", peer="carrier-sip") == 1
    assert value(m, "asterisk_peer_up", **S, tech="SIP", peer="1001") == 0
    assert (
        value(
            m,
            "asterisk_peer_status_changes_total",
            **S,
            tech="SIP",
            peer="1001",
        )
        == 1
    )
    assert (
        value(
            m,
            "asterisk_registration_up",
            **S,
            tech="SIP",
            registration="trunkuser@sip.carrier.example:5060",  # the registrar's port
        )
        == 1
    )
    assert value(m, "asterisk_peer_up", **S, tech="IAX2", peer="iax-peer") is None  # excluded
    pjsip = [k for k in samples_of(m, "asterisk_peer_up") if ("tech", "PJSIP") in k]
    assert bool(pjsip) == (version != "11")


@pytest.mark.e2e
async def test_queues_opt_in_on_the_simulator(
    make_simulator: SimulatorFactory, exporter: ExporterFactory
) -> None:
    sim = await make_simulator(asterisk_version="18")
    sim.extras.add_queue_caller("support", waiting_since=time.time() - 30)
    exp = await exporter(server_config(sim.port, queues=True, resync_interval=0.3))
    await wait_for(lambda: "support" in exp.state.queues.queues, what="queue poll")
    m = await exp.scrape()
    sim.extras.remove_queue_caller("support", abandoned=True)
    await wait_for(lambda: exp.state.queues.queues["support"].callers == 0, what="left")
    m2 = await exp.scrape()
    q = {"server": "test", "queue": "support"}
    assert value(m, "asterisk_queue_callers", **q) == 1
    longest = value(m, "asterisk_queue_longest_hold_seconds", **q)
    assert longest is not None and 29 <= longest <= 33
    assert value(m, "asterisk_queue_members", **q, status="not_in_use", paused="false") == 1
    assert value(m, "asterisk_queue_members", **q, status="in_use", paused="true") == 1
    assert value(m, "asterisk_queue_completed_total", **q) == 3
    assert value(m, "asterisk_queue_abandoned_total", **q) == 1
    assert value(m2, "asterisk_queue_abandoned_total", **q) == 2
    assert value(m2, "asterisk_queue_longest_hold_seconds", **q) == 0


@pytest.mark.e2e
async def test_vicidial_calls_on_the_simulator(
    make_simulator: SimulatorFactory, exporter: ExporterFactory
) -> None:
    sim = await make_simulator(asterisk_version="13")
    exp = await exporter(server_config(sim.port, vicidial=True))
    await wait_for(lambda: exp.state.up, what="login")
    sim.start_call("answered", hold_time=0.05, caller_name="V1127093000000012345")
    sim.start_call("busy", caller_name="M1127093000000012346")
    sim.start_call("congestion")  # not a VICIdial call
    await wait_for(
        lambda: sum(exp.state.originates.values()) == 3 and not exp.state.channels, what="calls"
    )
    m = await exp.scrape()
    assert value(m, "asterisk_vicidial_calls_total", **S, type="auto_dial") == 1
    assert value(m, "asterisk_vicidial_calls_total", **S, type="manual_dial") == 1
    assert value(m, "asterisk_vicidial_calls_total", **S, type="inbound") == 0
    assert not samples_of(m, "asterisk_vicidial_hangups_total")  # Local channels only
    text = str(m)
    assert "V1127093000000012345" not in text and "5551000" not in text


# -- configuration ---------------------------------------------------------------------------


DEFAULTS = {"ping_interval": 10.0, "resync_interval": 60.0, "connect_timeout": 5.0}


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    head = "servers:\n  - address: 127.0.0.1:5038\n    username: u\n    secret: s\n"
    path.write_text(head + "    peers_include: '^carrier'\n    queues: true\n    vicidial: true\n")
    (server,) = load_config_file(str(path), DEFAULTS)
    assert isinstance(server, ServerConfig)
    assert (server.peers_include, server.peers_exclude, server.queues, server.vicidial) == (
        "^carrier",
        None,
        True,
        True,
    )
    path.write_text(
        "servers:\n  - address: 127.0.0.1:5038\n    username: u\n    secret: s\n"
        "    peers_exclude: '(unclosed'\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yml:5: peers_exclude: invalid regular expression"):
        load_config_file(str(path), DEFAULTS)
    path.write_text(
        "servers:\n  - address: 127.0.0.1:5038\n    username: u\n    secret: s\n"
        "    queues: 'yes please'\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yml:5: queues: 'yes please' must be true or false"):
        load_config_file(str(path), DEFAULTS)
