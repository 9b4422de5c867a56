"""The state tracker against the real captures: exact counter and gauge values.

Expected values come from the capture README's observed sequences (what a real Asterisk 22
sent), and, for every capture, from an independent count over the raw bytes.
"""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest
from helpers import FIXTURES, FakeClock, read_capture
from prometheus_client import generate_latest

from ami_exporter.ami.protocol import AMIParser, Message
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state import peers
from ami_exporter.state.channels import DIAL_LABELS, Histogram
from ami_exporter.state.server import ServerState


def messages(name: str) -> list[Message]:
    return AMIParser().feed(read_capture(name))


def replay(name: str, state: ServerState | None = None) -> ServerState:
    state = state or ServerState("test")
    for msg in messages(name):
        if msg.kind == "event":
            state.handle_event(msg)
    return state


def raw_blocks(name: str) -> list[dict[str, str]]:
    """Independent of the parser: split the CRLF stream by hand, first value of each key."""
    body = read_capture(name).split(b"\r\n", 1)[1].decode("utf-8", "replace")
    out = []
    for block in body.split("\r\n\r\n"):
        fields: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, _, value = line.partition(": ")
            fields.setdefault(key, value)
        if "Event" in fields:
            out.append(fields)
    return out


# (capture, hangups by cause, originate (result, reason)) from the captures README.
README_SEQUENCES = [
    ("03-originate-100", {"16": 2}, ("success", "answered")),
    ("03-originate-200", {"17": 1, "0": 1}, ("failure", "busy")),
    ("03-originate-300", {"34": 1, "0": 1}, ("failure", "congestion")),
    ("03-originate-400", {"1": 2}, ("failure", "failed")),
    ("03-originate-600", {"19": 2}, ("failure", "failed")),
    ("03-originate-700", {"18": 2}, ("failure", "failed")),
    ("03-originate-710", {"16": 2}, ("success", "answered")),
    ("03-originate-720", {"21": 2}, ("failure", "failed")),
    ("03-originate-740", {"38": 2}, ("failure", "failed")),
    ("03-originate-invalid-local", {"0": 2}, ("failure", "failed")),
    ("03-originate-invalid-tech", {}, ("failure", "failed")),
]


@pytest.mark.parametrize(("capture", "causes", "originate"), README_SEQUENCES)
def test_originate_captures_exact_values(
    capture: str, causes: dict[str, int], originate: tuple[str, str]
) -> None:
    state = replay(f"{capture}.exporter.raw")
    hangups = Counter[str]()
    for (tech, cause, _name), n in state.hangups.items():
        assert tech == "Local"
        hangups[cause] += n
    assert dict(hangups) == causes
    assert {k: v for k, v in state.originates.items() if v} == {originate: 1}
    channels = sum(causes.values())
    assert state.channels_created == ({"Local": channels} if channels else {})
    # Every call ended: nothing live, but the tech stays exported at 0.
    assert state.channels == {}
    assert state.active_calls == 0
    assert all(n == 0 for n in state.channels_by_tech.values())
    assert all(n == 0 for n in state.channels_by_state.values())
    # Both halves were seen from Newchannel to Hangup, so both have a duration.
    observed = sum(sum(h.counts) for h in state.durations.values())
    assert observed == channels


def test_cause_names_follow_the_reference_table() -> None:
    state = replay("03-originate-200.exporter.raw")
    assert state.hangups == {
        ("Local", "17", "USER_BUSY"): 1,
        ("Local", "0", "NOTDEFINED"): 1,
    }


@pytest.mark.parametrize(
    ("capture", "dials"),
    [
        ("03-originate-800", {"answer": 2}),
        ("03-originate-810", {"busy": 1, "noanswer": 1}),
        ("03-originate-830", {"congestion": 1, "noanswer": 1}),
        ("03-originate-200", {"busy": 1}),
    ],
)
def test_dial_outcomes(capture: str, dials: dict[str, int]) -> None:
    # The usual statuses are exported from 0 (ChannelTracker.DIAL_LABELS).
    assert replay(f"{capture}.exporter.raw").dials == {**dict.fromkeys(DIAL_LABELS, 0), **dials}


@pytest.mark.parametrize("path", sorted(p.name for p in FIXTURES.glob("*.raw*")))
def test_every_capture_matches_an_independent_count(path: str) -> None:
    state = replay(path)
    blocks = raw_blocks(path)
    names = Counter(b["Event"] for b in blocks)
    assert sum(state.events.values()) == sum(names.values())
    hangup_causes = Counter(b.get("Cause", "") for b in blocks if b["Event"] == "Hangup")
    got = Counter[str]()
    for (_tech, cause, _name), n in state.hangups.items():
        got[cause] += n
    assert got == hangup_causes
    assert sum(state.channels_created.values()) == names["Newchannel"]
    # Live channels = Newchannel without a matching Hangup (captures end with all hung up,
    # except the CoreShowChannels one, which hangs its calls up through the Hangup action).
    created = {b["Uniqueid"] for b in blocks if b["Event"] == "Newchannel"}
    gone = {b["Uniqueid"] for b in blocks if b["Event"] == "Hangup"}
    assert set(state.channels) == created - gone


