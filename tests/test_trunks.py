"""The trunk model: which channels are trunks, direction, outcomes, SIP codes, post-dial delay,
answered time, RTP quality, the label caps, the zero-valued grid and the switches.

Messages are built here with the header names and values real Asterisk sends (see the captures
in tests/fixtures/pjsip and tests/fixtures/sip18); the captures themselves are replayed in
test_trunks_captures.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FakeClock, ev
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.ami.protocol import Message, parse_block, parse_event
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.servers import load_config_file
from ami_exporter.metrics.collector import AMICollector
from ami_exporter.state import trunks as trunks_module
from ami_exporter.state.channels import Histogram
from ami_exporter.state.server import ServerState
from ami_exporter.state.trunks import MAX_TRUNKS, OUTCOMES, cause_outcome, endpoint_of

pytestmark = pytest.mark.unit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------- builders


def new(uid: str, channel: str, state: str = "0", **extra: str) -> Message:
    desc = {"0": "Down", "4": "Ring", "5": "Ringing", "6": "Up"}.get(state, "Unknown")
    return ev(
        "Newchannel",
        Channel=channel,
        ChannelState=state,
        ChannelStateDesc=desc,
        Uniqueid=uid,
        Linkedid=uid,
        **extra,
    )


def newstate(uid: str, channel: str, state: str, **extra: str) -> Message:
    desc = {"4": "Ring", "5": "Ringing", "6": "Up"}[state]
    return ev(
        "Newstate",
        Channel=channel,
        ChannelState=state,
        ChannelStateDesc=desc,
        Uniqueid=uid,
        Linkedid=uid,
        **extra,
    )


def dialstate(uid: str, channel: str, status: str, **extra: str) -> Message:
    return ev("DialState", DestChannel=channel, DestUniqueid=uid, DialStatus=status, **extra)


def hang(uid: str, channel: str, cause: str = "16", **extra: str) -> Message:
    return ev("Hangup", Channel=channel, Uniqueid=uid, Linkedid=uid, Cause=cause, **extra)


def rtcp(event: str, channel: str, **fields: str) -> Message:
    return ev(event, Channel=channel, Uniqueid="1.1", **fields)


def report(fraction: str = "0", jitter: str = "0", lsr: str = "0") -> dict[str, str]:
    return {
        "ReportCount": "1",
        "Report0SourceSSRC": "0xdee0ee8f",
        "Report0FractionLost": fraction,
        "Report0CumulativeLost": "0",
        "Report0IAJitter": jitter,
        "Report0LSR": lsr,
        "Report0DLSR": "0.0000",
    }


def feed(state: ServerState, *msgs: Message) -> ServerState:
    for msg in msgs:
        state.handle_event(msg)
    return state


def scrape(state: ServerState) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AMICollector([state]))
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def trunk_samples(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].startswith("asterisk_trunk_")}


def up_state(clock: FakeClock | None = None) -> ServerState:
    state = ServerState("lab", clock=clock or FakeClock())
    state.record_session_up()
    return state


def outcomes(state: ServerState) -> dict[tuple[str, str, str], int]:
    return {k: n for k, n in state.trunks.calls.items() if n}


def count(hists: dict[object, object], key: object) -> int:
    hist = hists.get(key)
    return 0 if hist is None else hist.cumulative()[-1][1]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- trunk selection


@pytest.mark.parametrize(
    ("channel", "endpoint"),
    [
        ("PJSIP/carrier-0000000a", "carrier"),
        ("SIP/carrier2-00000009", "carrier2"),
        ("IAX2/iaxtrunk-1234", "iaxtrunk"),
        ("PJSIP/my-carrier-eu-0000001f", "my-carrier-eu"),  # the last '-' ends it
        ("Local/100@test-00000000;1", None),
        ("DAHDI/1-1", None),
        ("PJSIP/carrier", None),  # no '-': not a channel name
        ("PJSIP/-00000001", None),
        ("pjsip/carrier-00000001", None),  # Asterisk spells techs exactly
        ("SIP/carrier-0000002a<ZOMBIE>", None),  # a 1.8/11 masquerade leftover
    ],
)
def test_endpoint_is_the_text_between_the_slash_and_the_last_dash(
    channel: str, endpoint: str | None
) -> None:
    assert endpoint_of(channel) == endpoint


def test_default_selection_takes_every_endpoint_that_is_not_all_digits() -> None:
    state = feed(
        up_state(),
        new("1.1", "PJSIP/carrier-00000001"),
        new("1.2", "PJSIP/1001-00000002", "4"),  # an agent phone
        new("1.3", "SIP/agent7-00000003", "4"),
        new("1.4", "Local/100@test-00000000;1"),
    )
    assert state.trunks.trunks == ["carrier", "agent7"]
    assert state.trunks.live_channels == 2


def test_include_replaces_the_default_and_exclude_applies_after_it() -> None:
    state = up_state()
    state.configure(trunks_include=r"^(carrier|\d{4})", trunks_exclude=r"^1002$")
    feed(
        state,
        new("1.1", "PJSIP/carrier-00000001"),
        new("1.2", "PJSIP/1001-00000002"),
        new("1.3", "PJSIP/1002-00000003"),
        new("1.4", "PJSIP/other_carrier-00000004"),
    )
    assert state.trunks.trunks == ["carrier", "1001"]
    only_exclude = up_state()
    only_exclude.configure(trunks_exclude="^self")
    feed(
        only_exclude,
        new("1.1", "PJSIP/carrier-00000001"),
        new("1.2", "PJSIP/selfin-00000002"),
        new("1.3", "PJSIP/1001-00000003"),  # the digits rule stays without an include
    )
    assert only_exclude.trunks.trunks == ["carrier"]


def test_at_most_64_trunks_per_server_then_other() -> None:
    state = up_state()
    for i in range(MAX_TRUNKS + 6):
        feed(
            state,
            new(f"1.{i}", f"PJSIP/carrier{i}-{i:08x}"),
            hang(f"1.{i}", f"PJSIP/carrier{i}-{i:08x}", "17", TechCause="486"),
        )
    trunks = state.trunks.trunks
    assert len(trunks) == MAX_TRUNKS + 1 and trunks[-1] == "other"
    calls = outcomes(state)
    assert calls[("other", "outbound", "busy")] == 6
    assert calls[("carrier63", "outbound", "busy")] == 1
    assert state.trunks.sip_responses[("other", "486")] == 6
    # A trunk already known keeps its own label once the cap is reached.
    feed(state, new("2.1", "PJSIP/carrier0-0000ffff"), hang("2.1", "PJSIP/carrier0-0000ffff"))
    assert outcomes(state)[("carrier0", "outbound", "cancelled")] == 1


def test_endpoint_decisions_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trunks_module, "MAX_ENDPOINT_DECISIONS", 4)
    state = up_state()
    searches = 0
    state.configure(trunks_include="carrier")
    tracker = state.trunks
    real = tracker.selected

    def counting(endpoint: str) -> bool:
        nonlocal searches
        searches += 1
        return real(endpoint)

    monkeypatch.setattr(tracker, "selected", counting)
    for i in range(10):
        feed(state, new(f"1.{i}", f"PJSIP/carrier-{i:08x}"))
    assert searches == 1  # one decision per endpoint name, not per channel
    for i in range(10):
        feed(state, new(f"2.{i}", f"PJSIP/phone{i}-{i:08x}"))
    assert len(tracker._decisions) == 4  # the cache stays bounded
    assert tracker.trunks == ["carrier"]


def test_odd_endpoint_names_become_bounded_printable_labels() -> None:
    long_name = "c" * 500
    state = feed(
        up_state(),
        new("1.1", f"PJSIP/{long_name}-00000001"),
        new("1.2", "PJSIP/bad\x00name-00000002"),
    )
    labels = state.trunks.trunks
    assert len(labels[0]) == 128 and labels[0].endswith("\u2026")
    assert labels[1] == "bad?name"


# ---------------------------------------------------------------------------- direction


def test_direction_comes_from_the_first_newchannel_state() -> None:
    pj_in, pj_out = "PJSIP/selfin-00000013", "PJSIP/self-00000012"
    state = feed(up_state(), new("1.1", pj_out, "0"), new("1.2", pj_in, "4"))
    assert state.trunks.active == {
        ("self", "outbound"): 1,
        ("self", "inbound"): 0,
        ("selfin", "outbound"): 0,
        ("selfin", "inbound"): 1,
    }


def test_chan_sip_incoming_channel_created_down_then_ring_is_inbound() -> None:
    """chan_sip's handle_request_invite: sip_new(AST_STATE_DOWN), then ast_setstate(RING)."""
    ch = "SIP/carrier-00000010"
    state = feed(up_state(), new("1.1", ch, "0"))
    assert state.trunks.active[("carrier", "outbound")] == 1
    feed(state, newstate("1.1", ch, "4"), newstate("1.1", ch, "6"))
    assert state.trunks.active[("carrier", "outbound")] == 0
    assert state.trunks.active[("carrier", "inbound")] == 1
    feed(state, hang("1.1", ch, "0"))
    assert outcomes(state) == {("carrier", "inbound", "answered"): 1}
    assert not state.trunks.post_dial_delay  # inbound: no post-dial delay


