"""The scrape-path scenarios of issue #13, each returning a plain JSON-able dict.

* ``s6`` the event loop while ``/metrics`` is scraped back to back under 10,000 peers flapping
  through 8 statuses (about 90k series): first each encoding option alone in-process (loop lag
  of a 10 ms sleeper), then the whole exporter (WebServer + an AMIClient reading a blaster
  paced at 20k events/s) scraped back to back and probed on ``/-/healthy`` every 10 ms by a
  separate process (:mod:`benchmarks.probe`);
* ``s7`` scrape time by series count (1k, 10k, 90k) and the encoder's cost per series, ours
  against prometheus_client's ``generate_latest`` on the same registry;
* ``s8`` one busy server with 64 trunks and every feature on: the real families from events
  (the PJSIP trunk-mix and queue captures, then calls with ringing, answers, RTCP of both
  streams and SIP codes on 64 carriers: channels, outcomes, peers, registrations, queues,
  trunks, RTP);
* ``s9`` 1, 50 and 200 servers at 1,000 events/s each in one process (scenario 5's harness);
* ``s10`` our ingest with the default asyncio loop and with uvloop, interleaved on one stream.

The 10k-peer flapping state is built by ``PeerStatus`` events. The peers work of issue #13
reduces what that state exports by design; while it gives fewer than 90,000 series, a
synthetic per-peer status counter of the former shape (``bench_peer_status_changes``) tops
the registry up, so the load stays that of the issue's measurement.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, Final

from prometheus_client.exposition import generate_latest

from ami_exporter.ami.protocol import Message
from ami_exporter.client.connection import AMIClient
from ami_exporter.metrics.collector import AMIRegistry, build_registry
from ami_exporter.metrics.exposition import Exposition, collector_name, negotiate
from ami_exporter.metrics.table import HistogramRow, Row, TableCollector, counter
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer
from benchmarks.blaster import Blaster, BlasterConfig
from benchmarks.clients import run_ours_async, server_config, stop_clients, stream_events_received
from benchmarks.stream import EVENTS_PER_CALL, REPO

FLAP_PEERS: Final = 10_000
FLAP_STATUSES: Final = (
    "Registered",
    "Reachable",
    "Lagged",
    "Unregistered",
    "Rejected",
    "Unreachable",
    "Unqualified",
    "Unknown",
)
FLAP_SERIES: Final = 90_036  # what #13 measured with this state
S6_RATE: Final = 20_000
TRUNKS: Final = 64


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def _event(name: str, **fields: str) -> Message:
    return Message("event", name, [("Event", name), *fields.items()])


def _series(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


# ---------------------------------------------------------------------- states


def flapping_state(name: str = "flap", peers: int = FLAP_PEERS) -> ServerState:
    """A server whose ``peers`` SIP peers went through all 8 statuses (by PeerStatus events)."""
    state = ServerState(name)
    state.record_session_up()
    for status in FLAP_STATUSES:
        for i in range(peers):
            state.handle_event(
                _event("PeerStatus", ChannelType="SIP", Peer=f"SIP/agent{i:05d}", PeerStatus=status)
            )
    return state


class _Synthetic(TableCollector):
    """Table rows given at construction (benchmarks only): the shapes of families to come."""

    COLLECTOR: ClassVar[str] = "bench"

    def __init__(self, states: Sequence[ServerState], table: Sequence[Row | HistogramRow]) -> None:
        super().__init__(states)
        self.TABLE = tuple(table)  # type: ignore[misc]


def _padding(series: int) -> Row:
    samples = [
        (("SIP", f"agent{i // 8:05d}", FLAP_STATUSES[i % 8].lower()), float(i % 97))
        for i in range(series)
    ]
    return counter(
        "bench_peer_status_changes",
        "Synthetic per-peer status counter of the pre-#13 shape (benchmark padding).",
        ("server", "tech", "peer", "status"),
        lambda st: samples,
    )


def flapping_registry() -> tuple[AMIRegistry, ServerState, dict[str, Any]]:
    """The registry of the flapping server (plus an empty ingest server), topped up to the
    issue's series count while the real families give fewer."""
    flap = flapping_state()
    ingest = ServerState("ingest")
    registry = build_registry([flap, ingest])
    fmt = negotiate("")
    real = _series(Exposition(registry).encode(fmt))
    padded = 0
    if real < FLAP_SERIES:
        padded = FLAP_SERIES - real
        registry.register(_Synthetic([flap], [_padding(padded)]))
    body = Exposition(registry).encode(fmt)
    info = {"series_real": real, "series_padding": padded, "series": _series(body)}
    info["bytes"] = len(body)
    return registry, ingest, info


# ---------------------------------------------------------------------- s6 options


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.010)
        lags.append(loop.time() - t0 - 0.010)