def test_security_events_by_service() -> None:
    state = replay("02-login-failure.monitor.raw")
    assert state.security == {
        ("AMI", "SuccessfulAuth"): 2,
        ("AMI", "InvalidPassword"): 1,
        ("AMI", "InvalidAccountID"): 1,
        ("AMI", "FailedACL"): 1,
        ("AMI", "ChallengeResponseFailed"): 1,
        ("AMI", "RequestNotAllowed"): 3,
        ("AMI", "RequestBadFormat"): 1,
    }


def test_live_channels_and_calls_midway() -> None:
    """Stop the 800 capture (a Dial()-ed call: 4 channels) right after the answer."""
    msgs = [m for m in messages("03-originate-800.exporter.raw") if m.kind == "event"]
    state = ServerState("test")
    for msg in msgs:
        state.handle_event(msg)
        if msg.name == "OriginateResponse":
            break
    assert state.channels_by_tech["Local"] == 4
    assert state.active_calls == 1  # all four share the first channel's Linkedid
    assert state.channels_by_state["up"] == 4


def test_fully_booted_sets_start_and_reload_times() -> None:
    clock = FakeClock()
    state = ServerState("test", clock=clock)
    for msg in messages("03-originate-100.exporter.raw"):
        if msg.kind == "event" and msg.name == "FullyBooted":
            state.handle_event(msg)  # Uptime: 9, LastReload: 9
    assert state.startup_timestamp == clock.now - 9
    assert state.reload_timestamp == clock.now - 9


def _event(name: str, **fields: str) -> Message:
    return Message("event", name, [("Event", name), *fields.items()])


def _newchannel(uid: str, linkedid: str | None = None, chan: str = "PJSIP/100-0001") -> Message:
    return _event(
        "Newchannel", Channel=chan, ChannelStateDesc="Ring", Uniqueid=uid, Linkedid=linkedid or uid
    )


def test_restart_detected_from_uptime_clears_channels() -> None:
    clock = FakeClock()
    state = ServerState("test", clock=clock)
    state.handle_event(_event("FullyBooted", Uptime="500", LastReload="500"))
    state.handle_event(_newchannel("1.1"))
    clock.now += 60
    # Same boot seen again on a reconnect (Uptime grew with the clock): no restart.
    state.handle_event(_event("FullyBooted", Uptime="560", LastReload="560"))
    assert len(state.channels) == 1
    clock.now += 60
    state.handle_event(_event("FullyBooted", Uptime="3", LastReload="3"))
    assert state.channels == {}
    assert state.channels_by_tech == {"PJSIP": 0}
    assert state.restarts_detected == 1
    assert state.startup_timestamp == clock.now - 3


def test_restart_detected_from_corestatus() -> None:
    state = ServerState("test")
    headers = [
        ("Response", "Success"),
        ("CoreStartupDate", "2026-11-27"),
        ("CoreStartupTime", "09:26:28"),
    ]
    status = Message("response", "Success", headers)
    state.apply_core_status(status)
    state.handle_event(_newchannel("1.1"))
    state.apply_core_status(status)
    assert len(state.channels) == 1
    headers[-1] = ("CoreStartupTime", "10:00:00")
    state.apply_core_status(Message("response", "Success", headers))
    assert state.channels == {}


def test_shutdown_clears_channels() -> None:
    state = ServerState("test")
    state.handle_event(_newchannel("1.1"))
    state.handle_event(_event("Shutdown", Shutdown="Cleanly", Restart="True"))
    assert state.shutdown_seen
    assert state.channels == {}


def test_resync_adds_untracked_and_removes_ghosts_after_grace() -> None:
    mono = FakeClock()
    state = ServerState("test", clock=mono, resync_grace=2.0)
    state.handle_event(_newchannel("1.1"))
    state.handle_event(_newchannel("1.2"))
    state.resync_begin()
    snapshot = [
        _event(
            "CoreShowChannel",
            Channel="SIP/trunk-1",
            ChannelStateDesc="Up",
            Uniqueid="1.2",
            Linkedid="1.2",
        ),
        _event(
            "CoreShowChannel",
            Channel="SIP/trunk-2",
            ChannelStateDesc="Up",
            Uniqueid="1.3",
            Linkedid="1.3",
        ),
    ]
    added, removed = state.resync_complete(snapshot)
    assert (added, removed) == (1, 1)
    assert set(state.channels) == {"1.2", "1.3"}
    state.tick()
    assert state.resync_removed == 0  # still in its grace period
    mono.now += 3
    state.tick()
    assert state.resync_removed == 1
    assert state.resync_added == 1