def test_a_dialled_channel_stays_outbound() -> None:
    ch = "SIP/carrier-00000011"
    state = feed(up_state(), new("1.1", ch, "0"), newstate("1.1", ch, "5"))
    feed(state, newstate("1.1", ch, "4"))  # not its first state change: no turn
    assert state.trunks.active[("carrier", "outbound")] == 1
    state2 = feed(up_state(), new("2.1", ch, "0"), dialstate("2.1", ch, "PROGRESS"))
    feed(state2, newstate("2.1", ch, "4"))
    assert state2.trunks.active[("carrier", "outbound")] == 1


@pytest.mark.parametrize("first_state", ["1", "2", "3", "5", "6", "7", "10"])
def test_any_other_creation_state_is_outbound(first_state: str) -> None:
    state = feed(up_state(), new("1.1", "IAX2/iaxtrunk-1", first_state))
    assert state.trunks.active[("iaxtrunk", "outbound")] == 1


# ---------------------------------------------------------------------------- outcomes


CAUSE_TABLE = [
    ("17", "busy"),
    ("18", "no_answer"),
    ("19", "no_answer"),
    *((c, "congestion") for c in ("34", "38", "41", "42", "44", "47")),
    *((c, "unallocated") for c in ("1", "3", "22", "28")),
    ("21", "rejected"),
    ("0", "cancelled"),
    ("16", "cancelled"),
    ("27", "failed"),
    ("102", "failed"),
    ("", "failed"),
    ("x", "failed"),
]