def _options(registry: AMIRegistry) -> dict[str, Callable[[], Awaitable[object]]]:
    fmt = negotiate("")
    ours = Exposition(registry)

    async def pc_loop() -> object:
        return generate_latest(registry)

    async def pc_thread() -> object:
        return await asyncio.to_thread(generate_latest, registry)

    async def ours_loop() -> object:
        return ours.encode(fmt)

    async def ours_thread() -> object:
        return await ours.encode_async(fmt)

    async def ours_slices() -> object:
        return await ours.encode_async(fmt, thread=False)

    return {
        "prometheus_client generate_latest on the loop (before)": pc_loop,
        "prometheus_client generate_latest in a worker thread": pc_thread,
        "our writer, whole scrape on the loop": ours_loop,
        "our writer in 2 ms slices on the loop": ours_slices,
        "our writer in a worker thread (adopted)": ours_thread,
    }


async def _measure_option(
    scrape: Callable[[], Awaitable[object]], seconds: float
) -> dict[str, Any]:
    stop = asyncio.Event()
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(stop, lags))
    durations: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or not durations:
        t0 = time.perf_counter()
        await scrape()
        durations.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    stop.set()
    await probe
    return {
        "scrapes": len(durations),
        "scrape_ms_median": 1000 * statistics.median(durations),
        "lag_p99_ms": 1000 * _percentile(lags, 0.99),
        "lag_max_ms": 1000 * max(lags, default=0.0),
    }


def scenario6_options(seconds: float) -> dict[str, Any]:
    registry, _, info = flapping_registry()
    out: dict[str, Any] = {"state": info, "options": {}}
    for name, scrape in _options(registry).items():
        gc.collect()
        result = asyncio.run(_measure_option(scrape, seconds))
        out["options"][name] = result
        _log(
            f"s6 {name}: scrape {result['scrape_ms_median']:.0f} ms, loop lag p99 "
            f"{result['lag_p99_ms']:.1f} ms, max {result['lag_max_ms']:.1f} ms"
        )
    return out


# ---------------------------------------------------------------------- s6 whole exporter


def _probe_process(port: int, seconds: float) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.probe", str(port), str(seconds)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _scenario6_async(blaster: Blaster, seconds: float) -> dict[str, Any]:
    registry, ingest, info = flapping_registry()
    web = WebServer(registry, [ingest], host="127.0.0.1", port=0)
    await web.start()
    client = AMIClient(server_config(blaster.port, "s6", "ingest"), ingest)
    task = asyncio.create_task(client.run())
    names = tuple(blaster.counts)
    out: dict[str, Any] = {"state": info, "rate": S6_RATE}
    try:
        for _ in range(200):
            stats = (await asyncio.to_thread(blaster.stats)).get("s6")
            if stats is not None and stats.started:
                break
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        lags: list[float] = []
        lag_task = asyncio.create_task(_lag_probe(stop, lags))
        probe = _probe_process(web.port, seconds)
        lag_samples: list[tuple[float, float]] = []
        received0 = stream_events_received(ingest, names)
        t0 = time.monotonic()
        while probe.poll() is None and time.monotonic() - t0 < seconds + 30:
            await asyncio.sleep(0.25)
            stats = (await asyncio.to_thread(blaster.stats))["s6"]
            behind = stats.events_sent - stream_events_received(ingest, names)
            lag_samples.append((round(time.monotonic() - t0, 2), behind / S6_RATE))
        received = stream_events_received(ingest, names) - received0
        wall = time.monotonic() - t0
        stop.set()
        await lag_task
        stdout, _ = await asyncio.to_thread(probe.communicate)
        result = json.loads(stdout.strip().splitlines()[-1])
        half = len(lag_samples) // 2
        first = max((lag for _, lag in lag_samples[:half]), default=0.0)
        second = max((lag for _, lag in lag_samples[half:]), default=0.0)
        stats = (await asyncio.to_thread(blaster.stats))["s6"]
        out |= result | {
            "loop_lag_p99_ms": 1000 * _percentile(lags, 0.99),
            "loop_lag_max_ms": 1000 * max(lags, default=0.0),
            "ingest_events_per_s": received / wall,
            "ingest_max_lag_seconds": max((lag for _, lag in lag_samples), default=0.0),
            "ingest_lag_first_half_s": first,
            "ingest_lag_second_half_s": second,
            "max_write_stall_ms": 1000 * stats.max_stall,
            "disconnects": sum(ingest.disconnects.values()),
            "lag_samples": lag_samples,
        }
    finally:
        await stop_clients([client], [task])
        await web.stop()
    return out


