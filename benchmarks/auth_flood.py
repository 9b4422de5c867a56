"""Basic auth under attack: user-name timing and a correct scrape during a wrong-password flood.

Starts the real exporter (``python -m ami_exporter``, a subprocess: its CPU is not this
script's) with a ``--web.config.file`` holding cost-12 bcrypt users, then measures:

* ``timing``: the median time of N requests for a known user with a wrong password and for
  an unknown user (a new password each request, so no cache can answer), and the same with
  one password repeated;
* ``flood``: on a fresh exporter (empty caches), C concurrent clients sending wrong passwords
  in a loop (``--vary``: a new password each request), then one correct request: its status
  and latency, while the flood runs.

    PYTHONPATH=$PWD/src python3 -m benchmarks.auth_flood            # both, cost 12
    PYTHONPATH=$PWD/src python3 -m benchmarks.auth_flood --only flood --vary  # new passwords
    PYTHONPATH=$PWD/src python3 -m benchmarks.auth_flood --only flood --vary --flood-from 127.0.0.2

Everything binds 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt

PASSWORD = "Scrape-Pass-7c1f"


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(
    port: int, auth: str, timeout: float = 30.0, source: str = "127.0.0.1"
) -> tuple[int, float]:
    """One ``GET /metrics`` on a new connection: (status, seconds); status 0 on failure."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(
                f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
            await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return 0, time.perf_counter() - start
    parts = line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, time.perf_counter() - start


@contextlib.contextmanager
def exporter(web_config: Path) -> Iterator[int]:
    """A running exporter (its AMI server refuses: /metrics is served all the same)."""
    port = _free_port()
    argv = [sys.executable, "-m", "ami_exporter", "--web.listen-address", f"127.0.0.1:{port}"]
    argv += ["--ami.address", f"127.0.0.1:{_free_port()}", "--ami.username", "u"]
    argv += ["--web.config.file", str(web_config), "--log.level", "error"]
    env = {**os.environ, "AMI_SECRET": "x"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def timing(port: int, n: int) -> None:
    cases = {
        "known user, new wrong password": lambda i: _auth("prometheus", f"wrong-{i}"),
        "unknown user, new password": lambda i: _auth(f"nobody{i % 3}", f"wrong-{i}"),
        "known user, same wrong password": lambda i: _auth("prometheus", "wrong"),
        "unknown user, same password": lambda i: _auth("nobody", "wrong"),
        "known user, right password": lambda i: _auth("prometheus", PASSWORD),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    statuses: dict[str, int] = {}
    for i in range(n):  # interleaved: every case sees the same machine load
        for name, make in cases.items():
            statuses[name], seconds = await get(port, make(i))
            times[name].append(seconds)
    for name, seen in times.items():
        median, fastest = statistics.median(seen) * 1000, min(seen) * 1000
        print(f"{name:34} {statuses[name]}  median {median:7.1f} ms  min {fastest:7.1f} ms")


async def flood(port: int, clients: int, vary: bool, seconds: float, source: str) -> None:
    stop = asyncio.Event()
    counts: dict[int, int] = {}

    async def attacker(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            password = f"bad-{k}-{i}" if vary else "bad"
            status, _ = await get(port, _auth("prometheus", password), source=source)
            counts[status] = counts.get(status, 0) + 1

    tasks = [asyncio.create_task(attacker(k)) for k in range(clients)]
    await asyncio.sleep(0.5)  # the flood is under way
    status, latency = await get(port, _auth("prometheus", PASSWORD))
    print(f"correct scrape during the flood: status {status} after {latency * 1000:.0f} ms")
    await asyncio.sleep(max(0.0, seconds - 0.5 - latency))
    status2, latency2 = await get(port, _auth("prometheus", PASSWORD))
    print(f"and again (cached):              status {status2} after {latency2 * 1000:.0f} ms")
    stop.set()
    await asyncio.gather(*tasks)
    print(f"flood answers by status: {dict(sorted(counts.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("timing", "flood"))
    parser.add_argument("--cost", type=int, default=12)
    parser.add_argument("-n", type=int, default=15, help="requests per timing case")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--vary", action="store_true", help="a new wrong password each request")
    parser.add_argument("--seconds", type=float, default=3.0, help="flood duration")
    parser.add_argument("--flood-from", default="127.0.0.1", help="the flood's source address")
    args = parser.parse_args()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(args.cost)).decode()
    other = bcrypt.hashpw(b"other", bcrypt.gensalt(args.cost)).decode()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "web.yml"
        config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n  grafana: {other}\n")
        if args.only in (None, "timing"):
            with exporter(config) as port:
                asyncio.run(timing(port, args.n))
        if args.only in (None, "flood"):
            with exporter(config) as port:
                asyncio.run(flood(port, args.clients, args.vary, args.seconds, args.flood_from))


if __name__ == "__main__":
    main()
