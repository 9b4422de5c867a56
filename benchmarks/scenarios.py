"""The five scenarios of issue #5, each returning a plain JSON-able dict.

1. ``s1`` events/s end to end, single server, median of several runs, with the baselines
   (``asterisk-ami`` with and without a metrics callback, ``panoramisk``, the raw framing
   limit) on the same stream from the same blaster, interleaved run by run;
2. ``s2`` the same for our client with 1,000 and 10,000 live channels (prefill first);
3. ``s3`` ``/metrics`` latency from a keep-alive scraper thread, 20 scrapes/s, while ingesting
   at 50k events/s with 10,000 live channels; ingest lag during the window;
4. ``s4`` memory per tracked channel (tracemalloc) and RSS with 10,000 live channels, each in
   a fresh interpreter (:mod:`benchmarks.memprobe`);
5. ``s5`` 50 servers at 2k events/s each in one process: CPU share and per-reader lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import http.client
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ami_exporter.client.connection import AMIClient
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer
from benchmarks.blaster import Blaster, BlasterConfig, ConnStats, runqueue_wait_seconds
from benchmarks.clients import (
    Measurement,
    RawProtocol,
    run_asterisk_ami,
    run_ours,
    run_panoramisk,
    run_raw,
    server_config,
    stop_clients,
    stream_events_received,
    wait_until,
)
from benchmarks.stream import EVENTS_PER_CALL, REPO

BEHIND_SECONDS: Final = 0.5  # a reader is behind if its lag exceeds this much traffic
WRITE_TIMEOUT: Final = 0.1  # Asterisk's default writetimeout


@dataclass(frozen=True, slots=True)
class Sizes:
    runs: int
    s1_calls: int
    s2_runs: int
    s2_prefills: tuple[int, ...]
    s3_rate: float
    s3_prefill: int
    s3_seconds: float
    s3_scrapes_per_second: float
    s5_servers: int
    s5_rate: float
    s5_seconds: float
    s4_channels: int
    s5_tick: float = 0.005  # the blaster's pacing tick in s5/s9
    s5_shared_pacer: bool = False  # one pacer thread for every connection (blaster.py)


FULL: Final = Sizes(5, 6000, 3, (1000, 10000), 50_000, 10_000, 5.0, 20.0, 50, 2000, 10.0, 10_000)
QUICK: Final = Sizes(1, 1500, 1, (1000, 10000), 50_000, 10_000, 2.0, 20.0, 50, 2000, 3.0, 10_000)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _summary(ms: list[Measurement]) -> dict[str, Any]:
    rates = [m.rate for m in ms]
    return {
        "median_events_per_s": statistics.median(rates),
        "min_events_per_s": min(rates),
        "max_events_per_s": max(rates),
        "rates": rates,
        "cpu_seconds": [m.cpu_seconds for m in ms],
        "events": ms[0].events,
        "ok": all(m.ok for m in ms),
        "problems": sorted({p for m in ms for p in m.problems})[:10],
    }


def _baselines_available() -> dict[str, str]:
    found: dict[str, str] = {}
    from importlib import metadata

    for dist in ("asterisk-ami", "panoramisk"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


# ---------------------------------------------------------------------- scenario 1


def scenario1(sizes: Sizes, profile: bool = False) -> dict[str, Any]:
    versions = _baselines_available()
    runners: dict[str, Callable[[Blaster, str], Measurement]] = {
        "raw": lambda b, u: run_raw(b.port, u, b.events),
        "raw-split": lambda b, u: run_raw(b.port, u, b.events, split=True),
        "ours": lambda b, u: run_ours(b.port, u, b.counts, b.config.calls, 0, 0),
    }
    if "asterisk-ami" in versions:
        runners["asterisk-ami"] = lambda b, u: run_asterisk_ami(b.port, u, b.events, False)
        runners["asterisk-ami+metrics"] = lambda b, u: run_asterisk_ami(b.port, u, b.events, True)
    if "panoramisk" in versions:
        runners["panoramisk"] = lambda b, u: run_panoramisk(b.port, u, b.events)
    results: dict[str, list[Measurement]] = {name: [] for name in runners}
    out: dict[str, Any] = {"versions": versions}
    with Blaster(BlasterConfig(calls=sizes.s1_calls)) as blaster:
        out["events"] = blaster.events
        out["calls"] = sizes.s1_calls
        for run in range(sizes.runs):
            for name, runner in runners.items():
                gc.collect()
                m = runner(blaster, f"{name}-{run}")
                results[name].append(m)
                _log(
                    f"s1 run {run + 1}/{sizes.runs} {name}: {m.rate:,.0f} events/s"
                    + ("" if m.ok else f" PROBLEMS {m.problems[:3]}")
                )
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            run_ours(blaster.port, "ours-profile", blaster.counts, blaster.config.calls, 0, 0)
            prof.disable()
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
            out["profile"] = text.getvalue()
    out["clients"] = {name: _summary(ms) for name, ms in results.items()}
    # Ratios run by run (same round = same machine conditions), then the median.
    ratios: dict[str, float] = {}
    for name in results:
        if name == "ours":
            continue
        per_run = [o.rate / b.rate for o, b in zip(results["ours"], results[name], strict=True)]
        ratios[name] = statistics.median(per_run)
    out["ours_over"] = ratios
    return out


# ---------------------------------------------------------------------- scenario 2


def scenario2(sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefill in sizes.s2_prefills:
        config = BlasterConfig(calls=sizes.s1_calls, prefill_channels=prefill)
        with Blaster(config) as blaster:
            ms = []
            for run in range(sizes.s2_runs):
                gc.collect()
                m = run_ours(
                    blaster.port,
                    f"s2-{prefill}-{run}",
                    blaster.counts,
                    config.calls,
                    prefill,
                    prefill,
                )
                ms.append(m)
                _log(
                    f"s2 {prefill} live, run {run + 1}: {m.rate:,.0f} events/s"
                    + ("" if m.ok else f" PROBLEMS {m.problems[:3]}")
                )
            out[str(prefill)] = _summary(ms) | {"stream_events": blaster.events}
    return out


# ---------------------------------------------------------------------- scenario 3


def _scraper(
    port: int, count: int, interval: float, latencies: list[float], errors: list[str]
) -> None:
    """Scrape /metrics ``count`` times at a fixed rate over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        due = time.perf_counter()
        for _ in range(count):
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status != 200 or b"asterisk_active_channels" not in body:
                errors.append(f"status {response.status}, {len(body)} bytes")
            due += interval
    except (OSError, http.client.HTTPException) as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _max_stall_since(stats: ConnStats, since: float) -> float:
    """Longest blocked write (seconds) that ended after ``since`` (only those > 20 ms are kept)."""
    return max((d for end, d in stats.stalls if end >= since), default=0.0)