@pytest.mark.parametrize(("cause", "outcome"), CAUSE_TABLE)
def test_cause_of_a_call_that_never_reached_up(cause: str, outcome: str) -> None:
    assert cause_outcome(cause) == outcome
    ch = "PJSIP/carrier-00000001"
    state = feed(up_state(), new("1.1", ch), newstate("1.1", ch, "5"), hang("1.1", ch, cause))
    assert outcomes(state) == {("carrier", "outbound", outcome): 1}


@pytest.mark.parametrize("cause", ["0", "16", "17", "34", "127"])
def test_a_call_that_reached_up_is_answered_whatever_its_cause(cause: str) -> None:
    ch = "PJSIP/carrier-00000001"
    state = feed(up_state(), new("1.1", ch), newstate("1.1", ch, "6"), hang("1.1", ch, cause))
    assert outcomes(state) == {("carrier", "outbound", "answered"): 1}


def test_only_channels_whose_newchannel_was_seen_are_counted() -> None:
    ch = "PJSIP/carrier-00000001"
    state = feed(
        up_state(),
        newstate("1.1", ch, "6"),
        hang("1.1", ch, "17", TechCause="486"),
        hang("1.2", "PJSIP/carrier-00000002", "17", TechCause="486"),
    )
    assert state.trunks.calls == {}
    assert state.trunks.sip_responses == {}


def test_sip_codes_from_techcause_100_to_699_at_most_32_per_trunk() -> None:
    state = up_state()
    techcauses = ["486", "503", "99", "700", "0", "abc", "", *(str(c) for c in range(400, 440))]
    for i, code in enumerate(techcauses):
        ch = f"PJSIP/carrier-{i:08x}"
        feed(state, new(f"1.{i}", ch), hang(f"1.{i}", ch, "17", TechCause=code))
    codes = state.trunks.sip_responses
    assert codes[("carrier", "486")] == 1 and codes[("carrier", "503")] == 1
    assert not {"99", "700", "0", "abc", ""} & {c for _, c in codes}
    assert len(codes) == 33  # 32 codes, then `other`
    assert codes[("carrier", "other")] == 40 - 30
    assert sum(codes.values()) == 42


def test_a_hangup_without_techcause_counts_no_sip_code() -> None:
    """chan_sip (Asterisk 18) and answered PJSIP calls: no TechCause at all."""
    ch = "SIP/carrier-00000001"
    state = feed(up_state(), new("1.1", ch), hang("1.1", ch, "17"))
    assert state.trunks.sip_responses == {}
    assert outcomes(state) == {("carrier", "outbound", "busy"): 1}


