"""Soak: the exporter process against the simulator at a high call rate for several minutes,
with periodic dropped connections and Asterisk restarts. Not a unit test.

    python3 -m benchmarks.soak --minutes 3 --calls-per-second 100

Every few seconds it samples the exporter process (RSS, open file descriptors, from /proc)
and a scrape (channels the exporter tracks), and the simulator's true live channel count.
At the end it prints the table and a summary; with ``--check`` it exits 1 when RSS grew by
more than ``--max-rss-growth-mib`` after warm-up, file descriptors grew, or the tracked
channels were wrong at the last sample. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from ami_simulator.server import SimulatedAsterisk, SimulatorConfig

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    tracked: int
    true: int
    events: float
    up: float
    note: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _scrape(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    out = {"tracked": 0.0, "events": 0.0, "up": 0.0}
    for family in text_string_to_metric_families(body):
        if family.name == "asterisk_active_channels":
            out["tracked"] = sum(s.value for s in family.samples)
        elif family.name == "asterisk_ami_events":
            out["events"] = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "asterisk_ami_up":
            out["up"] = sum(s.value for s in family.samples)
    return out


def _start(
    argv: list[str], env: dict[str, str], log_path: str
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the process is gone
    return subprocess.Popen(argv, env=env, stdout=log, stderr=log), log


async def soak(args: argparse.Namespace) -> int:
    secret = secrets.token_urlsafe(16)
    sim = SimulatedAsterisk(
        SimulatorConfig(
            port=0,
            secret=secret,
            calls_per_second=args.calls_per_second,
            hold_time=args.hold_time,
            auth_delay=0.2,
            seed=11,
        )
    )
    await sim.start()
    web_port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "AMI_SECRET": secret,
        "LANG": "C.UTF-8",
    }
    argv = [
        sys.executable,
        "-m",
        "ami_exporter",
        "--ami.address",
        f"127.0.0.1:{sim.port}",
        "--ami.username",
        "exporter",
        "--web.listen-address",
        f"127.0.0.1:{web_port}",
        "--ami.ping-interval",
        "5",
        "--ami.resync-interval",
        "20",
        "--log.level",
        "warn",
    ]
    proc, log = _start(argv, env, args.log)
    samples: list[Sample] = []
    start = time.monotonic()
    duration = args.minutes * 60
    next_drop = args.disconnect_every
    next_restart = args.restart_every
    note = ""
    try:
        await asyncio.sleep(2.0)
        while (elapsed := time.monotonic() - start) < duration:
            if elapsed >= next_restart:
                next_restart += args.restart_every
                await sim.restart(downtime=0.5)
                note += "restart "
            elif elapsed >= next_drop:
                next_drop += args.disconnect_every
                await sim.drop_connections()
                note += "drop "
            try:
                scraped = await asyncio.to_thread(_scrape, web_port)
            except OSError as exc:
                print(f"scrape failed: {exc}", file=sys.stderr)
                scraped = {"tracked": -1, "events": -1, "up": 0}
            true = len(sim.active_channels())
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            sample = Sample(
                elapsed,
                _rss_mib(proc.pid),
                fds,
                int(scraped["tracked"]),
                true,
                scraped["events"],
                scraped["up"],
                note.strip(),
            )
            samples.append(sample)
            note = ""
            print(
                f"{sample.t:7.1f} s  rss {sample.rss_mib:6.1f} MiB  fds {sample.fds:3d}  "
                f"tracked {sample.tracked:5d}  true {sample.true:5d}  "
                f"events {sample.events:12,.0f}  up {sample.up:.0f}  {sample.note}",
                flush=True,
            )
            await asyncio.sleep(args.interval)
        # Let the last disruption settle, then compare with the truth.
        await asyncio.sleep(3.0)
        final = await asyncio.to_thread(_scrape, web_port)
        final_true = len(sim.active_channels())
        final_rss, final_fds = _rss_mib(proc.pid), len(os.listdir(f"/proc/{proc.pid}/fd"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        await sim.stop()

    warm = [s for s in samples if s.t >= min(60.0, duration / 3)] or samples
    rss_growth = final_rss - warm[0].rss_mib
    events_per_s = final["events"] / (time.monotonic() - start)
    print()
    print(
        f"duration {duration:.0f} s, {args.calls_per_second:g} calls/s, drop every "
        f"{args.disconnect_every:g} s, restart every {args.restart_every:g} s"
    )
    print(f"events ingested: {final['events']:,.0f} (~{events_per_s:,.0f}/s)")
    print(
        f"RSS: first {samples[0].rss_mib:.1f} MiB, after warm-up {warm[0].rss_mib:.1f} MiB, "
        f"max {max(s.rss_mib for s in samples):.1f} MiB, final {final_rss:.1f} MiB "
        f"(growth after warm-up {rss_growth:+.1f} MiB)"
    )
    print(
        f"fds: min {min(s.fds for s in samples)}, max {max(s.fds for s in samples)}, "
        f"final {final_fds}"
    )
    print(
        f"tracked channels at the end: {final['tracked']:.0f} (true {final_true}); max "
        f"tracked during the run {max(s.tracked for s in samples)}"
    )
    ok = (
        rss_growth <= args.max_rss_growth_mib
        and final_fds <= min(s.fds for s in samples) + 2
        and abs(final["tracked"] - final_true) <= max(2, final_true * 0.02)
    )
    print("verdict:", "flat" if ok else "NOT FLAT")
    return 0 if ok or not args.check else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--calls-per-second", type=float, default=100.0)
    p.add_argument("--hold-time", type=float, default=5.0, help="mean answered-call hold")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--disconnect-every", type=float, default=30.0)
    p.add_argument("--restart-every", type=float, default=75.0)
    p.add_argument("--max-rss-growth-mib", type=float, default=8.0)
    p.add_argument("--log", default="/tmp/ami-exporter-soak.log")  # noqa: S108
    p.add_argument("--check", action="store_true", help="exit 1 unless flat")
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
