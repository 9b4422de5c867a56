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
import itertools
import random
import time
import tracemalloc
import urllib.request

import pytest
from exporter_harness import Exporter, Samples, running_exporter, server_config, value, wait_for
from fault_server import (
    BANNER,
    Conn,
    FaultServer,
    event,
    hangup,
    listed_channel,
    newchannel,
)
from prometheus_client.parser import text_string_to_metric_families

import ami_exporter.client.connection as client_module
from ami_exporter.ami.protocol import DEFAULT_MAX_MESSAGE_SIZE, AMIParser
from ami_exporter.client.connection import AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, BACKOFF_JITTER
from ami_simulator.server import SimulatedAsterisk, SimulatorConfig

S = {"server": "test"}
SLACK = 64  # the parser's terminator slack beyond max_message_size


def _live(exp: Exporter) -> int:
    return sum(exp.state.channels_by_tech.values())


async def _timed_scrape(exp: Exporter) -> tuple[float, Samples]:
    start = time.monotonic()
    samples = await exp.scrape()
    return time.monotonic() - start, samples


# ---------------------------------------------------------------------------- before login


async def test_accept_then_silence_times_out_and_retries() -> None:
    async def silent(conn: Conn) -> None:
        await asyncio.sleep(30)  # accepts, never sends a banner

    async with FaultServer(silent) as ami:
        async with running_exporter(server_config(ami.port, connect_timeout=0.3)) as exp:
            t0 = time.monotonic()
            await wait_for(lambda: exp.state.connection_errors["timeout"] >= 2, timeout=5,
                           what="two banner timeouts")  # fmt: skip
            elapsed = time.monotonic() - t0
            latency, m = await _timed_scrape(exp)
    # First try times out after 0.3 s, the second after the 1 s backoff + 0.3 s.
    assert 0.5 < elapsed < 3.0
    assert latency < 1.0
    assert value(m, "asterisk_ami_connection_errors_total", **S, reason="timeout") >= 2
    assert value(m, "asterisk_ami_up", **S) == 0
    assert ami.connections >= 2
    assert "no AMI banner" in exp.state.last_error


async def test_banner_then_no_answer_to_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "LOGIN_TIMEOUT_MIN", 0.3)

    async def mute(conn: Conn) -> None:
        conn.write(BANNER)
        while await conn.read_action() is not None:
            pass  # reads the Login, never answers

    async with FaultServer(mute) as ami:
        async with running_exporter(server_config(ami.port, connect_timeout=0.3)) as exp:
            await wait_for(lambda: exp.state.login_failures["timeout"] >= 2, timeout=5,
                           what="two login timeouts")  # fmt: skip
            latency, m = await _timed_scrape(exp)
    assert latency < 1.0
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="timeout") >= 2
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="auth") == 0
    assert value(m, "asterisk_ami_up", **S) == 0
    assert len(ami.logins) >= 2


def _auth_schedule_bounds(attempt: int) -> tuple[float, float]:
    """Delay before retry ``attempt`` (1-based) after authentication failures: [min, max]."""
    base = min(AUTH_BACKOFF_CAP, AUTH_BACKOFF_BASE * 2 ** (attempt - 1))
    return base, min(AUTH_BACKOFF_CAP, base * (1 + BACKOFF_JITTER))


async def test_authentication_failed_attempts_stay_within_the_backoff_schedule() -> None:
    """Counted at the server over a compressed 300 s window (``backoff_scale`` = 1/100).

    The client sleeps ``delay * backoff_scale`` with the real loop and sockets, so the server
    sees the real schedule 100 times faster: 30 s, 60 s, 120 s... (+ up to 20 % jitter).
    """
    scale = 0.01
    async with FaultServer(_standard_server) as ami:
        ami.secret = "right"
        async with running_exporter(server_config(ami.port, secret="wrong")) as exp:
            exp.clients[0].backoff_scale = scale
            await asyncio.sleep(300 * scale + 0.2)  # 300 simulated seconds
            m = await exp.scrape()
    attempts = [(t - ami.logins[0]) / scale for t in ami.logins]  # simulated seconds
    # 0, [30, 36], [90, 108], [210, 252]; the next is at 450 at the earliest.
    assert len(attempts) == 4, attempts
    for i, (previous, current) in enumerate(itertools.pairwise(attempts), 1):
        low, high = _auth_schedule_bounds(i)
        # Lower bound exact (5 ms real slack); upper bound + 10 simulated s for the connect.
        assert low - 0.5 <= current - previous <= high + 10, (i, attempts)
    # Any 60 s window holds at most 2 attempts.
    assert max(sum(1 for t in attempts if s <= t < s + 60) for s in attempts) == 2
    assert value(m, "asterisk_ami_login_failures_total", **S, reason="auth") == len(attempts)
    assert value(m, "asterisk_ami_connection_attempts_total", **S) == len(attempts)
    assert value(m, "asterisk_ami_up", **S) == 0


