"""Scenario 4 probes, each run by the suite in a fresh interpreter and printing one JSON line.

``python -m benchmarks.memprobe tracemalloc --channels 10000``
    Bytes attributable to the live channel set: with :mod:`tracemalloc` tracing, a fresh
    :class:`~ami_exporter.state.server.ServerState` is fed the ``Newchannel`` events of N live
    channels (parsed by :class:`~ami_exporter.ami.protocol.AMIParser`, chunk by chunk, messages
    dropped after use); traced memory after minus before, divided by N. The biggest
    allocation sites are listed too.

``python -m benchmarks.memprobe rss --channels 10000``
    Process RSS (``/proc/self/status`` ``VmRSS``, and the peak ``VmHWM``) of the real exporter
    path - :class:`~ami_exporter.client.connection.AMIClient`, the registry and
    the :class:`~ami_exporter.web.server.WebServer`, after a few scrapes - holding N live channels
    that it
    learned from a blaster (``Newchannel`` events plus a ``CoreShowChannels`` answer listing
    them, then 2,000 calls of traffic). The blaster runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from typing import Any


def vm_status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process, in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def probe_tracemalloc(channels: int) -> dict[str, Any]:
    from ami_exporter.ami.protocol import AMIParser
    from ami_exporter.state.server import ServerState
    from benchmarks.stream import build_stream

    data = build_stream(0, channels).data
    gc.collect()
    tracemalloc.start(1)
    state = ServerState("mem")
    gc.collect()
    before_snapshot = tracemalloc.take_snapshot()
    before = tracemalloc.get_traced_memory()[0]

    def feed() -> None:
        parser = AMIParser(expect_banner=False)
        view = memoryview(data)
        for offset in range(0, len(data), 65536):
            for message in parser.feed(bytes(view[offset : offset + 65536])):
                state.handle_event(message)

    feed()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    after_snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = [
        {"where": str(stat.traceback[0]), "bytes": stat.size_diff, "count": stat.count_diff}
        for stat in after_snapshot.compare_to(before_snapshot, "lineno")[:8]
        if stat.size_diff > 0
    ]
    return {
        "channels": len(state.channels),
        "calls": state.active_calls,
        "traced_bytes": after - before,
        "bytes_per_channel": (after - before) / max(1, len(state.channels)),
        "top": top,
    }


async def _rss_async(channels: int, calls: int) -> dict[str, Any]:
    from ami_exporter.client.connection import AMIClient
    from ami_exporter.metrics.collector import build_registry
    from ami_exporter.state.server import ServerState
    from ami_exporter.web.server import WebServer
    from benchmarks.blaster import Blaster, BlasterConfig
    from benchmarks.clients import server_config, stop_clients, wait_until

    imported = vm_status()
    with Blaster(BlasterConfig(calls=calls, prefill_channels=channels)) as blaster:
        state = ServerState("mem")
        web = WebServer(build_registry([state]), [state], host="127.0.0.1", port=0)
        await web.start()
        client = AMIClient(server_config(blaster.port, "mem"), state)
        task = asyncio.create_task(client.run())
        names = tuple(blaster.counts)
        target = blaster.events

        def complete() -> bool:
            events = state.events
            return sum(events.get(n, 0) for n in names) >= target and state.resyncs_completed >= 1

        ok = await wait_until(complete, 120.0, 0.01)
        sizes = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 10.0)
            sizes.append(len(body))
            writer.close()
        gc.collect()
        loaded = vm_status()
        live = len(state.channels)
        await stop_clients([client], [task])
        await web.stop()
    return {
        "channels": live,
        "complete": ok,
        "rss_after_imports": imported["VmRSS"],
        "rss": loaded["VmRSS"],
        "rss_peak": loaded["VmHWM"],
        "scrape_bytes": sizes[-1],
    }


def probe_rss(channels: int, calls: int) -> dict[str, Any]:
    start = vm_status()
    result = asyncio.run(_rss_async(channels, calls))
    result["rss_at_start"] = start["VmRSS"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="memory probes (scenario 4)")
    parser.add_argument("probe", choices=("tracemalloc", "rss"))
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.probe == "tracemalloc":
        result = probe_tracemalloc(args.channels)
    else:
        result = probe_rss(args.channels, args.calls)
    result["seconds"] = time.perf_counter() - t0
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
