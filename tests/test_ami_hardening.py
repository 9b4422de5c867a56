"""The AMI side of issue #12: what an abusive or broken Asterisk may send must stay bounded.

* ``ContactStatus`` for ever more contact URIs of one endpoint: each event O(1), at most
  ``peers.MAX_CONTACTS`` contacts per endpoint, the rest counted;
* list answers (``CoreShowChannels`` and the polls): at most ``max_list_items`` items and
  ``max_list_bytes`` bytes kept, the rest dropped and the result marked ``truncated``; a
  truncated ``CoreShowChannels`` never applied; truncated, timed-out and lost answers counted;
  nothing kept once the session is gone;
* an unterminated ``Response: Follows`` (no ``Command`` asked for one) framed as one malformed
  message, never swallowing what follows;
* live channels capped per server, the rest counted; every free-text label value from the
  server at most 128 characters.

Timings are measured in ``benchmarks/ami_hardening.py``; here only generous bounds.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Awaitable, Callable

import pytest
from amiserver import Connection, TestAMIServer, reply
from helpers import (
    Exporter,
    ev,
    listed_channel,
    newchannel,
    server_config,
    value,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ami_exporter.client.connection as client_module
from ami_exporter.ami.protocol import AMIParser, Message, serialize
from ami_exporter.ami.session import ClientSession, ServerSession
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state import channels, labels, peers, vicidial
from ami_exporter.state.server import ServerState

# Tiers are per test (this module mixes them): in-process tests are `unit`, the ones over
# real sockets `e2e`, the Hypothesis property `fuzz`.

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]
S = {"server": "test"}
CSC = ("CoreShowChannelsComplete", ("CoreShowChannel",))


def feed(state: ServerState, session: ClientSession, data: bytes) -> float:
    """The client's data_received path in 64 KiB reads; the seconds it took."""
    start = time.perf_counter()
    for pos in range(0, len(data), 65536):
        got = session.receive(data[pos : pos + 65536])
        if got.malformed:
            state.record_malformed(got.malformed)
        if got.names:
            state.record_events(got.names, got.events)
    return time.perf_counter() - start


def client(state: ServerState, **options: int) -> ClientSession:
    session = ClientSession(parse=state.parsed_event_names, **options)
    session.receive(b"Asterisk Call Manager/2.10.0\r\n")
    return session


def contact_status(uri: str, status: str = "Reachable", usec: str = "2000") -> bytes:
    return ServerSession.event(
        "ContactStatus",
        ("URI", uri),
        ("ContactStatus", status),
        ("AOR", "agent"),
        ("EndpointName", "agent"),
        ("RoundtripUsec", usec),
    )


def scrape(state: ServerState) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(build_registry([state])).decode()
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def sample(state: ServerState, family: str, **labels_: str) -> float | None:
    for got, number in scrape(state).get(family, []):
        if labels_.items() <= got.items():
            return number
    return None