async def _standard_server(conn: Conn) -> None:
    conn.write(BANNER)
    await conn.serve()


# ---------------------------------------------------------------------------- after login


async def test_eof_in_the_middle_of_a_message() -> None:
    async def script(conn: Conn) -> None:
        conn.write(BANNER)
        if conn.index == 0:
            half = newchannel("2.2")[:40]
            assert not half.endswith(b"\r\n\r\n")

            async def on_action(msg: object) -> bool:
                if getattr(msg, "name", "") == "CoreShowChannels":
                    conn.reply(msg, ("Response", "Success"), ("EventList", "start"))  # type: ignore[arg-type]
                    aid = ("ActionID", msg.action_id)  # type: ignore[attr-defined]
                    conn.write(event("CoreShowChannelsComplete", aid, ("ListItems", "0")))
                    conn.write(newchannel("1.1") + half)  # ...and the socket closes
                    await conn.drain()
                    conn.writer.close()
                    return True
                return False

            await conn.serve(on_action=on_action)
        else:
            await conn.serve(channels=[listed_channel("1.1")])

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            await wait_for(lambda: exp.state.disconnects["eof"] == 1, what="eof")
            await wait_for(lambda: exp.state.up and ami.connections == 2, timeout=4,
                           what="reconnect")  # fmt: skip
            await wait_for(lambda: exp.state.resync_added + _live(exp) >= 1, what="resync")
            latency, m = await _timed_scrape(exp)
    assert latency < 1.0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 1
    # The half message was dropped, never half-applied, and is not "malformed".
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 0
    assert exp.state.channels.keys() == {"1.1"}
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 1
    assert value(m, "asterisk_ami_up", **S) == 1


async def test_connection_reset_by_peer() -> None:
    async def script(conn: Conn) -> None:
        conn.write(BANNER)
        if conn.index == 0:

            async def on_action(msg: object) -> bool:
                if getattr(msg, "name", "") == "Ping":
                    conn.reset()
                    return True
                return False

            await conn.serve(after_login=newchannel("1.1"), on_action=on_action)
        else:
            await conn.serve()

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port, ping_interval=0.2)) as exp:
            await wait_for(lambda: exp.state.disconnects["error"] == 1, what="reset")
            await wait_for(lambda: exp.state.up and ami.connections == 2, timeout=4,
                           what="reconnect")  # fmt: skip
            await asyncio.sleep(0.3)  # past the resync grace: the ghost is counted
            latency, m = await _timed_scrape(exp)
    assert latency < 1.0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="error") == 1
    assert (ami.connections, dict(exp.state.disconnects)) == (
        2,
        {"eof": 0, "shutdown": 0, "ping_timeout": 0, "error": 1},
    )
    # Channel 1.1 is gone from the new session's CoreShowChannels: removed as a ghost.
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 1
    assert value(m, "asterisk_ami_up", **S) == 1