# ---------------------------------------------------------------------------- times


def test_post_dial_delay_uses_the_timestamp_headers_when_present() -> None:
    clock = FakeClock(1000.0)
    ch = "SIP/carrier-00000001"
    state = feed(up_state(clock), new("1.1", ch, Timestamp="1796112737.804867"))
    clock.now += 10.0  # receipt time moves on: not what is measured
    feed(state, dialstate("1.1", ch, "PROGRESS", Timestamp="1796112739.156968"))
    clock.now += 3.0
    feed(state, newstate("1.1", ch, "6", Timestamp="1796112741.156968"))
    clock.now += 50.0
    feed(state, hang("1.1", ch, "16", Timestamp="1796112745.656968"))
    pdd = state.trunks.post_dial_delay["carrier"]
    assert pdd.cumulative()[-1][1] == 1  # one observation: progress stops it, not Up
    assert pdd.total == pytest.approx(1.352101)
    answered = state.trunks.answered_duration[("carrier", "outbound")]
    assert answered.total == pytest.approx(4.5)


def test_post_dial_delay_falls_back_to_receipt_time() -> None:
    clock = FakeClock(1000.0)
    ch = "PJSIP/carrier-00000001"
    state = feed(up_state(clock), new("1.1", ch))
    clock.now += 2.25
    feed(state, newstate("1.1", ch, "5"))
    clock.now += 1.0
    feed(state, newstate("1.1", ch, "6", Timestamp="1796112741.1"))  # one side only: receipt
    clock.now += 7.0
    feed(state, hang("1.1", ch, "0"))
    assert state.trunks.post_dial_delay["carrier"].total == pytest.approx(2.25)
    assert state.trunks.answered_duration[("carrier", "outbound")].total == pytest.approx(7.0)


def test_answer_without_ringing_stops_the_post_dial_delay() -> None:
    clock = FakeClock(1000.0)
    ch = "PJSIP/carrier-00000001"
    state = feed(up_state(clock), new("1.1", ch))
    clock.now += 0.75
    feed(state, newstate("1.1", ch, "6"), dialstate("1.1", ch, "RINGING"))
    assert state.trunks.post_dial_delay["carrier"].total == pytest.approx(0.75)
    assert count(state.trunks.post_dial_delay, "carrier") == 1


def test_a_ringing_dialstate_of_a_channel_that_is_not_a_trunk_does_nothing() -> None:
    state = feed(
        up_state(),
        new("1.1", "PJSIP/carrier-00000001"),
        dialstate("9.9", "Local/x@dialout-00000002;1", "RINGING"),
        dialstate("1.1", "PJSIP/carrier-00000001", "ANSWER"),
    )
    assert not state.trunks.post_dial_delay


# ---------------------------------------------------------------------------- RTCP


def test_rtcp_sent_and_received_give_the_two_streams() -> None:
    state = feed(
        up_state(),
        rtcp("RTCPSent", "PJSIP/carrier2-0000000a", MES="88.1", **report("11", "43")),
        rtcp(
            "RTCPReceived",
            "PJSIP/carrier2-0000000a",
            RTT="0.0450",
            MES="70.5",
            **report("0", "8", lsr="3287447552"),
        ),
    )
    t = state.trunks
    assert t.rtp_loss[("carrier2", "received")].total == pytest.approx(11 / 256)
    assert t.rtp_jitter[("carrier2", "received")].total == pytest.approx(43 / 8000)
    assert t.rtp_mes[("carrier2", "received")].total == pytest.approx(88.1)
    assert t.rtp_loss[("carrier2", "sent")].total == 0.0
    assert t.rtp_jitter[("carrier2", "sent")].total == pytest.approx(0.001)
    assert t.rtp_mes[("carrier2", "sent")].total == pytest.approx(70.5)
    assert t.rtp_rtt["carrier2"].total == pytest.approx(0.045)
    # A loss-free report lands in the le=0 bucket.
    assert t.rtp_loss[("carrier2", "sent")].cumulative()[0] == ("0.0", 1)


