"""The scraper and the health prober of scenario 6, in their own process (so their wake-ups
never wait for the exporter's GIL): one thread scrapes ``/metrics`` back to back over a
keep-alive connection, another GETs ``/-/healthy`` every 10 ms over its own. Prints one JSON
line: scrape count and times, probe latency percentiles, errors.

Usage: ``python -m benchmarks.probe PORT SECONDS``.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import sys
import threading
import time

PROBE_INTERVAL = 0.010


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def _loop(
    port: int, path: str, until: float, interval: float, out: list[float], errors: list[str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    due = time.perf_counter()
    try:
        while time.perf_counter() < until:
            if interval:
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                due += interval
            t0 = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            out.append(time.perf_counter() - t0)
            if response.status != 200 or not body:
                errors.append(f"{path}: status {response.status}")
    except (OSError, http.client.HTTPException) as exc:
        errors.append(f"{path}: {exc!r}")
    finally:
        conn.close()


def main() -> int:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    until = time.perf_counter() + seconds
    scrapes: list[float] = []
    probes: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_loop, args=(port, "/metrics", until, 0.0, scrapes, errors)),
        threading.Thread(
            target=_loop, args=(port, "/-/healthy", until, PROBE_INTERVAL, probes, errors)
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        json.dumps(
            {
                "scrapes": len(scrapes),
                "scrape_ms_median": 1000 * statistics.median(scrapes) if scrapes else None,
                "scrape_ms_max": 1000 * max(scrapes) if scrapes else None,
                "probes": len(probes),
                "healthy_p50_ms": 1000 * _percentile(probes, 0.50),
                "healthy_p99_ms": 1000 * _percentile(probes, 0.99),
                "healthy_max_ms": 1000 * max(probes) if probes else None,
                "errors": errors[:5],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