def referenced(action_id: str) -> int:
    """List items of that action still reachable from anything (after a full collection)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is Message and obj.name == "CoreShowChannel" and obj.action_id == action_id
    )


# ---------------------------------------------------------------------------- contacts


@pytest.mark.unit
def test_contact_status_for_many_uris_is_linear_and_capped() -> None:
    """10,000 URIs of one endpoint took 1.8 s of loop time (O(N^2)); now each event is O(1)."""
    state = ServerState("test")
    session = client(state)
    uris = 10_000
    data = b"".join(contact_status(f"sip:agent@10.0.{i >> 8}.{i & 255}:5060") for i in range(uris))
    took = feed(state, session, data)
    peer = state.peers.peers[("PJSIP", "agent")]
    assert len(peer.contacts) == peers.MAX_CONTACTS == 32
    assert state.peers.dropped_contacts == uris - peers.MAX_CONTACTS
    assert peer.up
    assert peer.rtt == 0.002
    assert took < 2.0, f"{uris} ContactStatus took {took:.2f} s"  # ~0.05 s; 1.8-3.9 s before
    assert sample(state, "asterisk_peer_contacts_dropped", **S) == uris - peers.MAX_CONTACTS


@pytest.mark.unit
def test_endpoint_state_follows_its_tracked_contacts() -> None:
    state = ServerState("test")
    session = client(state)
    first = [f"sip:agent@10.0.0.{i}:5060" for i in range(peers.MAX_CONTACTS)]
    feed(state, session, b"".join(contact_status(u, "Unreachable") for u in first))
    peer = state.peers.peers[("PJSIP", "agent")]
    assert (peer.up, peer.rtt) == (False, None)
    # One more contact: not tracked, so it cannot make the endpoint up.
    feed(state, session, contact_status("sip:agent@10.9.9.9:5060", "Reachable"))
    assert (peer.up, state.peers.dropped_contacts) == (False, 1)
    # A tracked one comes back, with its round trip; the smallest of the up contacts wins.
    feed(state, session, contact_status(first[3], "Reachable", "7000"))
    feed(state, session, contact_status(first[4], "Reachable", "3000"))
    assert (peer.up, peer.rtt) == (True, 0.003)
    feed(state, session, contact_status(first[4], "Removed"))
    assert (peer.up, peer.rtt, len(peer.contacts)) == (True, 0.007, peers.MAX_CONTACTS - 1)
    # A slot is free again: a new contact is tracked.
    feed(state, session, contact_status("sip:agent@10.9.9.9:5060", "Reachable", "1000"))
    assert (peer.rtt, len(peer.contacts), state.peers.dropped_contacts) == (0.001, 32, 1)


@pytest.mark.unit
def test_contact_list_poll_caps_contacts_per_endpoint() -> None:
    state = ServerState("test")
    items = [
        ev(
            "ContactList",
            ObjectName=f"agent;@{i}",
            Endpoint="agent",
            Uri=f"sip:agent@h{i}",
            Status="Reachable",
            RoundtripUsec="5000",
        )
        for i in range(1000)
    ]
    state.peers.apply_contact_list(items)
    peer = state.peers.peers[("PJSIP", "agent")]
    assert (len(peer.contacts), peer.up, peer.rtt) == (peers.MAX_CONTACTS, True, 0.005)
    assert state.peers.dropped_contacts == 1000 - peers.MAX_CONTACTS


# ---------------------------------------------------------------------------- list answers


def list_items(action_id: str, count: int, start: int = 0, pad: int = 0) -> bytes:
    extra = (("ChanVariable", "x" * pad),) if pad else ()
    return b"".join(
        ServerSession.event(
            "CoreShowChannel",
            ("Channel", f"PJSIP/t-{i}"),
            ("ChannelStateDesc", "Up"),
            ("Uniqueid", f"1.{i}"),
            *extra,
            action_id=action_id,
        )
        for i in range(start, start + count)
    )


def list_answer_head(action_id: str) -> bytes:
    request = Message("action", "CoreShowChannels", [("ActionID", action_id)])
    return ServerSession.response(request, "Success", ("EventList", "start"))


def list_complete(action_id: str, count: int) -> bytes:
    return ServerSession.event(
        "CoreShowChannelsComplete",
        ("EventList", "Complete"),
        ("ListItems", str(count)),
        action_id=action_id,
    )


@pytest.mark.unit
def test_list_items_past_the_cap_are_dropped_and_the_result_says_truncated() -> None:
    state = ServerState("test")
    session = client(state, max_list_items=10)
    aid, _ = session.send("CoreShowChannels", complete_event=CSC[0], list_items=CSC[1])
    got = session.receive(list_answer_head(aid) + list_items(aid, 300) + list_complete(aid, 300))
    (result,) = got.results
    assert result.truncated
    assert len(result.items) == 10  # exactly the cap: no marker item past it
    assert [m.get("Uniqueid") for m in result.items] == [f"1.{i}" for i in range(10)]
    assert session.overflowed_lists == 1
    assert got.names == []  # the dropped items are answers still, not events
    # A list within the cap is whole.
    aid, _ = session.send("CoreShowChannels", complete_event=CSC[0], list_items=CSC[1])
    (whole,) = session.receive(
        list_answer_head(aid) + list_items(aid, 10) + list_complete(aid, 10)
    ).results
    assert (whole.truncated, len(whole.items)) == (False, 10)


@pytest.mark.unit
def test_list_items_are_capped_in_bytes_too() -> None:
    """100,000 items of up to max_message_size each would be no memory bound at all."""
    state = ServerState("test")
    session = client(state, max_list_bytes=64 * 1024)
    aid, _ = session.send("CoreShowChannels", complete_event=CSC[0], list_items=CSC[1])
    data = list_answer_head(aid) + list_items(aid, 200, pad=4000) + list_complete(aid, 200)
    (result,) = session.receive(data).results
    assert result.truncated
    held = sum(len(serialize(m)) for m in result.items)
    assert 0 < held <= 64 * 1024
    assert len(result.items) == 64 * 1024 // len(serialize(result.items[0]))


@pytest.mark.unit
def test_abandon_and_eof_drop_the_items_collected() -> None:
    state = ServerState("test")
    session = client(state, max_list_items=1000)
    aid, _ = session.send("CoreShowChannels", complete_event=CSC[0], list_items=CSC[1])
    session.receive(list_answer_head(aid) + list_items(aid, 5000))
    assert referenced(aid) == 1000
    session.abandon(aid)  # the client's timeout
    assert (session.pending, referenced(aid)) == (0, 0)
    # Late items are plain events now, counted by name and dropped.
    got = session.receive(list_items(aid, 3, start=5000))
    assert got.names == [b"CoreShowChannel"] * 3
    aid, _ = session.send("CoreShowChannels", complete_event=CSC[0], list_items=CSC[1])
    session.receive(list_answer_head(aid) + list_items(aid, 5000))
    assert session.receive_eof() == [aid]  # the connection died mid-list
    assert referenced(aid) == 0


# ---------------------------------------------------------------------------- Follows

UNTERMINATED_FOLLOWS = (
    b"Response: Follows\r\nPrivilege: Command\r\nActionID: 42\r\n"
    b"Channel              Location             State   Application(Data)\n"
    b"\n"
    b"0 active channels\n"
    b"\n"
)


def events_and_pong(session: ClientSession, count: int) -> bytes:
    """``count`` events, then the answer to a Ping sent now."""
    ping_id, _ = session.send("Ping")
    ping = Message("action", "Ping", [("Action", "Ping"), ("ActionID", ping_id)])
    events = b"".join(ServerSession.event("TestEvent", ("N", str(i))) for i in range(count))
    return events + ServerSession.response(ping, "Success", ("Ping", "Pong"))


@pytest.mark.unit
def test_unterminated_follows_does_not_swallow_what_follows() -> None:
    """No Command in flight: a `Response: Follows` is junk, one malformed message per
    paragraph it brings, and framing goes on at once."""
    state = ServerState("test")
    session = client(state)
    rest = events_and_pong(session, 1000)
    feed(state, session, UNTERMINATED_FOLLOWS + rest)
    assert state.events.get("TestEvent") == 1000
    assert session.pending == 0  # the Pong got through
    # The Follows head, and "0 active channels" (no colon): two messages skipped.
    assert state.health.malformed == 2
    assert session.buffered == 0


@pytest.mark.unit
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_unexpected_follows_framing_does_not_depend_on_reads(step: int) -> None:
    data = UNTERMINATED_FOLLOWS + b"Event: A\r\nX: 1\r\n\r\n" + UNTERMINATED_FOLLOWS[:40]
    data += b"\r\n\r\nEvent: B\r\n\r\n"
    whole = AMIParser(expect_banner=False, follows=False)
    expected = whole.feed(data)
    parser = AMIParser(expect_banner=False, follows=False)
    got = [m for i in range(0, len(data), step) for m in parser.feed(data[i : i + step])]
    assert [m.name for m in got] == [m.name for m in expected] == ["A", "B"]
    assert parser.malformed == whole.malformed == 3


@pytest.mark.unit
def test_follows_is_framed_while_a_command_is_in_flight() -> None:
    state = ServerState("test")
    session = client(state)
    cmd_id, _ = session.send("Command", Command="core show channels")
    body = UNTERMINATED_FOLLOWS.replace(b"ActionID: 42", b"ActionID: " + cmd_id.encode())
    got = session.receive(body + b"0 active calls\n--END COMMAND--\r\n\r\n")
    (result,) = got.results
    assert result.response.get_all("Output") == [
        "Channel              Location             State   Application(Data)",
        "",
        "0 active channels",
        "",
        "0 active calls",
    ]
    assert session.malformed == 0
    # Answered: a later Follows is junk again.
    rest = events_and_pong(session, 3)
    feed(state, session, UNTERMINATED_FOLLOWS + rest)
    assert (state.events.get("TestEvent"), session.pending, session.malformed) == (3, 0, 2)


@pytest.mark.unit
def test_abandoned_command_gives_framing_back() -> None:
    """A Follows that never ends while its Command is in flight holds the stream until the
    caller gives up on the Command (its timeout); then what was held is framed again."""
    state = ServerState("test")
    session = client(state)
    cmd_id, _ = session.send("Command", Command="core show channels")
    rest = events_and_pong(session, 100)
    feed(state, session, UNTERMINATED_FOLLOWS + rest)
    assert state.events.get("TestEvent") is None  # inside the Follows body, as it must be
    session.abandon(cmd_id)
    feed(state, session, ServerSession.event("TestEvent", ("N", "last")))
    assert state.events.get("TestEvent") == 101
    assert session.pending == 0


_follows_bits = st.sampled_from(
    [
        b"Response: Follows\r\n",
        b"Response: Follows\n",
        b"Privilege: Command\r\n",
        b"--END COMMAND--\r\n",
        b"Event: A\r\n",
        b"X: 1\r\n",
        b"text\n",
        b"\r\n",
        b"\n",
        b"\r",
        b": ",
    ]
)


@pytest.mark.fuzz
@settings(
    max_examples=int(os.environ.get("AMI_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    bits=st.lists(st.one_of(_follows_bits, st.binary(max_size=6)), max_size=60),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    limit=st.sampled_from([16, 100, 1 << 20]),
)
def test_follows_off_any_stream_cut_anywhere_frames_the_same(
    bits: list[bytes], cuts: list[int], limit: int
) -> None:
    data = b"".join(bits)
    whole = AMIParser(expect_banner=False, max_message_size=limit, follows=False)
    expected = whole.feed(data)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    parser = AMIParser(expect_banner=False, max_message_size=limit, follows=False)
    got: list[Message] = []
    for chunk in chunks:
        got.extend(parser.feed(chunk))
        assert parser.buffered <= limit + 3 * 64
    assert got == expected
    assert parser.malformed == whole.malformed


# ---------------------------------------------------------------------------- channels


@pytest.mark.unit
def test_live_channels_are_capped_and_the_rest_counted() -> None:
    assert ServerState("x").tracker.max_channels == channels.MAX_LIVE_CHANNELS == 50_000
    state = ServerState("test", max_channels=100)
    for i in range(150):
        state.handle_event(newchannel(f"1.{i}"))
    assert len(state.channels) == 100
    assert state.tracker.untracked == 50
    assert sum(state.channels_by_tech.values()) == 100
    assert state.active_calls == 100
    # A Newstate of an untracked channel does not sneak it in (nor count it again).
    state.handle_event(ev("Newstate", Uniqueid="1.120", Channel="PJSIP/t-1", ChannelStateDesc="Up"))
    assert (len(state.channels), state.tracker.untracked) == (100, 50)
    # A Hangup frees a slot; the next channel is tracked.
    state.handle_event(ev("Hangup", Uniqueid="1.0", Channel="PJSIP/trunk-1.0", Cause="16"))
    state.handle_event(newchannel("2.0"))
    assert "2.0" in state.channels
    assert (len(state.channels), state.tracker.untracked) == (100, 50)
    # A resync listing more than the cap: what does not fit is counted, not tracked.
    state.resync_begin()
    added, removed = state.resync_complete([listed_channel(f"3.{i}") for i in range(130)])
    assert (len(state.channels), added, removed) == (100, 100, 100)
    assert state.tracker.untracked == 80
    assert sample(state, "asterisk_channels_untracked", **S) == 80


@pytest.mark.unit
def test_long_identifiers_never_cost_unbounded_memory() -> None:
    """Counts are capped; so is what each remembered string may cost (up to 1 MiB each)."""
    state = ServerState("test")
    state.count_events([b"E" * 1000 + b"%d" % i for i in range(600)])
    assert max(map(len, state.event_counts)) <= 64
    assert state.event_counts[b"other"] == 600
    state.handle_event(newchannel("1." + "9" * 10_000))
    assert (len(state.channels), state.tracker.untracked) == (0, 1)
    state.handle_event(newchannel("1.1", linkedid="L" * 10_000))
    state.handle_event(newchannel("1.2", channel="Local/" + "x" * 10_000 + ";1", linkedid=""))
    assert state.channels["1.1"].call == "1.1"
    assert state.channels["1.2"].call == "1.2"
    assert vicidial.call_type("RA_" + "x" * 1000) is None
    assert vicidial.call_type("RA_12345") == "ring_agent"
    state.record_login_failure("error", "x" * 1_000_000)
    assert len(state.last_error) == len(state.last_problem) == 1024
    state.peers.apply_outbound_registrations(
        [ev("OutboundRegistrationDetail", ObjectName="r", ClientUri="s" * 10_000, Status="x")]
    )
    assert state.peers._registration_names == {}


# ---------------------------------------------------------------------------- label values


def all_label_values(state: ServerState) -> list[str]:
    return [v for samples in scrape(state).values() for got, _ in samples for v in got.values()]


@pytest.mark.unit
def test_label_values_from_the_server_are_bounded() -> None:
    state = ServerState("test")
    state.apply_banner("Asterisk Call Manager/" + "9" * 900_000)
    assert len(state.ami_version) == 128
    state.apply_core_settings(
        Message(
            "response",
            "Success",
            [
                ("Response", "Success"),
                ("AsteriskVersion", "22." + "1" * 5000),
                ("SystemName", "pbx\x1b[31m" + "s" * 5000),
            ],
        )
    )
    long = "n" * 5000
    state.handle_event(
        ev("PeerStatus", ChannelType="SIP", Peer="SIP/" + long, PeerStatus="Reachable")
    )
    state.handle_event(
        ev("ContactStatus", URI="sip:x@" + long, ContactStatus="Reachable", EndpointName="e" + long)
    )
    state.handle_event(
        ev("Registry", ChannelType="SIP", Username="u" + long, Domain="d", Status="Registered")
    )
    state.peers.apply_outbound_registrations(
        [
            ev(
                "OutboundRegistrationDetail",
                ObjectName="r" + long,
                ClientUri="sip:c",
                Status="Registered",
            )
        ]
    )
    state.queues.apply_status(
        [
            ev("QueueParams", Queue="q" + long, Calls="2"),
            ev("QueueMember", Queue="q" + long, Status="1", Paused="0"),
            ev("QueueEntry", Queue="q" + long, Wait="30"),
        ]
    )
    state.queues.apply_summary([ev("QueueSummary", Queue="q" + long, LongestHoldTime="40")])
    state.handle_event(
        ev("Newchannel", Channel=long + "/x-1", Uniqueid="1.1", ChannelStateDesc=long)
    )
    state.handle_event(ev("InvalidPassword", Service=long, AccountID="x"))
    state.count_events([long.encode()])
    state.record_session_up()  # live families (registrations...) are exported while up only
    values = all_label_values(state)
    assert max(map(len, values)) <= labels.MAX_LABEL_LENGTH == 128
    cut = [v for v in values if v.endswith(labels.TRUNCATED)]
    # version, ami_version, system_name, the peer, the endpoint, two registrations, the queue
    # (in each of its families).
    assert {v[:1] for v in cut} >= {"2", "9", "p", "n", "e", "u", "r", "q"}
    info = scrape(state)["asterisk_info"][0][0]
    assert info["system_name"].startswith("pbx?[31m")  # a control character shown as ?
    queue_name = "q" + "n" * 126 + labels.TRUNCATED
    (queue,) = state.queues.queues.values()
    assert list(state.queues.queues) == [queue_name]
    assert (queue.callers, queue.longest_hold) == (2, 40.0)


@pytest.mark.unit
def test_bounded_leaves_short_printable_values_alone() -> None:
    for text in ("", "22.10.1", "x" * 128, "Zoë Müller"):
        assert labels.bounded(text) == text
    assert labels.bounded("x" * 129) == "x" * 127 + labels.TRUNCATED
    assert labels.bounded("a\tb") == "a?b"


# ---------------------------------------------------------------------------- over the wire

LIST_ITEM = (
    b"Event: CoreShowChannel\r\nActionID: %s\r\nChannel: PJSIP/trunk-%d\r\n"
    b"ChannelState: 6\r\nChannelStateDesc: Up\r\nUniqueid: 8.%d\r\nLinkedid: 8.%d\r\n\r\n"
)


def resynced(conn: Connection) -> Callable[[], bool]:
    """True once the client applied (or skipped) this connection's first CoreShowChannels:
    it sends its next action of the sync sequence only then."""

    def done() -> bool:
        if "CoreShowChannels" not in conn.actions:
            return False
        after = conn.actions[conn.actions.index("CoreShowChannels") + 1 :]
        return any(name not in ("Ping", "Logoff") for name in after)

    return done


def lowered_caps(monkeypatch: pytest.MonkeyPatch, **caps: int) -> None:
    """The exporter's client sessions get these list caps (the test's server stays small)."""
    monkeypatch.setattr(client_module, "ClientSession", functools.partial(ClientSession, **caps))


@pytest.mark.e2e
async def test_truncated_coreshowchannels_keeps_the_live_set(
    ami_server: AMIServerFactory, exporter: ExporterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial snapshot would drop every live channel past the cut: the resync is skipped."""
    lowered_caps(monkeypatch, max_list_items=100)
    live = [newchannel(f"9.{i}") for i in range(3)]
    listed = [listed_channel(f"1.{i}") for i in range(300)]
    listed += [listed_channel(f"9.{i}") for i in range(3)]
    ami = await ami_server(events=live, channels=listed)
    exp = await exporter(server_config(ami.port))
    await wait_for(lambda: exp.state.up and len(ami.connections) == 1, what="login")
    await wait_for(resynced(ami.connections[0]), what="the resync")
    m = await exp.scrape()
    assert exp.state.channels.keys() == {"9.0", "9.1", "9.2"}
    assert exp.state.resyncs_completed == 0
    key = {"action": "CoreShowChannels", **S}
    assert value(m, "asterisk_ami_list_actions_incomplete_total", **key, reason="truncated") == 1
    assert value(m, "asterisk_ami_list_actions_incomplete_total", **key, reason="lost") == 0
    assert value(m, "asterisk_ami_resync_channels_added_total", **S) == 0
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 3
    assert value(m, "asterisk_ami_up", **S) == 1


