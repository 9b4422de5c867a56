"""Per-trunk figures on every real PJSIP (Asterisk 22.10.1) and chan_sip (18.26.4) capture.

Each listener capture is replayed into a :class:`ServerState` chunk by chunk as it was
received (the ``.jsonl`` gives every ``recv()``'s length and time, so the receipt times are
the real ones), and through the real exporter over a loopback socket. The expected figures
are computed here from the raw bytes alone (drop the banner line, split on CRLF CRLF, parse
``Key: Value``, first occurrence wins), by a model written for this test, and cross-checked
with the capture's ``truth.json`` where it has the key (hangups by tech and cause, RTCP events
by tech, sip18's ``pdd_per_dial`` and ``inbound_calls``).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amiserver import LOGIN_EVENTS, TestAMIServer
from helpers import (
    FIXTURES,
    Exporter,
    FakeClock,
    capture_events,
    read_capture,
    run_exporter,
    server_config,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.ami.protocol import AMIParser
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.e2e

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]

# (folder, scenario): every listener capture of tests/fixtures/pjsip and tests/fixtures/sip18.
CAPTURES = (
    ("pjsip", "trunk-mix"),
    ("pjsip", "trunk-down"),
    ("pjsip", "queue"),
    ("pjsip", "exporter-midcall"),
    ("sip18", "trunk-mix-sip"),
    ("sip18", "trunk-down-sip"),
)
OUTCOME_OF_CAUSE = {
    **dict.fromkeys((17,), "busy"),
    **dict.fromkeys((18, 19), "no_answer"),
    **dict.fromkeys((34, 38, 41, 42, 44, 47), "congestion"),
    **dict.fromkeys((1, 3, 22, 28), "unallocated"),
    21: "rejected",
    **dict.fromkeys((0, 16), "cancelled"),
}


def _file(folder: str, name: str) -> str:
    """``folder/name``, or its ``.gz`` (files over 100 kB are stored gzipped)."""
    plain = f"{folder}/{name}"
    return plain if (FIXTURES / plain).exists() else plain + ".gz"


def _chunks(folder: str, scenario: str) -> list[tuple[float, bytes]]:
    """The listener's bytes as received: one (epoch, bytes) per recorded ``recv()``."""
    raw = read_capture(_file(folder, f"{scenario}.listener.raw"))
    records = read_capture(_file(folder, f"{scenario}.listener.jsonl")).decode().splitlines()
    out, pos = [], 0
    for line in records:
        record = json.loads(line)
        if record["dir"] == "S>C":
            out.append((record["epoch"], raw[pos : pos + record["len"]]))
            pos += record["len"]
    assert pos == len(raw), "the .jsonl lengths must cover the .raw exactly"
    return out


# ---------------------------------------------------------------------------- the model


def _blocks(chunks: list[tuple[float, bytes]]) -> Iterator[tuple[float, dict[str, str]]]:
    """Every message after the banner, split on CRLF CRLF, with the epoch of the recv() that
    completed it."""
    data = b"".join(c for _, c in chunks)
    ends, total = [], 0
    for epoch, chunk in chunks:
        total += len(chunk)
        ends.append((total, epoch))
    offset = data.index(b"\r\n") + 2
    k = 0
    for block in data[offset:].split(b"\r\n\r\n"):
        offset += len(block) + 4
        while k < len(ends) - 1 and ends[k][0] < offset - 4:
            k += 1
        fields: dict[str, str] = {}
        for line in block.decode("utf-8", "surrogateescape").split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in fields:
                fields[key] = value
        if fields:
            yield ends[k][1], fields


def _trunk(channel: str) -> str | None:
    tech, _, rest = channel.partition("/")
    if tech not in ("PJSIP", "SIP", "IAX2") or "-" not in rest:
        return None
    endpoint = rest.rsplit("-", 1)[0]
    return endpoint if endpoint and not endpoint.isdigit() else None


@dataclass
class Live:
    trunk: str
    direction: str
    start: tuple[float, float | None]  # receipt epoch, Timestamp
    decided: bool
    pdd_open: bool
    up: tuple[float, float | None] | None = None


