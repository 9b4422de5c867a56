"""Run the ingest benchmark suite and print a Markdown results table.

Usage (from the repository root)::

    python -m benchmarks.run                 # full suite, about 3-5 minutes
    python -m benchmarks.run --quick         # smoke run, under a minute
    python -m benchmarks.run --runs 7 --json results.json --only s1,s3 --profile

``python benchmarks/run.py`` works too. Scenarios: ``s1`` events/s vs the baselines, ``s2``
with 1,000/10,000 live channels, ``s3`` ``/metrics`` latency under load, ``s4`` memory, ``s5``
50 servers in one process; the scrape path (benchmarks/scrape.py): ``s6`` loop stalls during
back-to-back scrapes of 90k series, ``s7`` scrape time and encoder cost by series count,
``s8`` a 64-trunk server, ``s9`` 1/50/200 servers at 1k events/s, ``s10`` uvloop.
Progress goes to stderr, the table to stdout. Everything runs on
127.0.0.1; the blaster is a separate process so its CPU never counts against the client.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import platform
import shlex
import subprocess
import time
from dataclasses import asdict, replace
from typing import Any

from benchmarks import scenarios, scrape
from benchmarks.stream import REPO, build_stream

SCENARIOS = ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10")
TARGET_STALL_MS = 50.0
TARGET_HEALTHY_P99_MS = 20.0
TARGET_TRUNK_SCRAPE_MS = 20.0
TARGET_RATIO = 3.0
TARGET_P99_MS = 10.0
TARGET_BYTES_PER_CHANNEL = 300
TARGET_RSS_BYTES = 60_000_000


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "ami_exporter"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in ami_exporter/"
    except (OSError, subprocess.SubprocessError):
        pass
    from ami_exporter import __version__

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "ami_exporter": __version__,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _k(rate: float) -> str:
    return f"{rate / 1000:,.1f}k"


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def render(results: dict[str, Any]) -> str:
    """The Markdown report."""
    m = results["machine"]
    lines = [
        "## ami-exporter ingest benchmark",
        "",
        f"- command: `{results['command']}`",
        f"- machine: {m['nproc']} CPUs ({m['affinity']} usable), {m['cpu'] or 'unknown CPU'}, "
        f"{m['implementation']} {m['python']}, {m['platform']}, load average at start "
        + " / ".join(f"{x:.2f}" for x in m["loadavg_at_start"]),
        f"- code: ami-exporter {m['ami_exporter']}, commit {m['commit'] or 'unknown'}; "
        f"{m['date']}; total {results['seconds']:.0f} s",
    ]
    shape = results.get("stream_shape")
    if shape:
        lines.append(
            f"- stream: {shape['bytes_per_event']:.0f} bytes and {shape['lines_per_event']:.1f} "
            f"lines per event, {shape['events_per_call']:.0f} events per answered call, UTF-8 "
            "caller names (from `tests/fixtures/03-originate-100.exporter.raw`)"
        )
    lines += [
        "",
        "| # | measure | value | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    row = lines.append

    s1 = results.get("s1")
    if s1:
        clients = s1["clients"]
        ours = clients["ours"]
        over = s1["ours_over"]
        runs = len(ours["rates"])
        label = {
            "asterisk-ami": f"asterisk-ami {s1['versions'].get('asterisk-ami', '')}, counting "
            "listener",
            "asterisk-ami+metrics": f"asterisk-ami {s1['versions'].get('asterisk-ami', '')} "
            "+ metrics callback (`Counter.labels(name).inc()`)",
            "panoramisk": f"panoramisk {s1['versions'].get('panoramisk', '')}, `'*'` handler",
            "raw": "raw limit: asyncio protocol counting `\\r\\n\\r\\n`",
            "raw-split": "raw framing: asyncio protocol splitting the bytes into messages",
        }
        ratio_parts = [
            f"{over[n]:.2f}x {n}" for n in ("asterisk-ami+metrics", "raw-split", "raw") if n in over
        ]
        reference = over.get("asterisk-ami+metrics")
        check = "" if ours["ok"] else " (state check FAILED: " + "; ".join(ours["problems"]) + ")"
        row(
            f"| 1 | **ours**: AMIClient -> ServerState, events/s, median of {runs}, "
            f"{s1['events']:,} events{check} | **{_k(ours['median_events_per_s'])}** "
            f"({_k(ours['min_events_per_s'])}-{_k(ours['max_events_per_s'])}) | "
            + " / ".join(ratio_parts)
            + f" | >= {TARGET_RATIO:g}x asterisk-ami + metrics callback, same run | "
            + (_verdict(reference >= TARGET_RATIO and ours["ok"]) if reference else "n/a")
            + " |"
        )
        for name in ("asterisk-ami", "asterisk-ami+metrics", "panoramisk", "raw-split", "raw"):
            if name not in clients:
                row(f"| 1 | {name} | not installed | | | |")
                continue
            c = clients[name]
            flag = "" if c["ok"] else " (incomplete: " + "; ".join(c["problems"]) + ")"
            row(
                f"| 1 | {label[name]}{flag} | {_k(c['median_events_per_s'])} "
                f"({_k(c['min_events_per_s'])}-{_k(c['max_events_per_s'])}) | "
                f"ours = {over[name]:.2f}x | | |"
            )
    s2 = results.get("s2")
    if s2:
        base = s1["clients"]["ours"]["median_events_per_s"] if s1 else None
        for prefill, r in s2.items():
            ratio = f"{r['median_events_per_s'] / base:.2f}x scenario 1" if base else ""
            check = "" if r["ok"] else " (state check FAILED: " + "; ".join(r["problems"]) + ")"
            row(
                f"| 2 | ours with {int(prefill):,} live channels, events/s, median of "
                f"{len(r['rates'])}{check} | {_k(r['median_events_per_s'])} | {ratio} | | |"
            )
    s3 = results.get("s3")
    if s3:
        row(
            f"| 3 | `/metrics` latency p50 / p99 (max), {s3['scrapes']} keep-alive scrapes at "
            f"20/s while ingesting {_k(s3['rate'])} events/s with "
            f"{s3['live_channels_at_start']:,} live channels | {s3['p50_ms']:.2f} / "
            f"**{s3['p99_ms']:.2f} ms** ({s3['max_ms']:.2f}) | | p99 < {TARGET_P99_MS:g} ms | "
            + _verdict(s3["p99_ms"] < TARGET_P99_MS and not s3["scrape_errors"])
            + " |"
        )
        row(
            f"| 3 | ingest during that window: {_k(s3['ingest_events_per_s'])} events/s, "
            f"client CPU {100 * s3['cpu_share']:.0f} % of a core; max lag "
            f"{1000 * s3['max_lag_seconds']:.0f} ms of traffic, longest blocked write "
            f"{s3['max_write_stall_ms']:.0f} ms | "
            + ("kept up" if s3["kept_up"] else "fell behind")
            + f" | | lag < {1000 * scenarios.BEHIND_SECONDS:.0f} ms, no write blocked > "
            f"{1000 * scenarios.WRITE_TIMEOUT:.0f} ms | "
            + _verdict(s3["kept_up"] and s3["all_received"])
            + " |"
        )
    s4 = results.get("s4")
    if s4:
        t, r = s4["tracemalloc"], s4["rss"]
        row(
            f"| 4 | memory per tracked channel (tracemalloc, {t['channels']:,} channels) | "
            f"**{t['bytes_per_channel']:.0f} B** | | <= {TARGET_BYTES_PER_CHANNEL} B | "
            + _verdict(t["bytes_per_channel"] <= TARGET_BYTES_PER_CHANNEL)
            + " |"
        )
        row(
            f"| 4 | RSS with {r['channels']:,} live channels, fresh process (peak VmHWM) | "
            f"**{r['rss'] / 1e6:.1f} MB** ({r['rss_peak'] / 1e6:.1f} MB) | "
            f"{r['rss_after_imports'] / 1e6:.1f} MB after imports | < "
            f"{TARGET_RSS_BYTES / 1e6:.0f} MB | "
            + _verdict(r["rss"] < TARGET_RSS_BYTES and r["complete"])
            + " |"
        )
    s5 = results.get("s5")
    if s5:
        n = s5["servers"]
        ok = s5["cpu_share"] < 1.0 and not s5["behind"] and s5["all_started"]
        control = s5.get("raw_control", {})
        ratio = ""
        if control:
            ratio = f"raw reader: {100 * control['cpu_share']:.0f} % CPU"
            if control["blaster_max_lag_vs_schedule_seconds"] > 0.1:
                ratio += " (blaster could not keep the pace: lag figures not valid)"
        row(
            f"| 5 | {n} servers x {s5['rate_per_server']:,.0f} events/s in one process, "
            f"{s5['window_seconds']:.0f} s: CPU of one core; readers behind; max lag (vs "
            f"schedule); events/s ingested in total | **{100 * s5['cpu_share']:.0f} %**; "
            f"**{len(s5['behind'])}/{n}**; {1000 * s5['max_lag_seconds']:.0f} ms "
            f"({1000 * s5['max_lag_vs_schedule_seconds']:.0f} ms); "
            f"{_k(s5['events_per_s_total'])} | {ratio} | "
            f"< 100 % of one core, 0 behind | " + _verdict(ok) + " |"
        )
    _render_scrape(results, row)
    lines.append("")
    lines.append(
        "Ratios are computed run by run (each round runs every client once against the same "
        "blaster) and the median is shown; `ours = Nx` is ours / that client. A reader is "
        f"behind if it lags more than {scenarios.BEHIND_SECONDS:g} s of traffic or a write to "
        f"it blocks longer than {1000 * scenarios.WRITE_TIMEOUT:.0f} ms (Asterisk's default "
        "`writetimeout`, after which it logs the session off). MB = 10^6 bytes."
    )
    if s1 and s1.get("profile"):
        lines += [
            "",
            "cProfile of one scenario-1 run of ours (top 15 by tottime):",
            "",
            "```",
            s1["profile"].strip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def _render_scrape(results: dict[str, Any], row: Any) -> None:
    """The rows of the scrape-path scenarios (benchmarks/scrape.py)."""
    s6 = results.get("s6")
    if s6:
        st = s6["state"]
        shape = (
            f"{st['series']:,} series, {st['bytes'] / 1e6:.1f} MB (10,000 peers x 8 statuses"
            + (f"; {st['series_padding']:,} synthetic" if st["series_padding"] else "")
            + ")"
        )
        for name, o in s6["options"].items():
            row(
                f"| 6 | option: {name}; back-to-back scrapes of {shape}, 4 s | scrape "
                f"{o['scrape_ms_median']:.0f} ms; loop lag p99 {o['lag_p99_ms']:.1f} / max "
                f"{o['lag_max_ms']:.1f} ms | | | |"
            )
        e = s6["exporter"]
        ok_stall = e["loop_lag_max_ms"] < TARGET_STALL_MS
        ok_probe = e["healthy_p99_ms"] < TARGET_HEALTHY_P99_MS
        kept = e["ingest_max_lag_seconds"] < scenarios.BEHIND_SECONDS and not e["disconnects"]
        row(
            f"| 6 | **exporter**: {e['scrapes']} back-to-back scrapes (median "
            f"{e['scrape_ms_median']:.0f} ms) from another process while reading "
            f"{_k(e['ingest_events_per_s'])} events/s paced; loop lag p99 / max; `/-/healthy` "
            f"every 10 ms p50 / p99 / max | **{e['loop_lag_p99_ms']:.1f} / "
            f"{e['loop_lag_max_ms']:.1f} ms**; **{e['healthy_p50_ms']:.1f} / "
            f"{e['healthy_p99_ms']:.1f} / {e['healthy_max_ms']:.1f} ms** | | stall < "
            f"{TARGET_STALL_MS:g} ms, probe p99 < {TARGET_HEALTHY_P99_MS:g} ms | "
            + _verdict(ok_stall and ok_probe and not e["errors"])
            + " |"
        )
        row(
            f"| 6 | ingest during it: max lag {1000 * e['ingest_max_lag_seconds']:.0f} ms of "
            f"traffic (first half {1000 * e['ingest_lag_first_half_s']:.0f}, second half "
            f"{1000 * e['ingest_lag_second_half_s']:.0f}), longest blocked write "
            f"{e['max_write_stall_ms']:.0f} ms, sessions lost {e['disconnects']} | "
            + ("kept up" if kept else "fell behind")
            + " | | no backlog growth, no session lost | "
            + _verdict(kept)
            + " |"
        )
    s7 = results.get("s7")
    if s7:
        for n, r in s7.items():
            row(
                f"| 7 | scrape of {int(n):,} series ({r['bytes'] / 1e6:.1f} MB), encode only: "
                f"ours / prometheus_client `generate_latest` | **{r['ours_ms']:.1f} ms** / "
                f"{r['prometheus_client_ms']:.1f} ms | {r['ours_us_per_series']:.2f} / "
                f"{r['prometheus_client_us_per_series']:.2f} us per series "
                f"({r['prometheus_client_ms'] / r['ours_ms']:.1f}x) | | |"
            )
    s8 = results.get("s8")
    if s8:
        row(
            f"| 8 | busy server, 64 trunks, every feature: {s8['series']:,} series "
            f"({s8['bytes'] / 1e6:.2f} MB) whole "
            f"scrape, ours / prometheus_client | **{s8['ours_ms']:.1f} ms** / "
            f"{s8['prometheus_client_ms']:.1f} ms | {s8['ours_us_per_series']:.2f} / "
            f"{s8['prometheus_client_us_per_series']:.2f} us per series | < "
            f"{TARGET_TRUNK_SCRAPE_MS:g} ms | "
            + _verdict(s8["ours_ms"] < TARGET_TRUNK_SCRAPE_MS)
            + " |"
        )
    s9 = results.get("s9")
    if s9:
        for n, r in s9.items():
            control = r.get("raw_control", {})
            paced = max(
                r.get("blaster_max_lag_vs_schedule_seconds", 0.0),
                control.get("blaster_own_lag_seconds", 0.0),
            )
            row(
                f"| 9 | {int(n)} server(s) x {r['rate_per_server']:,.0f} events/s in one process, "
                f"{r['window_seconds']:.0f} s: events/s ingested; CPU of one core (waiting for a "
                f"CPU); us per event; blaster CPU; readers behind | "
                f"**{_k(r['events_per_s_total'])}**; **{100 * r['cpu_share']:.0f} %** "
                f"({100 * r.get('runqueue_wait_share', 0):.0f} %); "
                f"{r.get('us_per_event', 0):.1f} us; "
                f"{100 * r.get('blaster_cpu_share', 0):.0f} %; {len(r['behind'])}/{n} | "
                f"raw reader: {100 * control.get('cpu_share', 0):.0f} % CPU"
                + ("" if paced <= 0.1 else " (blaster could not keep the pace)")
                + " | 200 x 1k on one core | "
                + _verdict(r["cpu_share"] < 1.0 and not r["behind"] and r["all_started"])
                + " |"
            )
    s10 = results.get("s10")
    if s10:
        if not s10.get("installed"):
            row("| 10 | uvloop | not installed | | | |")
        else:
            row(
                f"| 10 | ingest events/s, default asyncio loop / uvloop {s10['version']}, "
                f"median of {len(s10['rates']['asyncio'])} interleaved | "
                f"{_k(s10['asyncio_median'])} / {_k(s10['uvloop_median'])} | uvloop = "
                f"{s10['ratio']:.2f}x | adopt only if it wins clearly | |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="ami-exporter ingest benchmarks"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (under a minute)")
    parser.add_argument("--runs", type=int, help="runs per client in scenario 1 (default 5)")
    parser.add_argument("--json", type=Path, help="write all results to this file")
    parser.add_argument(
        "--only", help="comma-separated scenarios to run: s1,...,s10 (default: all)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one scenario-1 run of ours"
    )
    args = parser.parse_args(argv)
    only = SCENARIOS
    if args.only:
        only = tuple(
            part if part.startswith("s") else f"s{part}"
            for part in (p.strip().lower() for p in args.only.split(","))
            if part
        )
        unknown = [s for s in only if s not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be >= 1")
        sizes = replace(sizes, runs=args.runs)

    shown = shlex.join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": f"python -m benchmarks.run {shown}".strip(),
        "machine": _machine(),
        "sizes": asdict(sizes),
    }
    results["stream_shape"] = build_stream(200).shape()
    start = time.perf_counter()
    steps = {
        "s1": lambda: scenarios.scenario1(sizes, profile=args.profile),
        "s2": lambda: scenarios.scenario2(sizes),
        "s3": lambda: scenarios.scenario3(sizes),
        "s4": lambda: scenarios.scenario4(sizes),
        "s5": lambda: scenarios.scenario5(sizes),
        "s6": lambda: scrape.scenario6(4.0 if args.quick else 10.0),
        "s7": lambda: scrape.scenario7(args.quick),
        "s8": lambda: scrape.scenario8(args.quick),
        "s9": lambda: scrape.scenario9(sizes),
        "s10": lambda: scrape.scenario10(sizes.runs, sizes.s1_calls),
    }
    for name in SCENARIOS:
        if name in only:
            scenarios._log(f"--- {name}")
            results[name] = steps[name]()
    results["seconds"] = time.perf_counter() - start
    report = render(results)
    sys.stdout.write(report)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