async def test_server_stops_reading_is_detected_by_ping_timeout() -> None:
    """Asterisk wedged: the socket stays open but nothing is read or answered.

    The exporter's only writes are small actions (a Ping per interval), which the kernel
    buffers; the stall is found by the unanswered Ping, within two ping intervals, and the
    write buffer stays tiny meanwhile.
    """
    interval = 0.3
    stalled = asyncio.Event()

    async def script(conn: Conn) -> None:
        conn.write(BANNER)
        if conn.index == 0:

            async def on_action(msg: object) -> bool:
                if getattr(msg, "name", "") == "Ping":
                    stalled.set()
                    await asyncio.sleep(30)  # stop reading, stop answering
                return False

            await conn.serve(on_action=on_action)
        else:
            await conn.serve()

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port, ping_interval=interval)) as exp:
            await wait_for(lambda: exp.state.up, what="login")
            await wait_for(stalled.is_set, what="the server stalls")
            t0 = time.monotonic()
            protocol = exp.clients[0]._protocol
            assert protocol is not None and protocol.transport is not None
            latency, _ = await _timed_scrape(exp)  # served during the stall
            assert latency < 1.0
            assert protocol.transport.get_write_buffer_size() < 4096
            await wait_for(lambda: exp.state.disconnects["ping_timeout"] == 1, what="timeout")
            detected = time.monotonic() - t0
            await wait_for(lambda: exp.state.up and ami.connections == 2, timeout=4,
                           what="reconnect")  # fmt: skip
            m = await exp.scrape()
    assert detected <= 2 * interval + 0.2
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="ping_timeout") == 1
    assert value(m, "asterisk_ami_up", **S) == 1


# ---------------------------------------------------------------------------- garbage


async def test_garbage_is_counted_and_memory_stays_bounded() -> None:
    rng = random.Random(4)
    binary = bytes(rng.getrandbits(8) for _ in range(64 * 1024)).replace(b"\n", b"\x00")
    huge = 10 * 1024 * 1024
    bad_utf8 = (b"Event: Hangup\r\nPrivilege: \xff\xfe\r\nChannel: PJSIP/\xc3\x28-1\r\n"
                b"Uniqueid: \xed\xa0\x80\r\nLinkedid: \xff\r\nCause: \xf0\x28\x8c\x28\r\n"
                b"Cause-txt: \x80\x81\r\n\r\n")  # fmt: skip
    no_event = b"Channel: PJSIP/x-1\r\nUniqueid: 5.5\r\n\r\n"
    no_uniqueid = (event("Newchannel", ("Channel", "PJSIP/a-1"), ("ChannelStateDesc", "Up"))
                   + event("Hangup", ("Channel", "PJSIP/a-1"), ("Cause", "17")))  # fmt: skip
    sentinel = event("UserEvent", ("UserEvent", "done"))
    sent = asyncio.Event()

    async def script(conn: Conn) -> None:
        conn.write(BANNER)

        async def on_action(msg: object) -> bool:
            if getattr(msg, "name", "") == "CoreShowChannels" and not sent.is_set():
                conn.reply(msg, ("Response", "Success"), ("EventList", "start"))  # type: ignore[arg-type]
                aid = ("ActionID", msg.action_id)  # type: ignore[attr-defined]
                conn.write(event("CoreShowChannelsComplete", aid, ("ListItems", "0")))
                conn.write(binary + b"\r\n\r\n")  # 1: binary junk (one malformed block)
                chunk = b"A" * 65536
                for _ in range(huge // len(chunk)):  # 2: a 10 MiB line without CRLF
                    conn.write(chunk)
                    await conn.drain()
                conn.write(b"\r\n\r\n")
                conn.write(bad_utf8 + no_event + no_uniqueid)  # 3, 4, 5
                conn.write(b"Event: TinyA\r\n\r\n" * 1_000_000)  # 6: a million tiny ones
                conn.write(sentinel)
                await conn.drain()
                sent.set()
                return True
            return False

        await conn.serve(on_action=on_action)

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port)) as exp:
            peak = 0
            done = False

            async def sample() -> None:
                nonlocal peak
                while not done:
                    peak = max(peak, exp.clients[0].buffered_bytes)
                    await asyncio.sleep(0)

            sampler = asyncio.create_task(sample())
            t0 = time.monotonic()
            await wait_for(lambda: exp.state.events.get("UserEvent", 0) == 1, timeout=30,
                           what="the sentinel after the garbage")  # fmt: skip
            ingest = time.monotonic() - t0
            done = True
            await sampler
            latency, m = await _timed_scrape(exp)
            body = await exp.scrape_text()
    assert latency < 1.0
    assert peak <= DEFAULT_MAX_MESSAGE_SIZE + SLACK, peak
    # binary block + 10 MiB line + message without Event: 3 malformed, nothing else.
    assert value(m, "asterisk_ami_malformed_messages_total", **S) == 3
    assert value(m, "asterisk_ami_up", **S) == 1
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 0
    # Invalid UTF-8 in every field: counted (cause unparsable -> other), labels valid UTF-8.
    assert value(m, "asterisk_hangups_total", **S, tech="PJSIP", cause="other",
                 cause_name="UNKNOWN") == 1  # fmt: skip
    # Missing Uniqueid: counted, never tracked as a live channel.
    assert value(m, "asterisk_hangups_total", **S, tech="PJSIP", cause="17",
                 cause_name="USER_BUSY") == 1  # fmt: skip
    assert value(m, "asterisk_channels_created_total", **S, tech="PJSIP") == 1
    assert _live(exp) == 0
    assert value(m, "asterisk_ami_events_total", **S, event="other") == 1_000_000
    body.encode("utf-8")  # the exposition is valid UTF-8
    list(text_string_to_metric_families(body))
    print(f"garbage ingest: {ingest:.2f} s, peak parser buffer {peak} bytes")


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