def test_missing_rtcp_values_stay_missing() -> None:
    ch = "PJSIP/carrier-00000001"
    no_fraction = report(jitter="5")
    del no_fraction["Report0FractionLost"]
    state = feed(
        up_state(),
        rtcp("RTCPSent", ch, **no_fraction),  # no MES (before 18.17/20.2), no fraction
        rtcp("RTCPSent", ch, MES="88.1", ReportCount="0"),  # an SR without a block
        rtcp("RTCPReceived", ch, RTT="0.0000", MES="88.1", **report()),  # LSR 0: no RTT yet
        rtcp("RTCPReceived", ch, RTT="0.0312", **report(lsr="12345")),  # RTT, no MES
        rtcp("RTCPSent", ch, MES="nan", **report(fraction="x", jitter="-1")),
    )
    t = state.trunks
    assert count(t.rtp_loss, ("carrier", "received")) == 0
    assert count(t.rtp_jitter, ("carrier", "received")) == 1
    assert count(t.rtp_mes, ("carrier", "received")) == 0
    assert count(t.rtp_mes, ("carrier", "sent")) == 1
    assert count(t.rtp_rtt, "carrier") == 1
    assert t.rtp_rtt["carrier"].total == pytest.approx(0.0312)
    # Never a made-up 0: no received-stream loss or MES series at all.
    received = [
        name
        for name, labels in trunk_samples(scrape(state))
        if ("stream", "received") in labels and "jitter" not in name
    ]
    assert received == []


def test_rtt_from_wrapped_ntp_arithmetic_is_dropped() -> None:
    """update_rtt_stats() stores a wrapped value (~65536 s) when the clocks are skewed."""
    state = feed(
        up_state(),
        rtcp("RTCPReceived", "PJSIP/c-1", RTT="65535.9999", **report(lsr="1")),
    )
    assert state.trunks.rtp_rtt == {}


def test_every_report_block_is_one_observation() -> None:
    blocks = {"ReportCount": "2"}
    for i, (fraction, jitter) in enumerate((("8", "16"), ("16", "80"))):
        blocks[f"Report{i}FractionLost"] = fraction
        blocks[f"Report{i}IAJitter"] = jitter
    state = feed(up_state(), rtcp("RTCPSent", "SIP/carrier-1", MES="80.0", **blocks))
    t = state.trunks
    assert count(t.rtp_loss, ("carrier", "received")) == 2
    assert t.rtp_loss[("carrier", "received")].total == pytest.approx(24 / 256)
    assert t.rtp_jitter[("carrier", "received")].total == pytest.approx(96 / 8000)
    assert count(t.rtp_mes, ("carrier", "received")) == 1  # one score per report


def test_rtcp_of_a_call_already_up_when_we_connected_is_measured() -> None:
    state = feed(up_state(), rtcp("RTCPSent", "PJSIP/carrier-0000015f", **report("3", "4")))
    assert count(state.trunks.rtp_loss, ("carrier", "received")) == 1
    assert state.trunks.calls[("carrier", "outbound", "failed")] == 0  # known: grid at 0


def test_rtcp_on_non_trunk_channels_is_ignored() -> None:
    state = feed(
        up_state(),
        rtcp("RTCPSent", "PJSIP/1001-00000001", **report("3", "4")),
        rtcp("RTCPSent", "Local/x@y-00000001;1", **report("3", "4")),
    )
    assert state.trunks.rtp_loss == {} and state.trunks.trunks == []


def test_the_bisecting_histogram_buckets_as_the_channel_histogram() -> None:
    bounds = trunks_module.PDD_BUCKETS
    values = [-1.0, 0.0, *bounds, *(b + 1e-9 for b in bounds), *(b - 1e-9 for b in bounds), 1e9]
    ours, reference = trunks_module._Histogram(bounds), Histogram(bounds)
    for value in values:
        ours.observe(value)
        reference.observe(value)
    assert ours.cumulative() == reference.cumulative()
    assert ours.total == reference.total


@pytest.mark.parametrize("key", ["Timestamp", "TechCause", "Cause", "Channel", "Missing"])
def test_get_optional_answers_as_get_on_lazy_and_parsed_events(key: str) -> None:
    block = (
        b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/carrier-00000001\r\n"
        b"Uniqueid: 1.1\r\nCause: 17\r\nCause-txt: User busy\r\nTechCause: 486"
    )
    for sample in (block, block.replace(b"TechCause: 486", b"Timestamp: 1796112739.851874")):
        lazy, parsed = parse_event("Hangup", sample), parse_block(sample)
        assert lazy is not None and parsed is not None
        assert lazy.get_optional(key) == parsed.get_optional(key) == parsed.get(key)


