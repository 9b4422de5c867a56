"""Correct series across down sessions, Asterisk restarts and exporter restarts.

Over real sockets (the test AMI server replaying real Asterisk 22.10.1 traffic) and HTTP:

* while the session is down the live families (active channels and calls, queue gauges,
  ping round trip, start and reload times) are not exported at all, and the counters stay;
* after a reconnect the live set is not exported until the first resync has corrected it;
* after ``kill -9`` of Asterisk (the socket reset, a new boot at the next login) the
  channels it had are counted in ``asterisk_channels_lost_total{reason="restart"}`` and none
  is counted live;
* an exporter restarted mid-call (``pjsip/exporter-midcall``) exports the counters of the
  label sets it knows at 0.

Expected figures are computed here from the raw capture bytes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from amiserver import CORE_STATUS, LOGIN_EVENTS, Connection, TestAMIServer, reply
from helpers import (
    Capture,
    Exporter,
    FakeClock,
    capture_events,
    capture_messages,
    read_capture,
    samples_of,
    server_config,
    value,
    wait_for,
)

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ServerSession
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.e2e

MIDCALL = "pjsip/exporter-midcall.listener.raw.gz"
MIDCALL_ADMIN = "pjsip/exporter-midcall.admin.raw"
S = {"server": "test"}
LIVE_FAMILIES = (
    "asterisk_active_channels",
    "asterisk_active_channels_by_state",
    "asterisk_active_calls",
    "asterisk_ami_ping_rtt_seconds",
    "asterisk_core_startup_timestamp_seconds",
    "asterisk_core_reload_timestamp_seconds",
)
# The DialStatus values of a Dial that ran (app_dial's DIALSTATUS), exported from 0.
DIAL_LABELS = ("answer", "busy", "noanswer", "cancel", "congestion", "chanunavail")
AmiServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]


# ---------------------------------------------------------------------------- raw truth


def raw_events(name: str) -> list[dict[str, str]]:
    """Split a CRLF stream (banner first) by hand; the first value of each key wins."""
    body = read_capture(name).split(b"\r\n", 1)[1].decode("utf-8", "replace")
    out = []
    for block in body.split("\r\n\r\n"):
        fields: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, _, val = line.partition(": ")
            fields.setdefault(key, val)
        if "Event" in fields:
            out.append(fields)
    return out


def midcall_cut() -> int:
    """The index of the first hangup-related event of the midcall run: every call is up."""
    return next(
        i
        for i, b in enumerate(raw_events(MIDCALL))
        if b["Event"] in ("SoftHangupRequest", "HangupRequest", "Hangup")
    )


def live_at(blocks: list[dict[str, str]]) -> set[str]:
    created = {b["Uniqueid"] for b in blocks if b["Event"] == "Newchannel"}
    return created - {b["Uniqueid"] for b in blocks if b["Event"] == "Hangup"}


def admin_channels() -> list[Message]:
    return [m for m in capture_messages(MIDCALL_ADMIN) if m.name == "CoreShowChannel"]


def with_fields(msg: Message, **changes: str) -> Message:
    return Message(msg.kind, msg.name, [(k, changes.get(k, v)) for k, v in msg.headers])


def present(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in samples}


# ---------------------------------------------------------------------------- exporter restart


async def test_an_exporter_restarted_mid_call_exports_known_counters_at_zero(
    ami_server: AmiServerFactory, exporter: ExporterFactory
) -> None:
    raws = raw_events(MIDCALL)
    cut = midcall_cut()
    before, after = raws[:cut], raws[cut:]
    # Independent truth: at the cut the 20 calls are up, the admin snapshot lists exactly
    # them, and nothing after the cut creates a channel or ends a Dial.
    listed = {m.get("Uniqueid") for m in admin_channels()}
    assert live_at(before) == listed and len(listed) == 20
    after_names = Counter(b["Event"] for b in after)
    assert after_names["Newchannel"] == after_names["DialEnd"] == 0
    hangups_after = Counter(b["Cause"] for b in after if b["Event"] == "Hangup")
    assert hangups_after == {"0": 20}

    later = capture_events(MIDCALL)[cut:]
    release = asyncio.Event()

    async def core_show_channels(conn: Connection, msg: Message) -> None:
        await conn.answer(msg)  # the snapshot of the 20 live channels
        await release.wait()
        conn.write(*later)  # then what happened after the exporter connected

    ami = await ami_server(
        channels=admin_channels(), on_action={"CoreShowChannels": core_show_channels}
    )
    exp = await exporter(server_config(ami.port))
    await wait_for(lambda: exp.state.resyncs_completed == 1, what="the first resync")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 20
    assert value(m, "asterisk_ami_resync_channels_added_total", **S) == 20
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 0
    assert {k: v for k, v in samples_of(m, "asterisk_dials_total").items()} == {
        frozenset({*S.items(), ("status", status)}): 0.0 for status in DIAL_LABELS
    }
    assert value(m, "asterisk_originates_total", **S, result="success", reason="answered") == 0
    assert value(m, "asterisk_channel_duration_seconds_count", **S, tech="PJSIP") == 0
    release.set()
    await wait_for(lambda: exp.live() == 0, what="the 20 hangups")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert (
        value(m, "asterisk_hangups_total", **S, tech="PJSIP", cause="0", cause_name="NOTDEFINED")
        == 20
    )
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 0
    # Learned by a resync: no Newchannel seen, so no duration observed.
    assert value(m, "asterisk_channel_duration_seconds_count", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_channels_lost_total", **S, reason="restart") == 0


# ---------------------------------------------------------------------------- kill -9, reconnect


class Outage:
    """The test AMI server as an Asterisk that dies: ``kill()`` resets the live connection
    and refuses new ones; ``back(...)`` lets the next login in, with its login events and
    CoreShowChannels items."""

    def __init__(self, first_events: list[Message], first_channels: list[Message]) -> None:
        self.first = (first_events, first_channels)
        self.next: tuple[list[Message], list[Message]] | None = None
        self.down = False
        self.ami: TestAMIServer | None = None

    async def on_connect(self, conn: Connection) -> bool:
        if self.down:
            return False  # closed before the banner: nothing listens any more
        events, channels = self.first if conn.index == 0 or self.next is None else self.next
        conn.events, conn.channels = list(events), list(channels)
        return True

    def kill(self) -> None:
        assert self.ami is not None
        self.down = True
        for conn in self.ami.connections:
            conn.reset()

    def back(self, events: list[Message], channels: list[Message]) -> None:
        self.next = (events, channels)
        self.down = False


async def _up_with_20_calls(
    ami_server: AmiServerFactory, exporter: ExporterFactory, outage: Outage, **options: object
) -> tuple[TestAMIServer, Exporter]:
    ami = await ami_server(on_connect=outage.on_connect, **options)
    outage.ami = ami
    exp = await exporter(server_config(ami.port, ping_interval=0.5), backoff_scale=0.01)
    await wait_for(
        lambda: exp.state.resyncs_completed >= 1 and exp.live() == 20, what="20 live channels"
    )
    return ami, exp


def midcall_login() -> tuple[list[Message], Message]:
    events = capture_events(MIDCALL)[: midcall_cut()]
    booted = next(m for m in events if m.name == "FullyBooted")
    return events, booted


async def test_kill_9_hides_live_series_then_counts_the_lost_channels_at_the_new_boot(
    ami_server: AmiServerFactory, exporter: ExporterFactory
) -> None:
    events, booted = midcall_login()
    lost = len(live_at(raw_events(MIDCALL)[: midcall_cut()]))
    assert lost == 20
    outage = Outage(events, admin_channels())
    _ami, exp = await _up_with_20_calls(ami_server, exporter, outage)
    m = await exp.scrape()
    assert present(m) >= set(LIVE_FAMILIES) - {"asterisk_ami_ping_rtt_seconds"}
    assert value(m, "asterisk_active_calls", **S) == 20

    outage.kill()
    await wait_for(lambda: not exp.state.up, what="the session down")
    m = await exp.scrape()
    assert value(m, "asterisk_ami_up", **S) == 0
    assert not present(m) & set(LIVE_FAMILIES)
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 20  # counters stay
    assert value(m, "asterisk_ami_last_event_timestamp_seconds", **S) is not None

    # Asterisk is started again: FullyBooted says it has been up 2 s, and it has no channel.
    attempts = exp.state.connection_attempts
    outage.back([with_fields(booted, Uptime="2"), *LOGIN_EVENTS[1:]], [])
    await wait_for(lambda: exp.state.connection_attempts > attempts, what="a reconnect")
    await wait_for(lambda: exp.state.up and exp.state.resyncs_completed >= 2, what="a resync")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_active_calls", **S) == 0
    assert value(m, "asterisk_channels_lost_total", **S, reason="restart") == lost
    assert value(m, "asterisk_channels_lost_total", **S, reason="shutdown") == 0
    assert value(m, "asterisk_restarts_total", **S) == 1
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0  # lost, not ghosts
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 20


async def test_a_reconnect_to_the_same_boot_shows_no_live_series_until_the_resync(
    ami_server: AmiServerFactory, exporter: ExporterFactory
) -> None:
    events, booted = midcall_login()
    channels = admin_channels()
    outage = Outage(events, channels)
    held = asyncio.Event()
    release = asyncio.Event()

    async def core_show_channels(conn: Connection, msg: Message) -> None:
        if conn.index > 0:
            held.set()
            await release.wait()
        await conn.answer(msg)

    _ami, exp = await _up_with_20_calls(
        ami_server, exporter, outage, on_action={"CoreShowChannels": core_show_channels}
    )
    outage.kill()
    await wait_for(lambda: not exp.state.up, what="the session down")
    # Back, same boot (the same FullyBooted: Uptime moves by the seconds the test took, within
    # the tolerance); 15 of the 20 calls ended while the exporter was away.
    outage.back([booted, *LOGIN_EVENTS[1:]], channels[:5])
    await asyncio.wait_for(held.wait(), 10)
    m = await exp.scrape()
    assert value(m, "asterisk_ami_up", **S) == 1
    assert not present(m) & {"asterisk_active_channels", "asterisk_active_calls"}
    release.set()
    await wait_for(lambda: exp.state.resyncs_completed >= 2, what="the resync")
    m = await exp.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 5
    assert value(m, "asterisk_active_calls", **S) == 5
    assert value(m, "asterisk_restarts_total", **S) == 0
    assert value(m, "asterisk_channels_lost_total", **S, reason="restart") == 0
    await wait_for(lambda: exp.state.resync_removed == 15, what="the 15 ghosts after the grace")


# ---------------------------------------------------------------------------- Shutdown, trunk-down


def test_a_shutdown_and_the_boot_after_it_of_the_real_restart_capture() -> None:
    monitor = "06-reload-shutdown.monitor.raw"
    again = "06-reload-shutdown.monitor-reconnect.raw"
    raws = raw_events(monitor)
    at_shutdown = next(i for i, b in enumerate(raws) if b["Event"] == "Shutdown")
    lost = len(live_at(raws[:at_shutdown]))
    st = ServerState("test")
    st.record_session_up()
    for msg in capture_events(monitor):
        st.handle_event(msg)
    assert st.tracker.lost == {"shutdown": lost, "restart": 0}
    st.record_session_down()
    st.record_session_up()
    for msg in capture_events(again):  # FullyBooted Uptime 0: the new boot, then `core stop`
        st.handle_event(msg)
    shutdowns = sum(1 for b in raws + raw_events(again) if b["Event"] == "Shutdown")
    assert st.restarts_detected == shutdowns == 2
    assert sum(st.tracker.lost.values()) == lost == 0  # Asterisk hung them up before


def _restart_state() -> tuple[ServerState, FakeClock, Message, Message, list[Message]]:
    clock = FakeClock(1_800_000_000.0)
    st = ServerState("test", clock=clock)
    events, booted = midcall_login()
    status = CORE_STATUS
    st.record_session_up()
    for msg in events:  # FullyBooted (Uptime 528), then the 20 calls
        st.handle_event(msg)
    st.apply_core_status(status)
    assert len(st.channels) == 20
    fresh = [m for m in events if m.name == "Newchannel"][:1]
    return st, clock, booted, status, fresh


def _reconnect(st: ServerState, clock: FakeClock, booted: Message, uptime: float) -> None:
    st.record_session_down()
    clock.now += 60
    st.record_session_up()
    st.handle_event(with_fields(booted, Uptime=str(uptime)))


def test_a_call_after_the_new_boot_is_not_lost_when_corestatus_confirms_the_restart() -> None:
    st, clock, booted, status, fresh = _restart_state()
    _reconnect(st, clock, booted, uptime=2)  # kill -9: a new boot, found by FullyBooted
    assert st.tracker.lost["restart"] == 20 and not st.channels
    st.handle_event(with_fields(fresh[0], Uniqueid="1900000000.1"))  # a call right away
    st.apply_core_status(with_fields(status, CoreStartupTime="23:59:59"))  # the same boot
    assert len(st.channels) == 1
    assert st.tracker.lost == {"shutdown": 0, "restart": 20}
    assert st.restarts_detected == 1


def test_the_boot_after_a_shutdown_forgets_nothing_more_and_a_later_crash_does() -> None:
    st, clock, booted, status, fresh = _restart_state()
    shutdown = next(
        m for m in capture_events("06-reload-shutdown.monitor.raw") if m.name == "Shutdown"
    )
    st.handle_event(shutdown)
    assert st.tracker.lost["shutdown"] == 20
    _reconnect(st, clock, booted, uptime=2)
    st.handle_event(with_fields(fresh[0], Uniqueid="1900000000.1"))
    st.apply_core_status(with_fields(status, CoreStartupTime="23:59:59"))
    assert len(st.channels) == 1 and st.restarts_detected == 1
    assert st.tracker.lost == {"shutdown": 20, "restart": 0}
    _reconnect(st, clock, booted, uptime=1)  # then a crash: no Shutdown this time
    assert st.tracker.lost == {"shutdown": 20, "restart": 1}
    assert st.restarts_detected == 2 and not st.channels


def test_counters_of_the_trunk_down_replay_stay_while_down_and_live_families_go() -> None:
    name = "pjsip/trunk-down.listener.raw"
    raws = raw_events(name)
    st = ServerState("test")
    st.record_session_up()
    st.record_ping(0.002)
    for msg in capture_events(name):
        st.handle_event(msg)

    def scrape() -> dict[str, dict[frozenset[tuple[str, str]], float]]:
        out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
        for family in build_registry([st]).collect():
            for s in family.samples:
                out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
        return out

    up = scrape()
    st.record_session_down()
    down = scrape()
    assert set(LIVE_FAMILIES) - {"asterisk_core_reload_timestamp_seconds"} <= set(up)
    assert not set(LIVE_FAMILIES) & set(down)
    for family in ("asterisk_hangups_total", "asterisk_channels_created_total"):
        assert down[family] == up[family], family
    hangups = Counter(b["Cause"] for b in raws if b["Event"] == "Hangup")
    got = Counter[str]()
    for labels, v in down["asterisk_hangups_total"].items():
        got[dict(labels)["cause"]] += int(v)
    assert got == hangups


# ---------------------------------------------------------------------------- queues over a socket


async def test_a_queue_poll_answer_read_with_a_leave_behind_it_over_a_socket(
    ami_server: AmiServerFactory, exporter: ExporterFactory, capture: Capture
) -> None:
    """QueueStatus lists two callers and, in the same write, one of them leaves: the Leave,
    applied before the answer, must win. Then the session dies: the gauges go."""
    entry = next(m for m in capture.messages("pjsip/queue.admin.raw") if m.name == "QueueEntry")
    params = next(m for m in capture.messages("pjsip/queue.admin.raw") if m.name == "QueueParams")
    leave = next(
        m for m in capture.messages("pjsip/queue.listener.raw.gz") if m.name == "QueueCallerLeave"
    )
    a, b = with_fields(entry, Uniqueid="1.1"), with_fields(entry, Uniqueid="1.2", Position="2")

    async def queue_status(conn: Connection, msg: Message) -> None:
        items = [reply(msg, i) for i in (with_fields(params, Calls="2"), a, b)]
        complete = ServerSession.event(
            "QueueStatusComplete",
            ("EventList", "Complete"),
            ("ListItems", "3"),
            action_id=msg.get("ActionID"),
        )
        start = ServerSession.response(
            msg, "Success", ("EventList", "start"), ("Message", "Queue status will follow")
        )
        conn.write(start, *items, complete, with_fields(leave, Uniqueid="1.1", Count="1"))

    ami = await ami_server(on_action={"QueueStatus": queue_status})
    exp = await exporter(server_config(ami.port, queues=True))
    await wait_for(lambda: "support" in exp.state.queues.queues, what="the queue poll")
    m = await exp.scrape()
    assert value(m, "asterisk_queue_callers", **S, queue="support") == 1
    assert set(exp.state.queues.queues["support"].waiting) == {"1.2"}
    for conn in ami.connections:
        conn.reset()
    await wait_for(lambda: not exp.state.up, what="the session down")
    m = await exp.scrape()
    assert not samples_of(m, "asterisk_queue_callers")
    assert value(m, "asterisk_queue_completed_total", **S, queue="support") is not None
