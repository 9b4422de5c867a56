"""Attacks on the HTTP side, measured: the before/after figures of issue #12 ("HTTP side").

Each scenario starts a server in a fresh interpreter with ``PYTHONPATH=SRC`` (so the same
script measures an old checkout's ``src/`` and the current one), attacks it from this
process on 127.0.0.1 and prints one JSON line:

``python -m benchmarks.http_attacks fd --src src``
    ``ami-exporter --demo`` under ``prlimit --nofile=1024:1024`` and 1100 idle connections
    held for 20 s: scrapes attempted once a second (2 s timeout each) and how many got a 200,
    and the bytes the exporter logged meanwhile.

``python -m benchmarks.http_attacks slow --src src --clients 300``
    A WebServer whose ``/metrics`` body is ``--body-mb`` (default 8) MB, and N clients that
    each send ``GET /metrics`` and never read: the median and worst latency of a reading
    client's scrapes over ``--seconds``, and the server's RSS (VmRSS) before, at the peak and
    at the end.

``python -m benchmarks.http_attacks wrk --src src --seconds 10 [--connections 50]``
    ``ami-exporter --demo``, then ``wrk -c50 -t2 -d10s --latency`` on ``/metrics``: req/s,
    p50 and p99, the exporter's CPU time per request, and any non-zero
    ``asterisk_ami_malformed_messages_total`` or disconnect counter after. With
    ``--connections 1`` no two scrapes are ever concurrent (none is shared): the cost of one.

To measure the code before a change, export it and point ``--src`` at it:
``git archive <commit> src | tar -x -C /tmp/before`` then ``--src /tmp/before/src``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BIG_SERVER = r"""
import asyncio, sys
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry
from ami_exporter.web.server import WebServer

class Big:
    def __init__(self, mb):
        self.label = "x" * 65536
        self.n = mb * 16
    def collect(self):
        g = GaugeMetricFamily("big", "a big body", labels=["i", "pad"])
        for i in range(self.n):
            g.add_metric([str(i), self.label], i)
        yield g

async def main():
    registry = CollectorRegistry()
    registry.register(Big(int(sys.argv[1])))
    web = WebServer(registry, [], host="127.0.0.1", port=0)
    await web.start()
    print(web.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def scrape(port: int, timeout: float = 2.0, path: str = "/metrics") -> tuple[int, float]:
    """(status or 0 on failure, seconds) of one GET on a new connection, body read whole."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - start)))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                if time.monotonic() - start > timeout:
                    return 0, time.monotonic() - start
                data = sock.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return 0, time.monotonic() - start
    head = b"".join(chunks)[:12]
    status = int(head[9:12]) if head.startswith(b"HTTP/1.") else 0
    return status, time.monotonic() - start


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scrape(port, 1.0, "/-/healthy")[0] == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def demo(
    src: str, *prefix: str, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": src}
    out = open(log or os.devnull, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "ami_exporter",
            "--demo",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def open_idle(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def run_fd(src: str, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        with demo(src, "prlimit", "--nofile=1024:1024", log=log) as (_, port):
            before = log.stat().st_size
            idle = open_idle(port, 1100)
            results = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                results.append(scrape(port, 2.0))
                time.sleep(max(0.0, 1.0 - results[-1][1]))
            logged = log.stat().st_size - before
            for s in idle:
                s.close()
            text = log.read_text(errors="replace")
    ok = [t for status, t in results if status == 200]
    return {
        "scenario": "fd",
        "src": src,
        "idle_connected": len(idle),
        "scrapes": len(results),
        "scrapes_ok": len(ok),
        "median_ok_s": statistics.median(ok) if ok else None,
        "log_bytes": logged,
        "tracebacks": text.count("Traceback"),
    }


def start_big(src: str, body_mb: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BIG_SERVER, str(body_mb)],
        env={**os.environ, "PYTHONPATH": src},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def run_slow(src: str, clients: int, body_mb: int, seconds: float) -> dict[str, Any]:
    proc, port = start_big(src, body_mb)
    try:
        wait_port(port)
        for _ in range(3):
            scrape(port, 10.0)
        base = rss(proc.pid)
        socks = []
        for _ in range(clients):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2.0)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            except OSError:
                s.close()
                continue
            socks.append(s)
        latencies, peak, end = [], rss(proc.pid), time.monotonic() + seconds
        while time.monotonic() < end:
            status, took = scrape(port, 10.0)
            latencies.append(took if status == 200 else float("inf"))
            peak = max(peak, rss(proc.pid))
            time.sleep(0.2)
        final = rss(proc.pid)
        dropped = 0
        for s in socks:
            s.setblocking(False)
            try:
                while s.recv(1 << 20):
                    pass
                dropped += 1  # EOF: the server closed it
            except BlockingIOError:
                pass
            except OSError:
                dropped += 1
            s.close()
    finally:
        proc.kill()
        proc.wait()
    return {
        "scenario": "slow",
        "src": src,
        "clients": len(socks),
        "body_mb": body_mb,
        "scrapes": len(latencies),
        "median_s": statistics.median(latencies),
        "max_s": max(latencies),
        "rss_base_mb": base / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_end_mb": final / 2**20,
        "attackers_dropped": dropped,
    }


def metric(port: int, pattern: str) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    return [ln for ln in data.decode().splitlines() if re.match(pattern, ln)]


def run_wrk(src: str, seconds: int, connections: int) -> dict[str, Any]:
    watch = (
        r"asterisk_ami_(malformed_messages_total"
        r"|disconnects_total\{reason=\"(eof|error|ping_timeout)\")"
    )
    with demo(src) as (proc, port):
        time.sleep(1.0)
        cpu = cpu_seconds(proc.pid)
        out = subprocess.run(
            [
                "wrk",
                f"-c{connections}",
                f"-t{min(2, connections)}",
                f"-d{seconds}s",
                "--latency",
                f"http://127.0.0.1:{port}/metrics",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu = cpu_seconds(proc.pid) - cpu
        after = metric(port, watch)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Socket errors:.*|Non-2xx.*", out)
    return {
        "scenario": "wrk",
        "src": src,
        "req_s": rps,
        "p50": p50,
        "p99": p99,
        "server_cpu_us_per_request": round(cpu / requests * 1e6),
        "errors": errors.group(0) if errors else None,
        "lost": [ln for ln in after if not ln.endswith(" 0.0")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("fd", "slow", "wrk"))
    parser.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--connections", type=int, default=50, help="wrk's -c (default 50)")
    parser.add_argument("--body-mb", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    src = str(Path(args.src).resolve())
    if args.scenario == "fd":
        result = run_fd(src, args.seconds)
    elif args.scenario == "slow":
        result = run_slow(src, args.clients, args.body_mb, args.seconds)
    else:
        result = run_wrk(src, int(args.seconds), args.connections)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