def _interval(start: tuple[float, float | None], end: tuple[float, float | None]) -> float:
    if start[1] is not None and end[1] is not None:
        return max(0.0, end[1] - start[1])
    return max(0.0, end[0] - start[0])


@dataclass
class Expected:
    """What the exporter must report, from the raw bytes alone."""

    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    pdd: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pdd_by_uid: dict[str, float] = field(default_factory=dict)
    answered: defaultdict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    rtp: defaultdict[tuple[str, ...], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    live: dict[str, Live] = field(default_factory=dict)
    rtcp_events: Counter[str] = field(default_factory=Counter)
    trunk_hangups_by_tech_cause: Counter[str] = field(default_factory=Counter)

    def feed(self, epoch: float, msg: dict[str, str]) -> None:
        event = msg.get("Event")
        ts = float(msg["Timestamp"]) if "Timestamp" in msg else None
        now = (epoch, ts)
        if event == "Newchannel":
            trunk = _trunk(msg["Channel"])
            if trunk is not None and msg["Uniqueid"] not in self.live:
                inbound = msg["ChannelState"] == "4"
                self.live[msg["Uniqueid"]] = Live(
                    trunk, "inbound" if inbound else "outbound", now, inbound, not inbound
                )
        elif event == "Newstate" and msg["Uniqueid"] in self.live:
            self._newstate(self.live[msg["Uniqueid"]], msg, now)
        elif event == "DialState" and msg["DestUniqueid"] in self.live:
            ch = self.live[msg["DestUniqueid"]]
            ch.decided = True
            if msg["DialStatus"] in ("RINGING", "PROGRESS"):
                self._stop_pdd(ch, msg["DestUniqueid"], now)
        elif event == "Hangup" and msg["Uniqueid"] in self.live:
            self._hangup(self.live.pop(msg["Uniqueid"]), msg, now)
        elif event in ("RTCPSent", "RTCPReceived"):
            self._rtcp(event, msg)

    def _newstate(self, ch: Live, msg: dict[str, str], now: tuple[float, float | None]) -> None:
        state = msg["ChannelState"]
        if not ch.decided:
            ch.decided = True
            if state == "4":
                ch.direction, ch.pdd_open = "inbound", False
                return
        if state in ("5", "6"):
            self._stop_pdd(ch, msg["Uniqueid"], now)
        if state == "6" and ch.up is None:
            ch.up = now

    def _stop_pdd(self, ch: Live, uid: str, now: tuple[float, float | None]) -> None:
        if ch.pdd_open:
            ch.pdd_open = False
            self.pdd[ch.trunk].append(_interval(ch.start, now))
            self.pdd_by_uid[uid] = _interval(ch.start, now)

    def _hangup(self, ch: Live, msg: dict[str, str], now: tuple[float, float | None]) -> None:
        self.trunk_hangups_by_tech_cause[f"{msg['Channel'].split('/')[0]}|{msg['Cause']}"] += 1
        if ch.up is not None:
            outcome = "answered"
            self.answered[(ch.trunk, ch.direction)].append(_interval(ch.up, now))
        else:
            outcome = OUTCOME_OF_CAUSE.get(int(msg["Cause"]), "failed")
        self.calls[(ch.trunk, ch.direction, outcome)] += 1
        code = msg.get("TechCause")
        if code and 100 <= int(code) <= 699:
            self.codes[(ch.trunk, code)] += 1

    def _rtcp(self, event: str, msg: dict[str, str]) -> None:
        trunk = _trunk(msg["Channel"])
        if trunk is None or not int(msg["ReportCount"]):
            return
        self.rtcp_events[f"{event}|{msg['Channel'].split('/')[0]}"] += 1
        stream = "received" if event == "RTCPSent" else "sent"
        for i in range(int(msg["ReportCount"])):
            self.rtp[("loss", trunk, stream)].append(int(msg[f"Report{i}FractionLost"]) / 256)
            self.rtp[("jitter", trunk, stream)].append(int(msg[f"Report{i}IAJitter"]) / 8000)
        if "MES" in msg:
            self.rtp[("mes", trunk, stream)].append(float(msg["MES"]))
        if event == "RTCPReceived" and msg["Report0LSR"] != "0":
            self.rtp[("rtt", trunk)].append(float(msg["RTT"]))


def expected_of(folder: str, scenario: str) -> Expected:
    out = Expected()
    for epoch, msg in _blocks(_chunks(folder, scenario)):
        out.feed(epoch, msg)
    assert not out.live, "every capture ends with no live channel"
    return out


def truth_of(folder: str, scenario: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(read_capture(_file(folder, f"{scenario}.truth.json")))
    return data


# ---------------------------------------------------------------------------- reading state


def replay_as_received(folder: str, scenario: str) -> ServerState:
    """The capture through the real parser into a ServerState, recv() by recv(), with the
    clock at each recv()'s recorded time."""
    clock = FakeClock()
    state = ServerState("lab", clock=clock)
    parser = AMIParser(expect_banner=True)
    for epoch, chunk in _chunks(folder, scenario):
        clock.now = epoch
        for msg in parser.feed(chunk):
            if msg.kind == "event":
                state.handle_event(msg)
    return state


def _hist_figures(hists: dict[object, object]) -> dict[object, tuple[int, float]]:
    out: dict[object, tuple[int, float]] = {}
    for key, hist in hists.items():
        cumulative = hist.cumulative()  # type: ignore[attr-defined]
        out[key] = (cumulative[-1][1], hist.total)  # type: ignore[attr-defined]
    return out


def _approx(figures: dict[object, list[float]]) -> dict[object, object]:
    return {k: (len(v), pytest.approx(math.fsum(v), abs=1e-6)) for k, v in figures.items()}


def assert_state_matches(state: ServerState, exp: Expected) -> None:
    trunks = state.trunks
    assert {k: n for k, n in trunks.calls.items() if n} == dict(exp.calls)
    assert trunks.sip_responses == dict(exp.codes)
    assert set(trunks.active.values()) <= {0}
    assert _hist_figures(trunks.post_dial_delay) == _approx(exp.pdd)  # type: ignore[arg-type]
    assert _hist_figures(trunks.answered_duration) == _approx(exp.answered)  # type: ignore[arg-type]
    rtp = {
        **{("loss", *k): h for k, h in trunks.rtp_loss.items()},
        **{("jitter", *k): h for k, h in trunks.rtp_jitter.items()},
        **{("mes", *k): h for k, h in trunks.rtp_mes.items()},
        **{("rtt", k): h for k, h in trunks.rtp_rtt.items()},
    }
    assert _hist_figures(rtp) == _approx(exp.rtp)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("folder", "scenario"), CAPTURES, ids=[s for _, s in CAPTURES])
def test_replay_gives_the_figures_counted_from_the_raw_bytes(folder: str, scenario: str) -> None:
    exp = expected_of(folder, scenario)
    assert_state_matches(replay_as_received(folder, scenario), exp)
    truth = truth_of(folder, scenario)
    # Every trunk channel's Hangup is one call: per tech and cause, as the truth counts them
    # (no endpoint of these captures is all digits, and every Newchannel is in the stream).
    hangups = truth["hangups_by_tech_cause"]
    assert isinstance(hangups, dict)
    trunk_hangups = {k: n for k, n in hangups.items() if k.split("|")[0] in ("PJSIP", "SIP")}
    assert dict(exp.trunk_hangups_by_tech_cause) == trunk_hangups
    assert exp.rtcp_events == truth["rtcp_by_event_tech"]


def test_trunk_mix_outcomes_are_the_carriers_behaviour() -> None:
    """What CAPTURES.md says SIPp's prefixes did, as outcomes and SIP codes (pjsip)."""
    state = replay_as_received("pjsip", "trunk-mix")
    calls = {k: n for k, n in state.trunks.calls.items() if n}
    assert calls[("carrier", "outbound", "busy")] == 32
    assert calls[("carrier", "outbound", "answered")] == 70
    assert calls[("selfin", "inbound", "answered")] == 7  # the @self loop's incoming leg
    assert calls[("self", "outbound", "answered")] == 7
    assert not any(outcome == "cancelled" for _, _, outcome in calls)  # ring-outs: Cause 19
    codes = {code for _, code in state.trunks.sip_responses}
    assert codes == {"404", "480", "486", "503", "603"}  # no 487: ring-outs say 480
    # Answered calls end with Cause 0 or 16 (no TechCause): all `answered`, none `cancelled`.
    assert sum(n for (_, _, o), n in calls.items() if o == "answered") == 119


def test_chan_sip_pdd_matches_the_truth_per_dial() -> None:
    """sip18: the truth's DialBegin -> first DialState RINGING/PROGRESS (Timestamp headers) for
    every SIP destination, and our creation -> first ringing/progress/answer, agree."""
    exp = expected_of("sip18", "trunk-mix-sip")
    truth = truth_of("sip18", "trunk-mix-sip")
    dials = truth["pdd_per_dial"]
    assert isinstance(dials, list)
    rung = [d for d in dials if d["first_state"]]
    sip = {d["DestUniqueid"]: d["pdd_s"] for d in rung if d["DestChannel"].startswith("SIP/")}
    assert len(rung) == 130 and len(sip) == 122  # the others ring Local/...@dialout
    assert set(sip) <= set(exp.pdd_by_uid)
    for uid, pdd in sip.items():
        # Newchannel comes just before DialBegin, and Newstate Ringing just before DialState.
        assert abs(exp.pdd_by_uid[uid] - pdd) < 0.005, uid
    state = replay_as_received("sip18", "trunk-mix-sip")
    observed = sum(h.cumulative()[-1][1] for h in state.trunks.post_dial_delay.values())
    answered_first = len(exp.pdd_by_uid) - len(sip)  # Up without ringing/progress first
    assert observed == len(sip) + answered_first
    inbound = truth["inbound_calls"]
    assert isinstance(inbound, dict)
    inbound_calls = sum(n for (_, d, _), n in state.trunks.calls.items() if d == "inbound")
    assert inbound_calls == inbound["count"] == 30  # chan_sip: created Down, then Ring


def _scrape_trunk_samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("asterisk_trunk_"):
                labels = frozenset((k, v) for k, v in sample.labels.items() if k != "server")
                out[(sample.name, labels)] = sample.value
    return out


def _expected_samples(exp: Expected) -> dict[tuple[str, frozenset[tuple[str, str]]], object]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], object] = {}
    for (trunk, direction, outcome), n in exp.calls.items():
        labels = {"trunk": trunk, "direction": direction, "outcome": outcome}
        out[("asterisk_trunk_calls_total", frozenset(labels.items()))] = n
    for (trunk, code), n in exp.codes.items():
        labels = {"trunk": trunk, "code": code}
        out[("asterisk_trunk_sip_responses_total", frozenset(labels.items()))] = n
    names = {
        "loss": ("asterisk_trunk_rtp_loss_ratio", ("trunk", "stream")),
        "jitter": ("asterisk_trunk_rtp_jitter_seconds", ("trunk", "stream")),
        "mes": ("asterisk_trunk_rtp_media_experience_score", ("trunk", "stream")),
        "rtt": ("asterisk_trunk_rtp_rtt_seconds", ("trunk",)),
    }
    for (kind, *values), seen in exp.rtp.items():
        name, label_names = names[kind]
        labels = frozenset(zip(label_names, values, strict=True))
        out[(name + "_count", labels)] = len(seen)
        out[(name + "_sum", labels)] = pytest.approx(math.fsum(seen), abs=1e-6)
    for trunk, seen in exp.pdd.items():
        labels = frozenset({("trunk", trunk)})
        out[("asterisk_trunk_post_dial_delay_seconds_count", labels)] = len(seen)
    for (trunk, direction), seen in exp.answered.items():
        labels = frozenset({("trunk", trunk), ("direction", direction)})
        out[("asterisk_trunk_answered_duration_seconds_count", labels)] = len(seen)
    return out