def test_late_hangup_within_grace_is_not_a_ghost() -> None:
    mono = FakeClock()
    state = ServerState("test", clock=mono, resync_grace=2.0)
    state.handle_event(_newchannel("1.1"))
    state.resync_begin()
    state.resync_complete([])
    state.handle_event(_event("Hangup", Channel="PJSIP/100-0001", Uniqueid="1.1", Cause="16"))
    mono.now += 5
    state.tick()
    assert state.resync_removed == 0
    assert state.hangups == {("PJSIP", "16", "NORMAL_CLEARING"): 1}


def test_resync_keeps_channels_newer_than_the_snapshot_and_skips_hung_up_ones() -> None:
    state = ServerState("test")
    state.handle_event(_newchannel("1.1"))
    state.resync_begin()
    # Between the request and the list's end: a new channel, and a Hangup of a listed one.
    state.handle_event(_newchannel("1.5"))
    state.handle_event(_event("Hangup", Channel="PJSIP/100-0001", Uniqueid="1.1", Cause="16"))
    listed = _event(
        "CoreShowChannel", Channel="PJSIP/100-0001", ChannelStateDesc="Up", Uniqueid="1.1"
    )
    assert state.resync_complete([listed]) == (0, 0)
    assert set(state.channels) == {"1.5"}


def test_odd_fields_never_raise_and_labels_stay_bounded() -> None:
    state = ServerState("test")
    state.handle_event(_event("Hangup", Channel="\udcff/x", Cause="999"))
    state.handle_event(_event("Newchannel"))  # no Channel, no Uniqueid
    state.handle_event(_event("OriginateResponse", Response="Failure", Reason="77"))
    state.handle_event(_event("DialEnd", DialStatus="GOTO:ctx,s,1"))
    for i in range(200):
        state.handle_event(_newchannel(f"9.{i}", chan=f"Tech{i}/x"))
        state.handle_event(_event(f"Custom{i}"))
    assert ("other", "other", "UNKNOWN") in state.hangups
    assert state.originates[("failure", "other")] == 1
    assert state.dials == {**dict.fromkeys(DIAL_LABELS, 0), "goto": 1}
    assert len(state.channels_by_tech) <= 33
    assert set(state.events) <= {"Hangup", "Newchannel", "OriginateResponse", "DialEnd", "other"}


def test_legacy_uniqueid_spelling_in_resync() -> None:
    """Asterisk 11's CoreShowChannel says UniqueID; lookups ignore case."""
    state = ServerState("test")
    state.resync_begin()
    item = _event("CoreShowChannel", Channel="SIP/a-1", ChannelStateDesc="Up", UniqueID="7.1")
    assert state.resync_complete([item]) == (1, 0)
    assert state.channels["7.1"].tech == "SIP"


def test_cdr_before_newchannel_does_not_confuse_the_tracker() -> None:
    """In 720 the Cdr of ;2 came before any Newchannel (README finding 5)."""
    blocks = raw_blocks("03-originate-720.exporter.raw")
    order = [b["Event"] for b in blocks]
    assert order.index("Cdr") < order.index("Newchannel")
    state = replay("03-originate-720.exporter.raw")
    assert state.channels == {}
    assert re.fullmatch(r"\d+", next(iter(state.hangups))[1])


def test_resync_removed_is_a_pure_read_and_never_goes_back() -> None:
    mono = FakeClock()
    state = ServerState("test", clock=mono, resync_grace=2.0)
    state.handle_event(_newchannel("1.1"))
    state.resync_begin()
    state.resync_complete([])
    mono.now += 3
    assert state.resync_removed == 1  # past its grace: counted without any tick
    assert state.resync_removed == 1  # reading again changes nothing
    # A Hangup after the grace: the ghost was already counted, and a counter never goes back.
    state.handle_event(_event("Hangup", Channel="PJSIP/100-0001", Uniqueid="1.1", Cause="16"))
    assert state.resync_removed == 1
    state.tick()
    assert state.resync_removed == 1


def test_a_channel_listed_again_within_the_grace_is_no_ghost() -> None:
    mono = FakeClock()
    state = ServerState("test", clock=mono, resync_grace=2.0)
    state.handle_event(_newchannel("1.1"))
    state.resync_begin()
    state.resync_complete([])
    listed = _event(
        "CoreShowChannel", Channel="PJSIP/100-0001", ChannelStateDesc="Up", Uniqueid="1.1"
    )
    state.resync_begin()
    assert state.resync_complete([listed]) == (1, 0)
    mono.now += 5
    assert state.resync_removed == 0
    assert set(state.channels) == {"1.1"}