# ---------------------------------------------------------------------------- exported series


def test_a_known_trunk_exports_its_full_grid_at_zero() -> None:
    state = feed(up_state(), new("1.1", "PJSIP/carrier-00000001"))
    samples = trunk_samples(scrape(state))
    grid = {
        (dict(labels)["direction"], dict(labels)["outcome"]): v
        for (name, labels), v in samples.items()
        if name == "asterisk_trunk_calls_total"
    }
    assert grid == {(d, o): 0.0 for d in ("outbound", "inbound") for o in OUTCOMES}
    active = {
        dict(labels)["direction"]: v
        for (name, labels), v in samples.items()
        if name == "asterisk_trunk_active_channels"
    }
    assert active == {"outbound": 1.0, "inbound": 0.0}
    assert len(samples) == 18  # nothing else until something is observed


def test_active_channels_are_not_exported_while_the_session_is_down() -> None:
    state = feed(up_state(), new("1.1", "PJSIP/carrier-00000001"))
    state.record_session_down()
    names = {name for name, _ in trunk_samples(scrape(state))}
    assert "asterisk_trunk_active_channels" not in names
    assert "asterisk_trunk_calls_total" in names


def test_active_channels_come_back_only_after_the_first_resync_of_a_new_session() -> None:
    """As the channel gauges: events were missed while down, so the trunk channels are
    stale until a CoreShowChannels has dropped the ones that ended meanwhile."""
    state = feed(up_state(), new("1.1", "PJSIP/carrier-00000001"))
    state.record_session_down()
    state.record_session_up()
    names = {name for name, _ in trunk_samples(scrape(state))}
    assert "asterisk_trunk_active_channels" not in names
    state.resync_begin()
    state.resync_complete([])
    active = {
        dict(labels)["direction"]: v
        for (name, labels), v in trunk_samples(scrape(state)).items()
        if name == "asterisk_trunk_active_channels"
    }
    assert active == {"outbound": 0.0, "inbound": 0.0}


def test_series_budget_of_a_64_trunk_server() -> None:
    """Every family of 64 trunks (and `other`) fully exercised: the per-server budget."""
    state = up_state()
    for i in range(MAX_TRUNKS + 1):
        for direction, first in (("out", "0"), ("in", "4")):
            uid, ch = f"{i}.{direction}", f"PJSIP/carrier{i}-{direction}{i:06x}"
            feed(
                state,
                new(uid, ch, first),
                newstate(uid, ch, "5") if first == "0" else newstate(uid, ch, "6"),
                newstate(uid, ch, "6"),
                rtcp("RTCPSent", ch, MES="88.1", **report("1", "8")),
                rtcp("RTCPReceived", ch, MES="88.1", RTT="0.02", **report("1", "8", "7")),
                hang(uid, ch, "16", TechCause="200" if first == "0" else "486"),
            )
    samples = trunk_samples(scrape(state))
    per_trunk = {
        name: sum(1 for (n, labels) in samples if n == name and ("trunk", "carrier0") in labels)
        for name in {n for n, _ in samples}
    }
    # calls 2x8, active 2, PDD 11 bounds + Inf + sum + count, answered 2 x (10 + 3),
    # loss 2 x (8 + 3), jitter 2 x (8 + 3), RTT 9 + 3, MES 2 x (9 + 3), 2 SIP codes.
    assert sum(per_trunk.values()) == 16 + 2 + 14 + 26 + 22 + 22 + 12 + 24 + 2 == 140
    assert len({dict(labels)["trunk"] for _, labels in samples}) == MAX_TRUNKS + 1
    assert len(samples) == 140 * (MAX_TRUNKS + 1)


# ---------------------------------------------------------------------------- switches, upkeep


def test_trunks_off_does_no_trunk_work_and_exports_no_trunk_series() -> None:
    state = up_state()
    state.configure(trunks=False, rtp=False)
    assert not {"DialState", "RTCPSent", "RTCPReceived"} & state.parsed_event_names
    ch = "PJSIP/carrier-00000001"
    feed(state, new("1.1", ch), newstate("1.1", ch, "6"), hang("1.1", ch, "16"))
    feed(state, rtcp("RTCPSent", ch, **report("3", "4")))
    assert state.trunks.live_channels == 0 and state.trunks.trunks == []
    assert [k for k, v in trunk_samples(scrape(state)).items()] == []
    assert state.channels_created == {"PJSIP": 1}  # the channel families still work


