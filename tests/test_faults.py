"""Fault injection over real loopback sockets: the exporter must never become the outage.

For each fault: ``/metrics`` keeps answering, the right counter moves, and the state is right
afterwards. Every test is bounded in time (pytest-timeout, and short ping/connect timeouts).
Faults already covered elsewhere and not repeated here: connection refused, unanswered Ping,
lost Hangups removed by the resync, Asterisk restart through the simulator and exporter started
mid-call (``test_exporter.py``); secrets in logs and world-readable secret files
(``test_cli.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import random
import time
import tracemalloc
import urllib.request
from collections.abc import Awaitable, Callable

import pytest
from amiserver import (
    Connection,
    TestAMIServer,
    disconnect,
    eof_mid_message,
    first_time,
    reset,
    silence,
    stop_reading,
)
from helpers import (
    Exporter,
    client_buffered,
    client_write_buffer,
    ev,
    hangup,
    listed_channel,
    newchannel,
    running_exporter,
    server_config,
    value,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

import ami_exporter.client.connection as client_module
from ami_exporter.ami.protocol import DEFAULT_MAX_MESSAGE_SIZE, AMIParser, Message, serialize
from ami_exporter.client.connection import AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, BACKOFF_JITTER
from ami_exporter.state.server import ServerState
from ami_simulator.server import SimulatedAsterisk

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]
S = {"server": "test"}
SLACK = 64  # the parser's terminator slack beyond max_message_size


def ghosts(state: ServerState) -> int:
    """Channels counted as removed by a resync, once their grace period is over."""
    state.tick()
    return state.resync_removed


def resynced(conn: Connection) -> Callable[[], bool]:
    """True once the client applied this connection's first CoreShowChannels answer: it sends
    its next action of the sync sequence (a poll; Pings run on their own timer) only then."""

    def done() -> bool:
        if "CoreShowChannels" not in conn.actions:
            return False
        after = conn.actions[conn.actions.index("CoreShowChannels") + 1 :]
        return any(name not in ("Ping", "Logoff") for name in after)

    return done


# ---------------------------------------------------------------------------- before login


async def test_accept_then_silence_times_out_and_retries(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    ami = await ami_server(banner=None)  # accepts, never sends a banner
    exp = await exporter(server_config(ami.port, connect_timeout=0.3))
    t0 = time.monotonic()
    await wait_for(
        lambda: exp.state.connection_errors["timeout"] >= 2, timeout=5, what="two banner timeouts"
    )
    elapsed = time.monotonic() - t0
    latency, m = await exp.timed_scrape()
    # First try times out after 0.3 s, the second after the 1 s backoff + 0.3 s.
    assert 0.5 < elapsed < 3.0
    assert latency < 1.0
    assert value(m, "asterisk_ami_connection_errors_total", **S, reason="timeout") >= 2
    assert value(m, "asterisk_ami_up", **S) == 0
    assert len(ami.connections) >= 2
    assert ami.received == []
    assert "no AMI banner" in exp.state.last_error


async def test_banner_then_no_answer_to_login(
    monkeypatch: pytest.MonkeyPatch, ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    monkeypatch.setattr(client_module, "LOGIN_TIMEOUT_MIN", 0.3)
    ami = await ami_server(on_action={"Login": silence})  # reads the Login, never answers
    exp = await exporter(server_config(ami.port, connect_timeout=0.3), backoff_scale=0.1)
    await wait_for(
        lambda: exp.state.login_failures["timeout"] >= 2, timeout=5, what="two login timeouts"
    )
    latency, m = await exp.timed_scrape()
    assert latency < 1.0
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="timeout") >= 2
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="auth") == 0
    assert value(m, "asterisk_ami_up", **S) == 0
    assert len(ami.logins) >= 2


def _auth_schedule_bounds(attempt: int) -> tuple[float, float]:
    """Delay before retry ``attempt`` (1-based) after authentication failures: [min, max]."""
    base = min(AUTH_BACKOFF_CAP, AUTH_BACKOFF_BASE * 2 ** (attempt - 1))
    return base, min(AUTH_BACKOFF_CAP, base * (1 + BACKOFF_JITTER))


async def test_authentication_failed_attempts_stay_within_the_backoff_schedule(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """Counted at the server, time compressed 200 times (``backoff_scale`` = 1/200).

    The client sleeps ``delay * backoff_scale`` with the real loop and sockets, so the server
    sees the real schedule 200 times faster: 30 s, 60 s, 120 s, 240 s (+ up to 20 % jitter),
    i.e. five attempts in the first 450 to 540 simulated seconds.
    """
    scale = 0.005
    ami = await ami_server(secret="right", auth_delay=0)
    exp = await exporter(server_config(ami.port, secret="wrong"), backoff_scale=scale)
    await wait_for(
        lambda: len(ami.logins) == 5 and exp.state.login_failures["auth"] == 5,
        timeout=10,
        what="five login attempts",
    )
    m = await exp.scrape()
    attempts = [(a.time - ami.logins[0].time) / scale for a in ami.logins]  # simulated s
    assert not any(a.ok for a in ami.logins)
    for i, (previous, current) in enumerate(itertools.pairwise(attempts), 1):
        low, high = _auth_schedule_bounds(i)
        # Lower bound exact (2.5 ms real slack); upper + 20 simulated s for the connect.
        assert low - 0.5 <= current - previous <= high + 20, (i, attempts)
    # Any 60 s window holds at most 2 attempts; the first 300 s hold 4.
    assert max(sum(1 for t in attempts if s <= t < s + 60) for s in attempts) == 2
    assert sum(1 for t in attempts if t < 300) == 4
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="auth") == 5
    assert value(m, "asterisk_ami_connection_attempts_total", **S) == 5
    assert value(m, "asterisk_ami_up", **S) == 0


# ---------------------------------------------------------------------------- after login


async def test_eof_in_the_middle_of_a_message(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    async def on_connect(conn: Connection) -> None:
        if conn.index == 0:
            # The list answer (empty), a whole Newchannel, half of another, and EOF.
            conn.on_action["coreshowchannels"] = eof_mid_message(newchannel("1.1"))
        else:
            conn.channels = [listed_channel("1.1")]

    ami = await ami_server(events=(), on_connect=on_connect)
    exp = await exporter(server_config(ami.port), backoff_scale=0.1)
    await wait_for(lambda: exp.state.disconnects["eof"] == 1, what="eof")
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, what="reconnect")
    await wait_for(resynced(ami.connections[1]), what="resync")
    latency, m = await exp.timed_scrape()
    assert latency < 1.0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 1
    # The half message was dropped, never half-applied, and is not "malformed".
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 0
    assert exp.state.channels.keys() == {"1.1"}
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 1
    assert value(m, "asterisk_ami_up", **S) == 1


async def test_connection_reset_by_peer(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    async def on_connect(conn: Connection) -> None:
        if conn.index == 0:
            conn.events = [newchannel("1.1")]
            conn.on_action["ping"] = reset

    ami = await ami_server(events=(), on_connect=on_connect)
    exp = await exporter(server_config(ami.port, ping_interval=0.2), backoff_scale=0.1)
    await wait_for(lambda: exp.state.disconnects["error"] == 1, what="reset")
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, what="reconnect")
    # Channel 1.1 is gone from the new session's CoreShowChannels: removed, then a ghost.
    await wait_for(lambda: ghosts(exp.state) == 1, what="the resync grace to run out")
    latency, m = await exp.timed_scrape()
    assert latency < 1.0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="error") == 1
    assert (len(ami.connections), dict(exp.state.disconnects)) == (
        2,
        {"eof": 0, "shutdown": 0, "ping_timeout": 0, "error": 1},
    )
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 1
    assert value(m, "asterisk_ami_up", **S) == 1


async def test_server_stops_reading_is_detected_by_ping_timeout(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """Asterisk wedged: the socket stays open but nothing is read or answered.

    The exporter's only writes are small actions (a Ping per interval), which the kernel
    buffers; the stall is found by the unanswered Ping, within two ping intervals, and the
    write buffer stays tiny meanwhile.
    """
    interval = 0.3
    stalled = asyncio.Event()

    async def on_connect(conn: Connection) -> None:
        if conn.index == 0:
            conn.on_action["ping"] = stop_reading(stalled)

    ami = await ami_server(on_connect=on_connect)
    exp = await exporter(server_config(ami.port, ping_interval=interval), backoff_scale=0.1)
    await wait_for(lambda: exp.state.up, what="login")
    await wait_for(stalled.is_set, what="the server stalls")
    t0 = time.monotonic()
    latency, _ = await exp.timed_scrape()  # served during the stall
    assert latency < 1.0
    assert client_write_buffer(exp) < 4096
    await wait_for(lambda: exp.state.disconnects["ping_timeout"] == 1, what="timeout")
    detected = time.monotonic() - t0
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, what="reconnect")
    m = await exp.scrape()
    assert detected <= 2 * interval + 0.2
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="ping_timeout") == 1
    assert value(m, "asterisk_ami_up", **S) == 1


# ---------------------------------------------------------------------------- garbage


async def test_garbage_is_counted_and_memory_stays_bounded(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    rng = random.Random(4)
    binary = bytes(rng.getrandbits(8) for _ in range(64 * 1024)).replace(b"\n", b"\x00")
    huge = 10 * 1024 * 1024
    bad_utf8 = (
        b"Event: Hangup\r\nPrivilege: \xff\xfe\r\nChannel: PJSIP/\xc3\x28-1\r\n"
        b"Uniqueid: \xed\xa0\x80\r\nLinkedid: \xff\r\nCause: \xf0\x28\x8c\x28\r\n"
        b"Cause-txt: \x80\x81\r\n\r\n"
    )
    no_event = b"Channel: PJSIP/x-1\r\nUniqueid: 5.5\r\n\r\n"
    no_uniqueid = serialize(ev("Newchannel", Channel="PJSIP/a-1", ChannelStateDesc="Up")) + (
        serialize(ev("Hangup", Channel="PJSIP/a-1", Cause="17"))
    )
    sentinel = ev("UserEvent", UserEvent="done")

    async def garbage_after_the_list(conn: Connection, msg: Message) -> None:
        await conn.answer(msg)  # the (empty) CoreShowChannels answer
        conn.write(binary + b"\r\n\r\n")  # 1: binary junk (one malformed block)
        chunk = b"A" * 65536
        for _ in range(huge // len(chunk)):  # 2: a 10 MiB line without CRLF
            conn.write(chunk)
            await conn.drain()
        conn.write(b"\r\n\r\n")
        conn.write(bad_utf8 + no_event + no_uniqueid)  # 3, 4, 5
        conn.write(b"Event: TinyA\r\n\r\n" * 1_000_000)  # 6: a million tiny ones
        conn.write(sentinel)

    ami = await ami_server(
        events=(), on_action={"CoreShowChannels": first_time(garbage_after_the_list)}
    )
    exp = await exporter(server_config(ami.port))
    peak = 0
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, client_buffered(exp) or 0)
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    await wait_for(
        lambda: exp.state.events.get("UserEvent", 0) == 1,
        timeout=30,
        what="the sentinel after the garbage",
    )
    ingest = time.monotonic() - t0
    done = True
    await sampler
    latency, m = await exp.timed_scrape()
    body = await exp.scrape_text()
    assert latency < 1.0
    assert peak <= DEFAULT_MAX_MESSAGE_SIZE + SLACK, peak
    assert peak > 1024, peak  # the sampler did see the stream go by
    # binary block + 10 MiB line + message without Event: 3 malformed, nothing else.
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 3
    assert value(m, "asterisk_ami_up", **S) == 1
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 0
    # Invalid UTF-8 in every field: counted (cause unparsable -> other), labels valid UTF-8.
    assert (
        value(m, "asterisk_hangups_total", **S, tech="PJSIP", cause="other", cause_name="UNKNOWN")
        == 1
    )
    # Missing Uniqueid: counted, never tracked as a live channel.
    assert (
        value(m, "asterisk_hangups_total", **S, tech="PJSIP", cause="17", cause_name="USER_BUSY")
        == 1
    )
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 1
    assert exp.live() == 0
    assert value(m, "asterisk_ami_events_total", **S, event="other") == 1_000_000
    body.encode("utf-8")  # the exposition is valid UTF-8
    list(text_string_to_metric_families(body))
    print(f"garbage ingest: {ingest:.2f} s, peak parser buffer {peak} bytes")


@pytest.mark.unit
def test_parser_memory_bounded_for_a_10_mib_line() -> None:
    parser = AMIParser(expect_banner=False)
    chunk = b"x" * 65536
    tracemalloc.start()
    try:
        for _ in range(160):  # 10 MiB, no line end
            assert parser.feed(chunk) == []
            assert parser.buffered <= parser.max_message_size + SLACK
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * parser.max_message_size + 256 * 1024, peak
    assert parser.feed(b"\r\n\r\nEvent: After\r\n\r\n")[0].name == "After"
    assert parser.malformed == 1


@pytest.mark.unit
def test_parser_a_million_tiny_messages_fast_and_bounded() -> None:
    parser = AMIParser(expect_banner=False)
    data = b"Event: A\r\n\r\n" * 1_000_000
    t0 = time.monotonic()
    tracemalloc.start()
    try:
        frames = 0
        for start in range(0, len(data), 1 << 20):  # 1 MiB reads
            frames += len(parser.feed_frames(data[start : start + (1 << 20)]))
            assert parser.buffered <= 64
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - t0
    assert frames == 1_000_000
    assert parser.malformed == 0
    # Per read: the chunk, its normalised copy and ~87k small frames; never the whole stream.
    assert peak < 64 * 1024 * 1024, peak
    assert elapsed < 20, elapsed


# ---------------------------------------------------------------------------- restarts


def booted(uptime: str, last_reload: str | None = None) -> Message:
    if last_reload is None:
        return ev("FullyBooted", Status="Fully Booted", Uptime=uptime)
    return ev("FullyBooted", Status="Fully Booted", Uptime=uptime, LastReload=last_reload)


async def test_asterisk_restart_mid_call_with_fullybooted_uptime(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """Shutdown, EOF, reconnect, FullyBooted with a small Uptime: the true live count."""

    async def shutdown(conn: Connection, msg: Message) -> bool:
        conn.write(ev("Shutdown", Shutdown="Cleanly", Restart="True"))
        await conn.drain()
        conn.close()
        return False

    async def on_connect(conn: Connection) -> None:
        if conn.index == 0:
            conn.events = [
                booted("5000", "5000"),
                newchannel("1.1", linkedid="1.1"),
                newchannel("1.2", linkedid="1.1"),
            ]
            conn.channels = [listed_channel("1.1"), listed_channel("1.2", linkedid="1.1")]
            conn.on_action["ping"] = shutdown
        else:
            # The new Asterisk: Uniqueids restart, one new call is up.
            conn.events = [booted("2", "2")]
            conn.channels = [listed_channel("1.1", "SIP/x-1")]

    ami = await ami_server(on_connect=on_connect)
    exp = await exporter(server_config(ami.port, ping_interval=0.5), resync_grace=0)
    await wait_for(lambda: exp.live() == 2, what="the call tracked")
    first_start = exp.state.startup_timestamp
    await wait_for(lambda: exp.state.disconnects["shutdown"] == 1, timeout=3, what="shutdown")
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, timeout=4, what="reconnect")
    await wait_for(lambda: exp.state.resync_added == 1, what="resync")
    m = await exp.scrape()  # resync_grace=0: a channel the resync removed is a ghost at once
    assert first_start is not None and exp.state.startup_timestamp is not None
    assert exp.state.startup_timestamp - first_start > 4000  # the new boot was seen
    assert value(m, "asterisk_active_channels", **S, tech="SIP") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_active_calls", **S) == 1
    # Cleared by the Shutdown, not miscounted as ghosts.
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="shutdown") == 1


async def test_asterisk_restart_without_shutdown_found_by_uptime(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    """A crash: EOF with no Shutdown; the small Uptime alone proves the restart."""

    async def on_connect(conn: Connection) -> None:
        if conn.index == 0:
            conn.events = [booted("5000"), newchannel("1.1")]
            conn.channels = [listed_channel("1.1")]
            conn.on_action["ping"] = disconnect
        else:
            conn.events = [booted("3")]

    ami = await ami_server(on_connect=on_connect)
    exp = await exporter(
        server_config(ami.port, ping_interval=0.3), resync_grace=0, backoff_scale=0.1
    )
    await wait_for(lambda: exp.live() == 1, what="the channel tracked")
    await wait_for(lambda: exp.state.restarts_detected == 1, timeout=4, what="restart")
    await wait_for(lambda: exp.state.up and len(ami.connections) == 2, what="reconnect")
    await wait_for(resynced(ami.connections[1]), what="the new session's resync")
    m = await exp.scrape()  # resync_grace=0: a channel the resync removed is a ghost at once
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0


async def test_exporter_restart_mid_call_resync_restores_the_count(
    make_simulator: Callable[..., Awaitable[SimulatedAsterisk]], exporter: ExporterFactory
) -> None:
    sim = await make_simulator(seed=3)
    async with running_exporter(server_config(sim.port)) as first:
        await wait_for(lambda: first.state.up, what="login")
        for _ in range(3):
            sim.start_call("answered", hold_time=30)
        await wait_for(lambda: first.live() == 6, what="calls tracked")
    # The exporter process is gone (logged off); a new one starts while the calls are up.
    second = await exporter(server_config(sim.port))
    await wait_for(lambda: second.state.resync_added == 6, what="resync")
    m = await second.scrape()
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 6
    assert value(m, "asterisk_active_calls", **S) == 3
    assert value(m, "asterisk_ami_resync_channels_added_total", **S) == 6


# ---------------------------------------------------------------------------- load


async def test_concurrent_scrapes_during_an_event_flood(
    ami_server: AMIServerFactory, exporter: ExporterFactory
) -> None:
    # The flood lasts while the scrapes run (at most a minute), so every scraper's first and
    # last scrape see different counts whatever the machine's speed.
    flood_limit = 60.0
    scraping_done = asyncio.Event()
    batch = b"".join(
        serialize(newchannel(f"{i}.1"))
        + serialize(ev("Newexten", Channel="PJSIP/a", Uniqueid=f"{i}.1"))
        + serialize(ev("VarSet", Variable="X", Value="1"))
        + serialize(hangup(f"{i}.1"))
        for i in range(250)
    )  # 1000 events, 250 calls
    flooding = asyncio.Event()
    flooders: list[asyncio.Task[None]] = []

    async def flood(conn: Connection) -> None:
        flooding.set()
        deadline = time.monotonic() + flood_limit
        while not scraping_done.is_set() and time.monotonic() < deadline:
            conn.write(batch)
            await conn.drain()
        conn.write(ev("UserEvent", UserEvent="done"))
        await conn.drain()

    async def start_flood(conn: Connection, msg: Message) -> bool:
        flooders.append(asyncio.create_task(flood(conn)))
        return await conn.answer(msg)

    ami = await ami_server(events=(), on_action={"CoreShowChannels": first_time(start_flood)})
    exp = await exporter(server_config(ami.port))
    await wait_for(flooding.is_set, what="flood start")
    url = f"http://127.0.0.1:{exp.web.port}/metrics"

    def scraper() -> list[tuple[float, float]]:
        out = []
        for _ in range(8):
            start = time.monotonic()
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
                body = resp.read().decode()
            created = 0.0
            for family in text_string_to_metric_families(body):
                if family.name == "asterisk_channels_created":
                    created = sum(s.value for s in family.samples if s.name.endswith("_total"))
            out.append((time.monotonic() - start, created))
        return out

    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    # A pool of 16: all scrapers at once (the default executor has only cpu + 4 threads).
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, scraper) for _ in range(16)))
    scraping = time.monotonic() - t0
    scraping_done.set()
    await wait_for(
        lambda: exp.state.events.get("UserEvent", 0) == 1, timeout=30, what="the end of the flood"
    )
    await asyncio.gather(*flooders)
    total = exp.state.channels_created.get("PJSIP", 0)
    elapsed = time.monotonic() - t0
    m = await exp.scrape()
    latencies = [lat for series in results for lat, _ in series]
    assert len(latencies) == 16 * 8  # every scrape answered
    for series in results:
        seen = [created for _, created in series]
        assert seen == sorted(seen)
    # Ingest kept going while scrapes ran: each scraper saw the counter move.
    moving = sum(1 for series in results if series[-1][1] > series[0][1])
    assert moving == 16, results
    assert max(latencies) < 5.0
    assert value(m, "asterisk_ami_up", **S) == 1
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 0
    assert exp.live() == 0
    rate = total * 4 / elapsed
    print(
        f"flood: {total * 4} events in {elapsed:.2f} s ({rate:,.0f}/s) with 128 scrapes in "
        f"{scraping:.2f} s, max scrape {max(latencies) * 1000:.0f} ms"
    )
    assert rate > 10_000