@pytest.mark.parametrize(
    ("folder", "scenario"),
    [("pjsip", "trunk-mix"), ("sip18", "trunk-mix-sip")],
    ids=["trunk-mix", "trunk-mix-sip"],
)
async def test_exporter_over_a_socket_serves_the_counted_figures(
    ami_server: AMIServerFactory, exporter: ExporterFactory, folder: str, scenario: str
) -> None:
    name = _file(folder, f"{scenario}.listener.raw")
    events = capture_events(name)
    ami = await ami_server(events=[*LOGIN_EVENTS, *events])
    exp = await exporter(server_config(ami.port))
    await wait_for(
        lambda: sum(exp.state.events.values()) >= len(events) + len(LOGIN_EVENTS),
        timeout=30,
        what="all replayed events",
    )
    got = _scrape_trunk_samples(await exp.scrape_text())
    expected = expected_of(folder, scenario)
    for key, want in _expected_samples(expected).items():
        assert got.get(key) == want, key
    # Zero-valued grid: every known trunk has all 2 x 8 (direction, outcome) series and its
    # active channels per direction, at 0 where nothing happened.
    trunks = {dict(labels)["trunk"] for (n, labels) in got if n == "asterisk_trunk_calls_total"}
    assert trunks == {t for t, _, _ in expected.calls}
    for trunk in trunks:
        grid = [k for k in got if k[0] == "asterisk_trunk_calls_total" and ("trunk", trunk) in k[1]]
        assert len(grid) == 16, trunk
        for direction in ("outbound", "inbound"):
            labels = frozenset({("trunk", trunk), ("direction", direction)})
            assert got[("asterisk_trunk_active_channels", labels)] == 0
    if folder == "sip18":  # Timestamp headers: the post-dial delays are Asterisk's own
        for trunk, seen in expected.pdd.items():
            labels = frozenset({("trunk", trunk)})
            total = got[("asterisk_trunk_post_dial_delay_seconds_sum", labels)]
            assert total == pytest.approx(math.fsum(seen), abs=1e-6)