async def test_asterisk_restart_mid_call_with_fullybooted_uptime() -> None:
    """Shutdown, EOF, reconnect, FullyBooted with a small Uptime: the true live count."""

    async def script(conn: Conn) -> None:
        conn.write(BANNER)
        if conn.index == 0:
            booted = event("FullyBooted", ("Status", "Fully Booted"), ("Uptime", "5000"),
                           ("LastReload", "5000"))  # fmt: skip
            calls = newchannel("1.1", linkedid="1.1") + newchannel("1.2", linkedid="1.1")

            async def on_action(msg: object) -> bool:
                if getattr(msg, "name", "") == "Ping":
                    conn.write(event("Shutdown", ("Shutdown", "Cleanly"), ("Restart", "True")))
                    await conn.drain()
                    conn.writer.close()
                    return True
                return False

            listed = [listed_channel("1.1"), listed_channel("1.2", linkedid="1.1")]
            await conn.serve(after_login=booted + calls, channels=listed, on_action=on_action)
        else:
            # The new Asterisk: Uniqueids restart, one new call is up.
            booted = event("FullyBooted", ("Status", "Fully Booted"), ("Uptime", "2"),
                           ("LastReload", "2"))  # fmt: skip
            await conn.serve(after_login=booted, channels=[listed_channel("1.1", "SIP/x-1")])

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port, ping_interval=0.5)) as exp:
            await wait_for(lambda: _live(exp) == 2, what="the call tracked")
            first_start = exp.state.startup_timestamp
            await wait_for(lambda: exp.state.disconnects["shutdown"] == 1, timeout=3,
                           what="shutdown")  # fmt: skip
            await wait_for(lambda: exp.state.up and ami.connections == 2, timeout=4,
                           what="reconnect")  # fmt: skip
            await wait_for(lambda: exp.state.resync_added == 1, what="resync")
            await asyncio.sleep(0.3)  # past the resync grace
            m = await exp.scrape()
    assert first_start is not None and exp.state.startup_timestamp is not None
    assert exp.state.startup_timestamp - first_start > 4000  # the new boot was seen
    assert value(m, "asterisk_active_channels", **S, tech="SIP") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_active_calls", **S) == 1
    # Cleared by the Shutdown, not miscounted as ghosts.
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="shutdown") == 1