def scenario6(seconds: float) -> dict[str, Any]:
    out = scenario6_options(min(seconds, 4.0))
    calls = math.ceil(S6_RATE * (seconds + 15) / EVENTS_PER_CALL)
    config = BlasterConfig(calls=calls, rate=S6_RATE, list_prefill=False)
    with Blaster(config) as blaster:
        out["exporter"] = asyncio.run(_scenario6_async(blaster, seconds))
    e = out["exporter"]
    _log(
        f"s6 exporter: {e['scrapes']} scrapes (median {e['scrape_ms_median']:.0f} ms), healthy "
        f"p99 {e['healthy_p99_ms']:.1f} ms max {e['healthy_max_ms']:.1f} ms, loop lag max "
        f"{e['loop_lag_max_ms']:.1f} ms, ingest lag max {e['ingest_max_lag_seconds']:.3f} s"
    )
    return out


# ---------------------------------------------------------------------- s7


def _registry_of(table: Sequence[Row | HistogramRow], states: Sequence[ServerState]) -> AMIRegistry:
    registry = AMIRegistry()
    registry.register(_Synthetic(states, table))
    return registry


def _timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scenario7(quick: bool) -> dict[str, Any]:
    fmt = negotiate("")
    state = ServerState("pbx1")
    out: dict[str, Any] = {}
    for n in (1_000, 10_000, 90_000):
        registry = _registry_of([_padding(n)], [state])
        ours = Exposition(registry, self_metrics=False)
        body = ours.encode(fmt)
        assert body == generate_latest(registry), "the writer differs from prometheus_client"
        runs = 3 if quick or n >= 90_000 else 7
        t_ours = _timed(partial(ours.encode, fmt), runs)
        t_pc = _timed(partial(generate_latest, registry), max(1, runs // 2))
        out[str(n)] = {
            "series": _series(body),
            "bytes": len(body),
            "ours_ms": 1000 * t_ours,
            "prometheus_client_ms": 1000 * t_pc,
            "ours_us_per_series": 1e6 * t_ours / n,
            "prometheus_client_us_per_series": 1e6 * t_pc / n,
        }
        _log(
            f"s7 {n:,} series: ours {1000 * t_ours:.1f} ms ({1e6 * t_ours / n:.2f} us/series), "
            f"prometheus_client {1000 * t_pc:.1f} ms ({1e6 * t_pc / n:.2f} us/series)"
        )
    return out


# ---------------------------------------------------------------------- s8


def _trunk_traffic(state: ServerState, calls_per_trunk: int) -> None:
    """Calls on 64 PJSIP carriers, by events: Newchannel (inbound Ring / outbound Down),
    Newstate Up for most, Hangup with a spread of causes, with Timestamp headers."""
    causes = ("16", "16", "16", "17", "19", "34", "21", "1", "0", "38")
    now = time.time()
    uid = 0
    for t in range(TRUNKS):
        trunk = f"carrier{t:02d}"
        state.handle_event(
            _event("PeerStatus", ChannelType="PJSIP", Peer=f"PJSIP/{trunk}", PeerStatus="Reachable")
        )
        state.handle_event(
            _event(
                "Registry",
                ChannelType="PJSIP",
                Username=f"{trunk}",
                Domain=f"sip:{trunk}.example",
                Status="Registered",
            )
        )
        for c in range(calls_per_trunk):
            uid += 1
            u = f"1700000000.{uid}"
            chan = f"PJSIP/{trunk}-{uid:08x}"
            inbound = c % 3 == 0
            ts = f"{now + uid / 1000:.6f}"
            base = {"Channel": chan, "Uniqueid": u, "Linkedid": u, "Timestamp": ts}
            state.handle_event(
                _event(
                    "Newchannel",
                    **base,
                    ChannelState="4" if inbound else "0",
                    ChannelStateDesc="Ring" if inbound else "Down",
                    CallerIDNum="15551230000",
                    Exten="100",
                    Context="from-trunk",
                )
            )
            cause = causes[c % len(causes)]
            if not inbound:  # post-dial delay: created Down, then ringing
                state.handle_event(
                    _event("Newstate", **base, ChannelState="5", ChannelStateDesc="Ringing")
                )
            if cause == "16":
                state.handle_event(
                    _event("Newstate", **base, ChannelState="6", ChannelStateDesc="Up")
                )
                _rtcp(state, chan, c)
            if c % 7 == 0:
                continue  # stays up: live channels per trunk
            codes = {"17": "486", "19": "480", "34": "503", "21": "603", "1": "404"}
            extra = {"TechCause": codes[cause]} if cause in codes else {}
            state.handle_event(_event("Hangup", **base, Cause=cause, **{"Cause-txt": "x"}, **extra))


def _rtcp(state: ServerState, chan: str, c: int) -> None:
    """One RTCPSent and one RTCPReceived with a report block each (the captures' headers),
    so every RTP family of the trunk has observations of both streams."""
    block = {
        "ReportCount": "1",
        "Report0FractionLost": str(c % 13),
        "Report0IAJitter": str(8 * (c % 40)),
        "Report0LSR": "1234",
        "MES": f"{88.1 - c % 30:.1f}",
    }
    state.handle_event(_event("RTCPSent", Channel=chan, **block))
    state.handle_event(_event("RTCPReceived", Channel=chan, RTT=f"{0.02 + c / 1000:.4f}", **block))


def scenario8(quick: bool) -> dict[str, Any]:
    from benchmarks.stream import REPO as _repo

    state = ServerState("busy")
    state.record_session_up()
    # Real traffic first: the PJSIP trunk mix and queue captures of Asterisk 22.
    from ami_exporter.ami.protocol import AMIParser

    for name in ("pjsip/trunk-mix.listener.raw.gz", "pjsip/queue.listener.raw.gz"):
        import gzip

        raw = gzip.decompress((_repo / "tests" / "fixtures" / name).read_bytes())
        for msg in AMIParser(expect_banner=True).feed(raw):
            if msg.kind == "event":
                state.handle_event(msg)
    _trunk_traffic(state, 30)
    registry = build_registry([state])
    kinds = {collector_name(c) or "" for c in registry.collectors}
    fmt = negotiate("")
    ours = Exposition(registry)
    body = ours.encode(fmt)
    runs = 7 if quick else 25
    t_ours = _timed(lambda: ours.encode(fmt), runs)
    t_pc = _timed(lambda: generate_latest(registry), max(3, runs // 3))
    series = _series(body)
    out = {
        "series": series,
        "bytes": len(body),
        "real_collectors": sorted(k for k in kinds if k),
        "ours_ms": 1000 * t_ours,
        "prometheus_client_ms": 1000 * t_pc,
        "ours_us_per_series": 1e6 * t_ours / series,
        "prometheus_client_us_per_series": 1e6 * t_pc / series,
    }
    _log(
        f"s8 64 trunks: {series:,} series, ours {out['ours_ms']:.1f} ms, prometheus_client "
        f"{out['prometheus_client_ms']:.1f} ms"
    )
    return out


# ---------------------------------------------------------------------- s9, s10


S9_TICK: Final = 0.01  # 10 events per write per server at 1k events/s


def scenario9(sizes: Any, counts: Sequence[int] = (1, 50, 200)) -> dict[str, Any]:
    """Scenario 5's harness at 1k events/s a server, with the blaster's shared pacer: one
    thread writes every connection's due events each 10 ms. The per-connection writer threads
    of s5 cost the blaster 0.7-1.3 CPUs at 200 connections, which starved the client on this
    2-CPU machine (it was runnable but waiting 35-48 % of the time) instead of measuring it."""
    from benchmarks import scenarios

    out: dict[str, Any] = {}
    for n in counts:
        variant = replace(
            sizes,
            s5_servers=n,
            s5_rate=1000.0,
            s5_seconds=max(5.0, sizes.s5_seconds),
            s5_tick=S9_TICK,
            s5_shared_pacer=True,
        )
        out[str(n)] = scenarios.scenario5(variant)
    return out


def scenario10(runs: int, calls: int) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return {"installed": False}
    from ami_exporter.client import connection

    # uvloop's transports are not asyncio.Transport subclasses: the client's isinstance
    # assertion in connection_made refuses them. Patched here, for the measurement only.
    def connection_made(self: Any, transport: Any) -> None:
        self.transport = transport

    connection._AMIProtocol.connection_made = connection_made  # type: ignore[method-assign]
    rates: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    problems: list[str] = []
    with Blaster(BlasterConfig(calls=calls)) as blaster:
        for run in range(runs):
            for kind in ("asyncio", "uvloop"):
                gc.collect()
                factory = uvloop.new_event_loop if kind == "uvloop" else None
                with asyncio.Runner(loop_factory=factory) as runner:
                    m = runner.run(
                        run_ours_async(
                            blaster.port,
                            f"uv-{kind}-{run}",
                            blaster.counts,
                            blaster.config.calls,
                            0,
                            0,
                        )
                    )
                rates[kind].append(m.rate)
                problems += m.problems
                _log(f"s10 run {run + 1}/{runs} {kind}: {m.rate:,.0f} events/s")
    ratio = statistics.median(u / a for u, a in zip(rates["uvloop"], rates["asyncio"], strict=True))
    return {
        "installed": True,
        "version": uvloop.__version__,
        "asyncio_median": statistics.median(rates["asyncio"]),
        "uvloop_median": statistics.median(rates["uvloop"]),
        "ratio": ratio,
        "rates": rates,
        "problems": problems[:5],
    }