def _snapshot(state: ServerState) -> dict[str, object]:
    """Every data attribute of every part (not the clock, handlers or links between parts)."""
    parts = {
        "health": state.health,
        "core": state.core,
        "peers": state.peers,
        "tracker": state.tracker,
        "queues": state.queues,
        "vicidial": state.vicidial,
        "security": state.security_events,
    }
    out: dict[str, object] = {"event_counts": dict(state.event_counts)}
    for name, part in parts.items():
        for key, value in vars(part).items():
            if not callable(value) and key != "_vicidial":
                out[f"{name}.{key}"] = copy.deepcopy(value)
    return out


def test_a_scrape_writes_no_state() -> None:
    mono = FakeClock()
    state = replay("03-originate-800.exporter.raw", ServerState("test", clock=mono))
    state.configure(vicidial=True)
    state.handle_event(_newchannel("1.1"))
    state.resync_begin()
    state.resync_complete([])  # 1.1 pending as a possible ghost
    mono.now += 10  # its grace ran out: only a tick or a later resync may settle it
    state.record_session_up()
    before = _snapshot(state)
    text = generate_latest(build_registry([state])).decode()
    assert 'asterisk_ami_resync_channels_removed_total{server="test"} 1.0' in text
    assert _snapshot(state) == before


def test_new_counters_are_exported_from_the_start() -> None:
    text = generate_latest(build_registry([ServerState("x")])).decode()
    assert 'asterisk_restarts_total{server="x"} 0.0' in text
    assert 'asterisk_peers_dropped_total{server="x"} 0.0' in text
    assert "# TYPE asterisk_restarts_total counter" in text
    assert "# HELP asterisk_restarts_total Asterisk restarts detected: a Shutdown" in text


def test_peers_over_the_cap_are_counted_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "MAX_PEERS", 2)
    state = ServerState("x")
    for i in range(5):
        state.handle_event(
            _event("PeerStatus", ChannelType="SIP", Peer=f"SIP/p{i}", PeerStatus="Reachable")
        )
    assert len(state.peers.peers) == 2
    text = generate_latest(build_registry([state])).decode()
    assert 'asterisk_peers_dropped_total{server="x"} 3.0' in text


def test_a_shutdown_and_the_boot_after_it_are_one_restart() -> None:
    clock = FakeClock()
    state = ServerState("test", clock=clock)
    status = [
        ("Response", "Success"),
        ("CoreStartupDate", "2026-11-27"),
        ("CoreStartupTime", "09:00:00"),
    ]
    state.apply_core_status(Message("response", "Success", status))
    state.handle_event(_event("FullyBooted", Uptime="500"))
    state.handle_event(_event("Shutdown", Shutdown="Cleanly", Restart="True"))
    assert state.restarts_detected == 1
    clock.now += 600
    state.record_session_up()
    state.handle_event(_event("FullyBooted", Uptime="5"))  # the boot after the Shutdown
    status[-1] = ("CoreStartupTime", "09:18:15")
    state.apply_core_status(Message("response", "Success", status))
    assert state.restarts_detected == 1
    clock.now += 600
    state.handle_event(_newchannel("2.1"))
    state.handle_event(_event("FullyBooted", Uptime="3"))  # a crash: no Shutdown
    status[-1] = ("CoreStartupTime", "09:28:13")
    state.apply_core_status(Message("response", "Success", status))
    assert state.restarts_detected == 2
    assert state.channels == {}


def test_histogram_buckets_come_from_its_own_bounds() -> None:
    hist = Histogram((1.0, 2.5))
    assert hist.counts == [0, 0, 0]
    for value in (0.5, 2.0, 9.0, 9.0):
        hist.observe(value)
    assert hist.counts == [1, 1, 2]
    assert hist.cumulative() == [("1.0", 1), ("2.5", 2), ("+Inf", 4)]
    assert hist.total == 20.5


def test_one_clock_drives_every_part() -> None:
    clock = FakeClock()
    state = ServerState("test", clock=clock)
    state.configure(vicidial=True)
    assert state.state_since == clock.now
    call_id = "V1127093000000012345"
    state.handle_event(
        _event(
            "Newstate",
            Channel="SIP/a-1",
            Uniqueid="1.1",
            ChannelStateDesc="Up",
            CallerIDName=call_id,
        )
    )
    clock.now += 7200  # past VICIdial's call-ID memory: the same ID is a new call
    state.handle_event(
        _event(
            "Newstate",
            Channel="SIP/a-2",
            Uniqueid="1.2",
            ChannelStateDesc="Up",
            CallerIDName=call_id,
        )
    )
    assert state.vicidial.calls["auto_dial"] == 2
    state.record_received()
    assert state.last_event_timestamp == clock.now
