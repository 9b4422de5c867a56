"""Live queues: callers follow the queue events between polls, waits and talk times.

Replays the real app_queue traffic of ``pjsip/queue`` (Asterisk 22.10.1: 14 callers, 9
answered, 5 abandoned) and ``09-queue-call`` into a :class:`ServerState` with queues on, and
compares with figures computed here from the raw bytes alone: Asterisk's own ``Count`` after
each QueueCallerJoin/Leave, the HoldTime/TalkTime sums, counts and buckets, and the callers
of each admin QueueStatus snapshot of ``queue.admin.raw``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from helpers import FakeClock, capture_events, capture_messages, ev, read_capture

from ami_exporter.ami.protocol import AMIParser, Message
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state import queues as q
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.unit

QUEUE = "pjsip/queue.listener.raw.gz"
QUEUE_CALL = "09-queue-call.exporter.raw"
ADMIN = "pjsip/queue.admin.raw"


# ---------------------------------------------------------------------------- independent truth


def raw_blocks(data: bytes) -> list[dict[str, str]]:
    """Split a CRLF stream (banner first) by hand; the first value of each key wins."""
    body = data.split(b"\r\n", 1)[1].decode("utf-8", "replace")
    out = []
    for block in body.split("\r\n\r\n"):
        fields: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, _, value = line.partition(": ")
            fields.setdefault(key, value)
        if "Event" in fields or "Response" in fields:
            out.append(fields)
    return out


def raw_events(name: str) -> list[dict[str, str]]:
    return [b for b in raw_blocks(read_capture(name)) if "Event" in b]


def seconds_by_queue(name: str, event: str, key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for block in raw_events(name):
        if block["Event"] == event:
            out[block["Queue"]].append(float(block[key]))
    return out


def admin_sessions() -> list[bytes]:
    """queue.admin.raw is one admin session after another, each starting with the banner."""
    data = read_capture(ADMIN)
    banner = data.split(b"\r\n", 1)[0] + b"\r\n"
    return [banner + part for part in data.split(banner) if part]


# ---------------------------------------------------------------------------- helpers


def live_state(clock: FakeClock | None = None) -> ServerState:
    st = ServerState("lab", clock=clock) if clock else ServerState("lab")
    st.configure(queues=True)
    st.record_session_up()
    return st


def scrape(st: ServerState) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in build_registry([st]).collect():
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def histogram_of(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> tuple[float, float, dict[str, float]]:
    """(sum, count, {le: cumulative count}) of one histogram series."""
    want = set(labels.items())
    total = count = 0.0
    buckets = {}
    for (sample, lab), v in samples.items():
        if not sample.startswith(name) or not want <= lab or len(lab - {("le", "")}) < len(want):
            continue
        extra = dict(lab - want)
        if sample == f"{name}_sum" and not extra:
            total = v
        elif sample == f"{name}_count" and not extra:
            count = v
        elif sample == f"{name}_bucket" and set(extra) == {"le"}:
            buckets[extra["le"]] = v
    return total, count, buckets


def expected_buckets(values: list[float], bounds: tuple[float, ...]) -> dict[str, float]:
    out = {f"{b:.1f}": float(sum(1 for v in values if v <= b)) for b in bounds}
    out["+Inf"] = float(len(values))
    return out


# ---------------------------------------------------------------------------- the captures


@pytest.mark.parametrize("name", [QUEUE, QUEUE_CALL])
def test_callers_follow_asterisks_own_count_at_every_queue_event(name: str) -> None:
    st = live_state()
    parsed, raws = capture_events(name), raw_events(name)
    assert [m.name for m in parsed] == [r["Event"] for r in raws]
    checked = 0
    for msg, raw in zip(parsed, raws, strict=True):
        st.handle_event(msg)
        if raw["Event"] in ("QueueCallerJoin", "QueueCallerLeave"):
            # Count: the queue's callers after this event, as app_queue counts them.
            assert st.queues.queues[raw["Queue"]].callers == int(raw["Count"]), raw
            checked += 1
    joins = sum(1 for r in raws if r["Event"] == "QueueCallerJoin")
    assert checked == 2 * joins and joins == (14 if name == QUEUE else 1)
    m = scrape(st)
    assert m[("asterisk_queue_callers", frozenset({("server", "lab"), ("queue", "support")}))] == 0


@pytest.mark.parametrize("name", [QUEUE, QUEUE_CALL])
def test_wait_and_talk_histograms_equal_the_raw_hold_and_talk_times(name: str) -> None:
    st = live_state()
    for msg in capture_events(name):
        st.handle_event(msg)
    m = scrape(st)
    cases = [
        ("asterisk_queue_wait_seconds", "AgentConnect", "HoldTime", {"outcome": "answered"}),
        ("asterisk_queue_wait_seconds", "QueueCallerAbandon", "HoldTime", {"outcome": "abandoned"}),
        ("asterisk_queue_talk_seconds", "AgentComplete", "TalkTime", {}),
    ]
    seen = 0
    for family, event, key, extra in cases:
        bounds = q.TALK_BUCKETS if "talk" in family else q.WAIT_BUCKETS
        for queue, values in seconds_by_queue(name, event, key).items():
            got = histogram_of(m, family, server="lab", queue=queue, **extra)
            assert got == (sum(values), len(values), expected_buckets(values, bounds)), family
            seen += len(values)
    # 9 answered + 5 abandoned + 9 completed in the queue capture; 1 + 0 + 1 in 09.
    assert seen == (23 if name == QUEUE else 2)
    if name == QUEUE_CALL:  # no abandon: the label set is there at 0
        zero = histogram_of(m, "asterisk_queue_wait_seconds", queue="support", outcome="abandoned")
        assert zero[:2] == (0.0, 0.0)


def test_queue_events_are_ignored_and_not_parsed_when_queues_are_off() -> None:
    st = ServerState("lab")
    st.configure(queues=False)
    assert "QueueCallerJoin" not in st.parsed_event_names
    on = ServerState("on")
    on.configure(queues=True)
    assert {"QueueCallerJoin", "AgentComplete"} <= on.parsed_event_names
    on.configure(queues=False)  # a reload turning them off again
    assert "AgentComplete" not in on.parsed_event_names
    for msg in capture_events(QUEUE):
        st.handle_event(msg)
    assert st.queues.queues == {}
    assert st.events["QueueCallerJoin"] == 14  # still counted as events


def test_admin_snapshots_give_the_callers_and_longest_wait_they_list() -> None:
    clock = FakeClock()
    truth = json.loads(read_capture("pjsip/queue.truth.json"))["admin_queue_snapshots_in_order"]
    checked = 0
    for session in admin_sessions():
        st = live_state(clock)  # a fresh exporter whose first poll this is
        blocks = raw_blocks(session)
        status_id = next(
            b["ActionID"] for b in blocks if b.get("Message") == "Queue status will follow"
        )
        params = next(b for b in blocks if b.get("Event") == "QueueParams")
        entries = [b for b in blocks if b.get("Event") == "QueueEntry"]
        assert int(params["Calls"]) == len(entries)
        items = [
            m
            for m in AMIParser().feed(session)
            if m.kind == "event" and m.get("ActionID") == status_id
        ]
        st.resync_begin()
        st.queues.apply_status(items)
        support = st.queues.queues["support"]
        assert support.callers == len(entries) == int(truth[checked]["params"]["Calls"])
        assert support.longest_wait(clock.monotonic()) == max(
            (float(e["Wait"]) for e in entries), default=0.0
        )
        checked += 1
    # The admin polled every ~3 s for 100 s.
    assert checked == len(truth) == 32


# ---------------------------------------------------------------------------- races with a poll


def _join_template() -> Message:
    return next(m for m in capture_messages(QUEUE) if m.name == "QueueCallerJoin")


def _leave_template() -> Message:
    return next(m for m in capture_messages(QUEUE) if m.name == "QueueCallerLeave")


def _entry_template() -> Message:
    raw = next(s for s in admin_sessions() if b"Event: QueueEntry" in s)
    return next(m for m in AMIParser().feed(raw) if m.name == "QueueEntry")


def _with(template: Message, **changes: str) -> Message:
    headers = [(k, changes.get(k, v)) for k, v in template.headers]
    return Message(template.kind, template.name, headers)


def join(uid: str) -> Message:
    return _with(_join_template(), Uniqueid=uid)


def leave(uid: str) -> Message:
    return _with(_leave_template(), Uniqueid=uid)


def snapshot(*uids: str, wait: int = 3) -> list[Message]:
    params = ev("QueueParams", Queue="support", Calls=str(len(uids)), Completed="0")
    entries = [_with(_entry_template(), Uniqueid=u, Wait=str(wait)) for u in uids]
    return [params, *entries]


def waiting(st: ServerState) -> set[str]:
    return set(st.queues.queues["support"].waiting)


def test_events_during_a_poll_win_over_its_older_snapshot() -> None:
    st = live_state()
    for uid in ("a", "b", "gone"):
        st.handle_event(join(uid))
    st.resync_begin()  # the CoreShowChannels, then the queue poll, is sent
    st.handle_event(leave("a"))  # left after the snapshot was taken...
    st.handle_event(join("c"))  # ...and c joined after it
    # The snapshot, older: a still there, c not yet; `gone` left without our seeing its
    # Leave; `early` waited since before we connected.
    st.queues.apply_status(snapshot("a", "b", "early"))
    assert waiting(st) == {"b", "c", "early"}
    assert st.queues.queues["support"].callers == 3
    # The window closed with the poll: a Leave after it counts, a re-listed caller is new.
    st.handle_event(leave("early"))
    st.queues.apply_status(snapshot("b", "c", "a"))
    assert waiting(st) == {"a", "b", "c"}


def test_a_poll_answer_read_with_a_leave_behind_it_keeps_the_leave() -> None:
    """The answer is read whole, and the events behind it in the same read are applied
    before the poll coroutine applies the answer: the Leave must not be undone."""
    st = live_state()
    st.handle_event(join("x"))
    st.handle_event(join("y"))
    st.resync_begin()
    st.handle_event(leave("x"))  # behind QueueStatusComplete in the same TCP read
    st.queues.apply_status(snapshot("x", "y"))
    assert waiting(st) == {"y"}


def test_a_poll_without_its_window_is_taken_as_it_is() -> None:
    st = live_state()
    st.handle_event(join("x"))
    st.queues.apply_status(snapshot("y"))
    assert waiting(st) == {"y"}


def test_a_caller_polled_without_uniqueid_leaves_by_the_count() -> None:
    st = live_state()
    st.queues.apply_status(
        [ev("QueueParams", Queue="support", Calls="2"), ev("QueueEntry", Queue="support")]
    )
    assert st.queues.queues["support"].callers == 2
    st.handle_event(leave("unknown-uid"))
    assert st.queues.queues["support"].callers == 1


# ---------------------------------------------------------------------------- bounds, odd input


def test_queues_and_waiting_callers_are_bounded() -> None:
    st = live_state()
    for i in range(q.MAX_QUEUES + 50):
        st.handle_event(_with(_join_template(), Queue=f"q{i}", Uniqueid=f"u{i}"))
    assert len(st.queues.queues) == q.MAX_QUEUES
    for i in range(q.MAX_WAITING + 10):
        st.handle_event(_with(_join_template(), Queue="q0", Uniqueid=f"w{i}"))
    assert sum(x.callers for x in st.queues.queues.values()) == q.MAX_WAITING


@pytest.mark.parametrize("hold", ["nan", "-5", "inf", "1e400", "abc", "", " 7"])
def test_odd_hold_times_are_skipped_never_raised(hold: str) -> None:
    st = live_state()
    st.handle_event(ev("AgentConnect", Queue="support", HoldTime=hold))
    st.handle_event(ev("QueueCallerAbandon", Queue="support", HoldTime=hold))
    st.handle_event(ev("AgentComplete", Queue="support", TalkTime=hold))
    st.handle_event(ev("QueueCallerJoin", Queue="support"))  # no Uniqueid
    support = st.queues.queues["support"]
    observed = [h.total for h in support.waits.values()] + [support.talk.total]
    if hold == " 7":  # float() accepts the blank, as Asterisk never sends one
        assert observed == [7.0, 7.0, 7.0]
    else:
        assert observed == [0.0, 0.0, 0.0]
    assert support.callers == 0


# ---------------------------------------------------------------------------- down and restart


def _queue_families(st: ServerState) -> set[str]:
    return {n for (n, _) in scrape(st) if re.match(r"asterisk_queue_", n)}


GAUGES = {"asterisk_queue_callers", "asterisk_queue_members", "asterisk_queue_longest_hold_seconds"}


def test_queue_gauges_vanish_while_down_and_until_the_next_poll() -> None:
    st = live_state()
    st.handle_event(join("a"))
    st.queues.apply_status([*snapshot("a"), ev("QueueMember", Queue="support", Status="1")])
    assert _queue_families(st) >= GAUGES
    st.record_session_down()
    down = _queue_families(st)
    assert not GAUGES & down
    assert {"asterisk_queue_completed_total", "asterisk_queue_wait_seconds_count"} <= down
    st.record_session_up()  # logged in again: events were missed, the picture is stale
    assert not GAUGES & _queue_families(st)
    st.resync_begin()
    st.queues.apply_status(snapshot())
    assert _queue_families(st) >= GAUGES
    assert st.queues.queues["support"].callers == 0


def test_a_new_boot_forgets_the_callers_but_keeps_the_histograms() -> None:
    st = live_state()
    booted = next(m for m in capture_events(QUEUE) if m.name == "FullyBooted")
    st.handle_event(booted)
    st.handle_event(join("a"))
    st.handle_event(ev("AgentConnect", Queue="support", HoldTime="4"))
    uptime = float(booted.get("Uptime") or 0)
    st.handle_event(_with(booted, Uptime=str(max(0.0, uptime - 3600))))  # started again
    support = st.queues.queues["support"]
    assert support.callers == 0 and support.waits["answered"].total == 4.0
    assert st.restarts_detected == 1