async def test_asterisk_restart_without_shutdown_found_by_uptime() -> None:
    """A crash: EOF with no Shutdown; the small Uptime alone proves the restart."""

    async def script(conn: Conn) -> None:
        conn.write(BANNER)
        uptime = "5000" if conn.index == 0 else "3"
        booted = event("FullyBooted", ("Status", "Fully Booted"), ("Uptime", uptime))
        if conn.index == 0:

            async def on_action(msg: object) -> bool:
                if getattr(msg, "name", "") == "Ping":
                    conn.writer.close()
                    return True
                return False

            await conn.serve(after_login=booted + newchannel("1.1"),
                             channels=[listed_channel("1.1")], on_action=on_action)  # fmt: skip
        else:
            await conn.serve(after_login=booted)

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port, ping_interval=0.3)) as exp:
            await wait_for(lambda: _live(exp) == 1, what="the channel tracked")
            await wait_for(lambda: exp.state.restarts_detected == 1, timeout=4, what="restart")
            await wait_for(lambda: exp.state.up and ami.connections == 2, timeout=4,
                           what="reconnect")  # fmt: skip
            await asyncio.sleep(0.3)
            m = await exp.scrape()
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 1
    assert value(m, "asterisk_active_channels", **S, tech="PJSIP") == 0
    assert value(m, "asterisk_ami_resync_channels_removed_total", **S) == 0


async def test_exporter_restart_mid_call_resync_restores_the_count() -> None:
    sim = SimulatedAsterisk(SimulatorConfig(port=0, calls_per_second=0, auth_delay=0.05,
                                            ring_time=0.05, seed=3))  # fmt: skip
    await sim.start()
    try:
        async with running_exporter(server_config(sim.port)) as first:
            await wait_for(lambda: first.state.up, what="login")
            for _ in range(3):
                sim.start_call("answered", hold_time=30)
            await wait_for(lambda: _live(first) == 6, what="calls tracked")
        # The exporter process is gone; a new one starts while the calls are still up.
        async with running_exporter(server_config(sim.port)) as second:
            await wait_for(lambda: second.state.resync_added == 6, what="resync")
            m = await second.scrape()
    finally:
        await sim.stop()
    assert value(m, "asterisk_active_channels", **S, tech="Local") == 6
    assert value(m, "asterisk_active_calls", **S) == 3
    assert value(m, "asterisk_ami_resync_channels_added_total", **S) == 6


# ---------------------------------------------------------------------------- load


async def test_concurrent_scrapes_during_an_event_flood() -> None:
    flood_seconds = 3.0
    batch = b"".join(
        newchannel(f"{i}.1")
        + event("Newexten", ("Channel", "PJSIP/a"), ("Uniqueid", f"{i}.1"))
        + event("VarSet", ("Variable", "X"), ("Value", "1"))
        + hangup(f"{i}.1")
        for i in range(250)
    )  # 1000 events, 250 calls
    flooding = asyncio.Event()

    async def script(conn: Conn) -> None:
        conn.write(BANNER)

        async def flood() -> None:
            flooding.set()
            deadline = time.monotonic() + flood_seconds
            while time.monotonic() < deadline:
                conn.write(batch)
                await conn.drain()
            conn.write(event("UserEvent", ("UserEvent", "done")))
            await conn.drain()

        flooder: list[asyncio.Task[None]] = []

        async def on_action(msg: object) -> bool:
            if getattr(msg, "name", "") == "CoreShowChannels" and not flooder:
                flooder.append(asyncio.create_task(flood()))
            return False

        await conn.serve(on_action=on_action)

    async with FaultServer(script) as ami:
        async with running_exporter(server_config(ami.port)) as exp:
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
                            created = sum(s.value for s in family.samples
                                          if s.name.endswith("_total"))  # fmt: skip
                    out.append((time.monotonic() - start, created))
                return out

            t0 = time.monotonic()
            results = await asyncio.gather(*(asyncio.to_thread(scraper) for _ in range(16)))
            scraping = time.monotonic() - t0
            await wait_for(lambda: exp.state.events.get("UserEvent", 0) == 1, timeout=30,
                           what="the end of the flood")  # fmt: skip
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
    assert moving >= 12, results
    assert max(latencies) < 5.0
    assert value(m, "asterisk_ami_up", **S) == 1
    assert value(m, "asterisk_ami_disconnects_total", **S, reason="eof") == 0
    assert _live(exp) == 0
    rate = total * 4 / elapsed
    print(f"flood: {total * 4} events in {elapsed:.2f} s ({rate:,.0f}/s) with 128 scrapes in "
          f"{scraping:.2f} s, max scrape {max(latencies) * 1000:.0f} ms")  # fmt: skip
    assert rate > 10_000