def _lag(stats: ConnStats, received: int, now: float) -> tuple[int, int]:
    """(events sent but not yet counted, events due by the schedule but not yet counted)."""
    if not stats.started:
        return 0, 0
    due = min(stats.total_events, int((now - stats.started) * stats.rate))
    return stats.events_sent - received, max(0, due - received)


async def _scenario3_async(blaster: Blaster, sizes: Sizes) -> dict[str, Any]:
    prefill = sizes.s3_prefill
    rate = sizes.s3_rate
    state = ServerState("bench")
    web = WebServer(build_registry([state]), [state], host="127.0.0.1", port=0)
    await web.start()
    client = AMIClient(server_config(blaster.port, "s3"), state)
    task = asyncio.create_task(client.run())
    names = tuple(blaster.counts)
    total = blaster.events
    out: dict[str, Any] = {"rate": rate, "prefill": prefill, "stream_events": total}
    try:
        await wait_until(
            lambda: (
                stream_events_received(state, names) >= prefill and state.resyncs_completed >= 1
            ),
            30.0,
        )
        out["live_channels_at_start"] = len(state.channels)
        count = int(sizes.s3_seconds * sizes.s3_scrapes_per_second)
        latencies: list[float] = []
        errors: list[str] = []
        scraper = asyncio.create_task(
            asyncio.to_thread(
                _scraper, web.port, count, 1.0 / sizes.s3_scrapes_per_second, latencies, errors
            )
        )
        cpu0, wall0, mono0 = time.process_time(), time.perf_counter(), time.monotonic()
        received0 = stream_events_received(state, names)
        max_lag_sent = max_lag_due = 0
        lag_samples: list[tuple[float, int, int]] = []
        for _ in range(int(sizes.s3_seconds * 8) + 40):
            if scraper.done():
                break
            received = stream_events_received(state, names)
            stats = (await asyncio.to_thread(blaster.stats))["s3"]
            now = time.monotonic()
            lag_sent, lag_due = _lag(stats, received, now)
            lag_samples.append((round(now - mono0, 3), lag_sent, lag_due))
            max_lag_sent = max(max_lag_sent, lag_sent)
            max_lag_due = max(max_lag_due, lag_due)
            await asyncio.sleep(0.125)
        await asyncio.wait_for(scraper, 30.0)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        received1 = stream_events_received(state, names)
        stats = (await asyncio.to_thread(blaster.stats))["s3"]
        end_lag_sent, end_lag_due = _lag(stats, received1, time.monotonic())
        caught_up = await wait_until(lambda: stream_events_received(state, names) >= total, 60.0)
        out |= {
            "scrapes": len(latencies),
            "scrape_errors": errors[:5],
            "p50_ms": 1000 * _percentile(latencies, 0.50) if latencies else None,
            "p99_ms": 1000 * _percentile(latencies, 0.99) if latencies else None,
            "max_ms": 1000 * max(latencies) if latencies else None,
            "window_seconds": wall,
            "ingest_events_per_s": (received1 - received0) / wall,
            "cpu_share": cpu / wall,
            "max_lag_events": max_lag_sent,
            "max_lag_seconds": max_lag_sent / rate,
            "max_lag_vs_schedule_seconds": max_lag_due / rate,
            "end_lag_seconds": end_lag_sent / rate,
            "end_lag_vs_schedule_seconds": end_lag_due / rate,
            "max_write_stall_ms": 1000 * _max_stall_since(stats, mono0),
            "max_write_stall_whole_run_ms": 1000 * stats.max_stall,
            "stalls_whole_run": stats.stalls[:50],
            "write_stalls_over_100ms_whole_run": stats.stalls_over_100ms,
            "all_received": caught_up,
            "live_channels_at_end": len(state.channels),
            "lag_samples": lag_samples,
            "kept_up": max_lag_sent / rate < BEHIND_SECONDS
            and _max_stall_since(stats, mono0) < WRITE_TIMEOUT,
        }
    finally:
        await stop_clients([client], [task])
        await web.stop()
    return out