def test_a_bad_trunks_regex_is_refused_at_start_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "servers.yml"
    config.write_text(
        "servers:\n"
        "  - name: lab\n"
        "    address: 127.0.0.1:5038\n"
        "    username: exporter\n"
        "    secret: s3cret\n"
        "    trunks_exclude: '(unclosed'\n"
    )
    result = run_exporter([f"--config.file={config}"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"{config}:6: trunks_exclude: invalid regular expression" in result.stderr
    assert "Traceback" not in result.stderr


def test_exporter_connected_mid_call_measures_rtp_but_counts_no_calls() -> None:
    """exporter-midcall: an exporter that connects while the 20 answered calls are up learns
    them from CoreShowChannels (asterisk_active_channels), measures their RTCP by channel name,
    and counts no trunk call: their Newchannel was not seen (documented)."""
    name = "pjsip/exporter-midcall.listener.raw.gz"
    events = capture_events(name)
    cut = next(i for i, m in enumerate(events) if m.name == "Hangup")
    assert sum(1 for m in events[:cut] if m.name == "Newchannel") == 20
    admin = capture_events("pjsip/exporter-midcall.admin.raw")
    listed = [m for m in admin if m.name == "CoreShowChannel"]
    assert len(listed) == 20
    state = ServerState("lab")
    state.record_session_up()
    state.resync_begin()
    state.resync_complete(listed)
    for msg in events[cut:]:
        state.handle_event(msg)
    expected = Expected()
    for msg in events[cut:]:
        if msg.name.startswith("RTCP"):
            expected.feed(0.0, dict(reversed(msg.headers)))
    assert state.trunks.live_channels == 0
    assert {k: n for k, n in state.trunks.calls.items() if n} == {}
    got = {("loss", *k): (h.cumulative()[-1][1], h.total) for k, h in state.trunks.rtp_loss.items()}
    want = {
        k: (len(v), pytest.approx(math.fsum(v))) for k, v in expected.rtp.items() if k[0] == "loss"
    }
    assert got == want and sum(n for n, _ in got.values()) > 0
    assert state.channels_by_tech == {"PJSIP": 0}