def test_rtp_off_parses_no_rtcp_while_trunks_go_on() -> None:
    state = up_state()
    state.configure(rtp=False)
    assert {"DialState"} <= state.parsed_event_names
    assert not {"RTCPSent", "RTCPReceived"} & state.parsed_event_names
    ch = "PJSIP/carrier-00000001"
    feed(state, new("1.1", ch), rtcp("RTCPSent", ch, **report("3", "4")), hang("1.1", ch, "17"))
    assert state.trunks.rtp_loss == {}
    assert outcomes(state) == {("carrier", "outbound", "busy"): 1}


def test_rtp_without_trunks_measures_quality_but_no_calls() -> None:
    state = up_state()
    state.configure(trunks=False)
    ch = "PJSIP/carrier-00000001"
    feed(state, new("1.1", ch), rtcp("RTCPSent", ch, **report("3", "4")), hang("1.1", ch, "17"))
    assert count(state.trunks.rtp_loss, ("carrier", "received")) == 1
    assert state.trunks.calls == {} and state.trunks.active == {}


@pytest.mark.parametrize("how", ["shutdown", "new boot"])
def test_live_trunk_channels_are_cleared_where_the_channels_are(how: str) -> None:
    ch = "PJSIP/carrier-00000001"
    state = feed(
        up_state(),
        ev("FullyBooted", Uptime="100", LastReload="100"),
        new("1.1", ch),
        newstate("1.1", ch, "6"),
    )
    if how == "shutdown":
        feed(state, ev("Shutdown", Shutdown="Uncleanly", Restart="True"))
    else:
        feed(state, ev("FullyBooted", Uptime="3", LastReload="3"))
    assert state.trunks.active[("carrier", "outbound")] == 0
    assert state.trunks.live_channels == 0
    feed(state, hang("1.1", ch, "16"))  # a Uniqueid of the old boot: nothing to count
    assert outcomes(state) == {}


def test_a_resync_drops_trunk_channels_asterisk_no_longer_has() -> None:
    clock = FakeClock(1000.0)
    state = ServerState("lab", clock=clock, resync_grace=5.0)
    state.record_session_up()
    a, b, c = "PJSIP/carrier-00000001", "PJSIP/carrier-00000002", "PJSIP/carrier-00000003"
    feed(state, new("1.1", a), new("1.2", b), new("1.3", c))
    state.resync_begin()
    listed = ev("CoreShowChannel", Channel=a, Uniqueid="1.1", ChannelStateDesc="Up")
    state.resync_complete([listed])
    assert state.trunks.active[("carrier", "outbound")] == 1
    feed(state, hang("1.2", b, "17"))  # late, within the grace: still counted
    clock.now += 6.0
    state.tick()
    feed(state, hang("1.3", c, "17"))  # after the grace: forgotten
    assert outcomes(state) == {("carrier", "outbound", "busy"): 1}
    assert state.trunks.active[("carrier", "outbound")] == 1


def test_live_trunk_channels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trunks_module, "MAX_TRUNK_CHANNELS", 3)
    state = up_state()
    for i in range(5):
        feed(state, new(f"1.{i}", f"PJSIP/carrier-{i:08x}"))
    assert state.trunks.live_channels == 3 and state.trunks.untracked == 2
    assert state.trunks.active[("carrier", "outbound")] == 3


# ---------------------------------------------------------------------------- configuration


HEAD = "servers:\n  - name: a\n    address: 127.0.0.1:5038\n    username: u\n    secret: s\n"
DEFAULTS = {"ping_interval": 10.0, "resync_interval": 60.0, "connect_timeout": 5.0}


def test_trunk_regexes_are_per_server_yaml_keys(tmp_path: Path) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(HEAD + "    trunks_include: '^carrier'\n    trunks_exclude: 'test$'\n")
    (server,) = load_config_file(str(path), DEFAULTS)
    assert (server.trunks_include, server.trunks_exclude) == ("^carrier", "test$")


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("    trunks_include: '[a-'\n", "trunks_include: invalid regular expression"),
        ("    trunks_exclude: ''\n", "trunks_exclude: must be a non-empty regular expression"),
    ],
)
def test_a_bad_trunk_regex_names_the_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(HEAD + line)
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path), DEFAULTS)
    assert str(info.value).startswith(f"{path}:6: {what}")