def scenario3(sizes: Sizes) -> dict[str, Any]:
    events = sizes.s3_rate * (sizes.s3_seconds + 2.5)
    calls = math.ceil((events - sizes.s3_prefill) / EVENTS_PER_CALL)
    config = BlasterConfig(calls=calls, prefill_channels=sizes.s3_prefill, rate=sizes.s3_rate)
    with Blaster(config) as blaster:
        result = asyncio.run(_scenario3_async(blaster, sizes))
    _log(
        f"s3 /metrics p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"max lag {result['max_lag_seconds']:.3f} s"
    )
    return result


# ---------------------------------------------------------------------- scenario 4


def _probe(*args: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memprobe", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memprobe {args} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scenario4(sizes: Sizes) -> dict[str, Any]:
    channels = str(sizes.s4_channels)
    traced = _probe("tracemalloc", "--channels", channels)
    rss = _probe("rss", "--channels", channels)
    _log(f"s4 {traced['bytes_per_channel']:.0f} bytes/channel, RSS {rss['rss'] / 2**20:.1f} MiB")
    return {"tracemalloc": traced, "rss": rss}


# ---------------------------------------------------------------------- scenario 5


async def _scenario5_async(blaster: Blaster, sizes: Sizes) -> dict[str, Any]:
    rate = sizes.s5_rate
    n = sizes.s5_servers
    states = [ServerState(f"srv{i:02d}") for i in range(n)]
    clients = [
        AMIClient(server_config(blaster.port, f"s5-{i:02d}", f"srv{i:02d}"), st)
        for i, st in enumerate(states)
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    names = tuple(blaster.counts)
    users = [f"s5-{i:02d}" for i in range(n)]
    out: dict[str, Any] = {"servers": n, "rate_per_server": rate}
    try:
        started = False
        for _ in range(100):
            stats = await asyncio.to_thread(blaster.stats)
            if all(u in stats and stats[u].started for u in users):
                started = True
                break
            await asyncio.sleep(0.1)
        out["all_started"] = started
        await asyncio.sleep(0.5)  # past the logins' ramp: measure the steady state
        received0 = sum(stream_events_received(st, names) for st in states)
        cpu0, wall0, mono0 = time.process_time(), time.perf_counter(), time.monotonic()
        blaster_cpu0, wait0 = blaster.cpu_seconds(), runqueue_wait_seconds()
        max_lag = dict.fromkeys(users, 0)
        max_lag_due = dict.fromkeys(users, 0)
        blaster_lag = 0
        samples = 0
        while time.perf_counter() - wall0 < sizes.s5_seconds and samples < 10_000:
            await asyncio.sleep(0.5)
            stats = await asyncio.to_thread(blaster.stats)
            # Counted after the blaster's snapshot, so "sent but not read" is never inflated
            # by the time the snapshot took to arrive.
            received = [stream_events_received(st, names) for st in states]
            now = time.monotonic()
            for user, got in zip(users, received, strict=True):
                lag_sent, lag_due = _lag(stats[user], got, now)
                max_lag[user] = max(max_lag[user], lag_sent)
                max_lag_due[user] = max(max_lag_due[user], lag_due)
                own = _lag(stats[user], stats[user].events_sent, stats[user].snapshot)[1]
                blaster_lag = max(blaster_lag, own)
            samples += 1
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        blaster_cpu = blaster.cpu_seconds() - blaster_cpu0
        wait = runqueue_wait_seconds() - wait0
        stats = await asyncio.to_thread(blaster.stats)
        received = [stream_events_received(st, names) for st in states]
        now = time.monotonic()
        end_lag = {u: _lag(stats[u], got, now)[0] for u, got in zip(users, received, strict=True)}
        behind = [
            u
            for u in users
            if end_lag[u] > BEHIND_SECONDS * rate
            or max_lag[u] > BEHIND_SECONDS * rate
            or _max_stall_since(stats[u], mono0) > WRITE_TIMEOUT
        ]
        events = sum(received) - received0
        out |= {
            "window_seconds": wall,
            "cpu_seconds": cpu,
            "cpu_share": cpu / wall,
            "runqueue_wait_share": wait / wall,
            "blaster_cpu_share": blaster_cpu / wall,
            "blaster_max_lag_vs_schedule_seconds": blaster_lag / rate,
            "us_per_event": 1e6 * cpu / max(1, events),
            "events_per_s_total": events / wall,
            "max_lag_seconds": max(max_lag.values()) / rate,
            "max_lag_vs_schedule_seconds": max(max_lag_due.values()) / rate,
            "end_lag_seconds_max": max(end_lag.values()) / rate,
            "max_write_stall_ms": 1000 * max(_max_stall_since(stats[u], mono0) for u in users),
            "max_write_stall_whole_run_ms": 1000 * max(stats[u].max_stall for u in users),
            "behind": behind,
            "disconnects": sum(sum(st.disconnects.values()) for st in states),
        }
    finally:
        await stop_clients(clients, tasks)
    return out


async def _raw_control_async(blaster: Blaster, sizes: Sizes, seconds: float) -> dict[str, Any]:
    """The same load read by the raw framing client: the floor for CPU, and a check that the
    blaster itself keeps the pace (if it cannot, the scenario's lag figures are not valid)."""
    loop = asyncio.get_running_loop()
    users = [f"raw5-{i:02d}" for i in range(sizes.s5_servers)]
    transports = []
    protocols = []
    for user in users:
        protocol = RawProtocol(user, 1 << 62, loop.create_future())
        transport, _ = await loop.create_connection(lambda p=protocol: p, "127.0.0.1", blaster.port)
        transports.append(transport)
        protocols.append(protocol)
    await asyncio.sleep(0.5)
    count0 = sum(p.count for p in protocols)
    cpu0, wall0, blaster_cpu0 = time.process_time(), time.perf_counter(), blaster.cpu_seconds()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    blaster_cpu = blaster.cpu_seconds() - blaster_cpu0
    count = sum(p.count for p in protocols) - count0
    stats = await asyncio.to_thread(blaster.stats)
    now = time.monotonic()
    schedule_lag = max(
        _lag(stats[u], p.count - 2, now)[1] for u, p in zip(users, protocols, strict=True)
    )
    blaster_lag = max(_lag(stats[u], stats[u].events_sent, stats[u].snapshot)[1] for u in users)
    for transport in transports:
        transport.close()
    return {
        "cpu_share": cpu / wall,
        "events_per_s_total": count / wall,
        "blaster_cpu_share": blaster_cpu / wall,
        "blaster_max_lag_vs_schedule_seconds": schedule_lag / sizes.s5_rate,
        "blaster_own_lag_seconds": blaster_lag / sizes.s5_rate,
    }


def scenario5(sizes: Sizes) -> dict[str, Any]:
    calls = math.ceil(sizes.s5_rate * (sizes.s5_seconds + 4.0) / EVENTS_PER_CALL)
    config = BlasterConfig(
        calls=calls,
        rate=sizes.s5_rate,
        list_prefill=False,
        tick=sizes.s5_tick,
        shared_pacer=sizes.s5_shared_pacer,
    )
    with Blaster(config) as blaster:
        control = asyncio.run(_raw_control_async(blaster, sizes, min(5.0, sizes.s5_seconds)))
    _log(
        f"s5 raw control: CPU share {control['cpu_share']:.2f}, blaster behind schedule by "
        f"{control['blaster_max_lag_vs_schedule_seconds']:.3f} s"
    )
    with Blaster(config) as blaster:
        result = asyncio.run(_scenario5_async(blaster, sizes))
    result["raw_control"] = control
    _log(
        f"s5 {sizes.s5_servers} x {sizes.s5_rate:g}: {result['events_per_s_total']:,.0f} events/s,"
        f" CPU share {result['cpu_share']:.2f} (waiting for a CPU "
        f"{result['runqueue_wait_share']:.2f}), blaster {result['blaster_cpu_share']:.2f}, "
        f"behind: {len(result['behind'])}, max lag {result['max_lag_seconds']:.3f} s"
    )
    return result