def read_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.e2e
async def test_endless_list_is_bounded_and_released_when_the_session_dies(
    ami_server: AMIServerFactory, exporter: ExporterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300,000 CoreShowChannel items and no Complete (485 MB held, and kept, before): at most
    the cap is held, the answer is counted as lost when the connection dies, and nothing of it
    is referenced after."""
    lowered_caps(monkeypatch, max_list_items=1000)
    items = 300_000
    held: list[int] = []
    action_ids: list[str] = []

    async def endless(conn: Connection, msg: Message) -> bool:
        if conn.index > 0:
            return await conn.answer(msg)
        action_ids.append(msg.get("ActionID") or "")
        aid = action_ids[0].encode()
        conn.write(reply(msg, Message("response", "Success", [("Response", "Success")])))
        for first in range(0, items, 5000):
            conn.write(b"".join(LIST_ITEM % (aid, i, i, i) for i in range(first, first + 5000)))
            await conn.drain()
        conn.write(ev("UserEvent", UserEvent="sent"))
        await conn.drain()
        await wait_for(lambda: exp.state.events.get("UserEvent") == 1, timeout=30, what="read")
        protocol = exp.client._protocol
        assert protocol is not None
        held.extend(len(p.items) for p in protocol.session._pending.values() if p.truncated)
        conn.close()  # the connection dies with the list unfinished
        return False

    ami = await ami_server(events=(), on_action={"CoreShowChannels": endless})
    exp = await exporter(server_config(ami.port), backoff_scale=0.05)
    await wait_for(lambda: exp.state.up, what="login")
    rss_before = read_rss()
    await wait_for(lambda: exp.state.disconnects["eof"] == 1, timeout=60, what="the loss")
    rss_after = read_rss()
    print(f"RSS logged in {rss_before / 1e6:.1f} MB, after the loss {rss_after / 1e6:.1f} MB")
    assert held == [1000]
    assert referenced(action_ids[0]) == 0
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, what="reconnect")
    m = await exp.scrape()
    key = {"action": "CoreShowChannels", "reason": "lost", **S}
    assert value(m, "asterisk_ami_list_actions_incomplete_total", **key) == 1
    # Generous: 300,000 items kept would be over 100 MB (measured in the benchmark).
    assert rss_after - rss_before < 64 * 1024 * 1024, (rss_before, rss_after)


@pytest.mark.e2e
async def test_list_timeout_is_counted_and_drops_the_list(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    async def never_complete(conn: Connection, msg: Message) -> bool:
        if conn.actions.count("CoreShowChannels") == 1:
            return await conn.answer(msg)
        aid = (msg.get("ActionID") or "").encode()
        conn.write(reply(msg, Message("response", "Success", [("Response", "Success")])))
        conn.write(b"".join(LIST_ITEM % (aid, i, i, i) for i in range(50)))
        return True

    ami = await ami_server(events=(), on_action={"CoreShowChannels": never_complete})
    exp = await exporter(server_config(ami.port))
    await wait_for(lambda: exp.state.up, what="login")
    await wait_for(resynced(ami.connections[0]), what="the first resync")
    with pytest.raises(TimeoutError):
        await exp.client._request(
            "CoreShowChannels", timeout=0.3, complete_event=CSC[0], list_items=CSC[1]
        )
    protocol = exp.client._protocol
    assert protocol is not None
    assert all(p.action != "CoreShowChannels" for p in protocol.session._pending.values())
    m = await exp.scrape()
    key = {"action": "CoreShowChannels", **S}
    assert value(m, "asterisk_ami_list_actions_incomplete_total", **key, reason="timeout") == 1
    assert value(m, "asterisk_ami_up", **S) == 1


@pytest.mark.e2e
async def test_unterminated_follows_over_the_wire(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """Before, the events after it were swallowed until the ping timeout ended the session."""
    events: list[Message | bytes] = [UNTERMINATED_FOLLOWS, newchannel("5.1")]
    events.append(ev("UserEvent", UserEvent="after"))
    ami = await ami_server(events=events, channels=[listed_channel("5.1")])
    exp = await exporter(server_config(ami.port, ping_interval=0.5))
    await wait_for(lambda: exp.state.events.get("UserEvent") == 1, what="the events after it")
    await wait_for(resynced(ami.connections[0]), what="the resync")
    m = await exp.scrape()
    assert exp.state.channels.keys() == {"5.1"}
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 2
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="ping_timeout") == 0
    assert value(m, "asterisk_ami_up", **S) == 1
