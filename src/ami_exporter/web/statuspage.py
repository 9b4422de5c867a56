"""The status page at ``/``: one self-contained HTML document, rendered on the server.

No script, no external asset (inline CSS, inline SVG sparklines), so it works offline and behind
any proxy; a ``<meta http-equiv="refresh">`` reloads it. Per server: AMI up or down and since
when, the last error (login failure, disconnect), active channels and calls, originates and
hangups over the last minutes with sparklines from :mod:`ami_exporter.web.history`, and the top
hangup causes. Every dynamic string is HTML-escaped. The state holds no caller number or name,
so none can reach the page.
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Sequence
from typing import Final

from ami_exporter import __version__
from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History, Sample, take_sample

REFRESH_SECONDS: Final = 10
RECENT_WINDOW: Final = 300.0  # "originates / hangups in the last 5 minutes"
TOP_CAUSES: Final = 6

# What an operator should read into the commonest causes (README, "Reading hangup causes").
CAUSE_HINTS: Final[dict[str, str]] = {
    "0": "not defined (Local ;1 half)",
    "1": "bad number / routing",
    "3": "bad number / routing",
    "16": "normal hangup",
    "17": "busy",
    "18": "no answer",
    "19": "no answer",
    "21": "rejected, or trunk authentication",
    "28": "bad number format",
    "34": "congestion: carrier or outage",
    "38": "network out of order",
    "41": "temporary failure: carrier",
    "42": "switch congestion: carrier",
}

_CSS: Final = """
:root{color-scheme:light;--fg:#1d2430;--muted:#5b6778;--line:#d9dee6;--card:#fff;--bg:#f3f5f8;
--up:#137a3a;--down:#b3261e;--accent:#2f6fbf;--warn:#8a5a00}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1f2a3a;color:#fff;padding:14px 24px;display:flex;flex-wrap:wrap;
align-items:baseline;gap:8px 24px}
header h1{font-size:20px;margin:0;font-weight:600}
header .meta{color:#c9d3e0;font-size:13px}
header nav{margin-left:auto;font-size:14px}
header nav a{color:#fff;margin-left:14px}
main{padding:18px 24px;display:grid;gap:18px}
.server{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px}
.server h2{margin:0 0 4px;font-size:18px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.badge{font-size:13px;font-weight:700;padding:2px 10px;border-radius:12px;color:#fff;
letter-spacing:.04em;text-transform:uppercase}
.badge.up{background:var(--up)}.badge.down{background:var(--down)}
.since{color:var(--muted);font-size:14px;font-weight:400}
.facts{color:var(--muted);font-size:13px;margin:2px 0 10px}
.error{border-left:4px solid var(--down);background:#fbeceb;padding:6px 10px;margin:8px 0;
font-size:14px}
.error.past{border-color:var(--warn);background:#fdf5e6}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px;
margin:10px 0}
.tile{border:1px solid var(--line);border-radius:6px;padding:8px 12px}
.tile .label{color:var(--muted);font-size:13px}
.tile .value{font-size:28px;font-weight:650;line-height:1.2}
.tile .sub{color:var(--muted);font-size:12px}
svg.spark{display:block;width:100%;height:40px;margin-top:4px}
table{border-collapse:collapse;width:100%;max-width:960px;font-size:14px}
td.hint{white-space:nowrap;color:var(--muted)}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line)}
th{color:var(--muted);font-weight:600;font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{height:8px;background:var(--accent);border-radius:4px;min-width:2px}
h3{font-size:14px;margin:14px 0 4px}
footer{color:var(--muted);font-size:12px;padding:0 24px 24px}
.none{color:var(--muted);font-size:14px}
"""


def human_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``30 min``, ``2 h 5 min``, ``4 d 3 h``."""
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        major, minor = f"{secs // 60} min", f"{secs % 60} s"
        rest = secs % 60
    elif secs < 86400:
        major, minor = f"{secs // 3600} h", f"{secs % 3600 // 60} min"
        rest = secs % 3600 // 60
    else:
        major, minor = f"{secs // 86400} d", f"{secs % 86400 // 3600} h"
        rest = secs % 86400 // 3600
    return f"{major} {minor}" if rest else major


def _clock_time(timestamp: float, now: float) -> str:
    local = time.localtime(timestamp)
    if time.localtime(now)[:3] == local[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def sparkline(points: Sequence[tuple[float, float]], *, label: str, color: str) -> str:
    """An inline SVG line (and shaded area) of ``(timestamp, value)`` points, oldest first."""
    width, height, pad = 200.0, 40.0, 2.0
    esc = html.escape(label)
    if not points:
        points = [(0.0, 0.0)]
    t0, t1 = points[0][0], points[-1][0]
    span = t1 - t0
    top = max(max(v for _, v in points), 1.0)
    coords: list[tuple[float, float]] = []
    for t, v in points:
        x = (t - t0) / span * width if span > 0 else width
        y = height - pad - (v / top) * (height - 2 * pad)
        coords.append((x, y))
    if len(coords) == 1:
        coords.insert(0, (0.0, coords[0][1]))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = f"M{coords[0][0]:.1f},{height:.0f} L" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area += f" L{coords[-1][0]:.1f},{height:.0f} Z"
    return (
        f'<svg class="spark" viewBox="0 0 {width:.0f} {height:.0f}" preserveAspectRatio="none" '
        f'role="img" aria-label="{esc}"><title>{esc}</title>'
        f'<path d="{area}" fill="{color}" fill-opacity="0.15" stroke="none"/>'
        f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.6" '
        'vector-effect="non-scaling-stroke" stroke-linejoin="round"/></svg>'
    )


def _deltas(samples: Sequence[Sample], field: str) -> list[tuple[float, float]]:
    """Per-interval increases of a counter field, stamped at the end of each interval."""
    out: list[tuple[float, float]] = []
    for before, after in itertools.pairwise(samples):
        out.append((after.timestamp, max(0, getattr(after, field) - getattr(before, field))))
    return out


def _window_baseline(samples: Sequence[Sample], now: float) -> Sample | None:
    """The newest sample at least RECENT_WINDOW old, else the oldest one (None: no history)."""
    if len(samples) < 2:
        return None
    baseline = samples[0]
    for sample in samples[:-1]:
        if sample.timestamp <= now - RECENT_WINDOW:
            baseline = sample
        else:
            break
    return baseline


def top_hangup_causes(state: ServerState, limit: int = TOP_CAUSES) -> list[tuple[str, str, int]]:
    """``(cause, cause_name, count)`` summed over technologies, most frequent first."""
    totals: dict[tuple[str, str], int] = {}
    for (_, cause, name), count in list(state.hangups.items()):
        totals[(cause, name)] = totals.get((cause, name), 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0][0]))
    return [(cause, name, count) for (cause, name), count in ranked[:limit] if count > 0]


def _tile(label: str, value: str, sub: str, chart: str) -> str:
    return (
        f'<div class="tile"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>'
        f'<div class="sub">{html.escape(sub)}</div>{chart}</div>'
    )


def _server_section(state: ServerState, history: History | None, now: float) -> str:
    samples = history.series(state) if history is not None else []
    live = take_sample(state, now)
    if not samples or samples[-1].timestamp < now:
        samples.append(live)
    status = "up" if state.up else "down"
    since = (
        f"{status} since {_clock_time(state.state_since, now)} "
        f"({human_duration(now - state.state_since)})"
    )
    facts = []
    if state.version:
        facts.append(f"Asterisk {state.version}")
    if state.ami_version:
        facts.append(f"AMI {state.ami_version}")
    if state.system_name:
        facts.append(f"system {state.system_name}")
    if state.startup_timestamp is not None:
        facts.append(f"Asterisk up {human_duration(now - state.startup_timestamp)}")
    if state.reload_timestamp is not None:
        facts.append(f"last reload {human_duration(now - state.reload_timestamp)} ago")
    if state.ping_rtt is not None:
        facts.append(f"ping {state.ping_rtt * 1000:.1f} ms")
    failures = sum(state.login_failures.values())
    disconnects = sum(state.disconnects.values())
    errors = sum(state.connection_errors.values())
    facts.append(
        f"{errors} connection errors, {failures} login failures, {disconnects} disconnects "
        "since the exporter started"
    )

    parts = [
        '<section class="server">',
        f'<h2><span class="name">{html.escape(state.name)}</span>'
        f'<span class="badge {status}">{status}</span>'
        f'<span class="since">AMI {html.escape(since)}</span></h2>',
        f'<p class="facts">{html.escape(" · ".join(facts))}</p>',
    ]
    if state.last_error:
        parts.append(
            f'<div class="error"><strong>Last error:</strong> {html.escape(state.last_error)}</div>'
        )
    elif state.last_problem and state.last_problem_timestamp is not None:
        when = _clock_time(state.last_problem_timestamp, now)
        parts.append(
            f'<div class="error past"><strong>Last error</strong> ({html.escape(when)}, '
            f"{html.escape(human_duration(now - state.last_problem_timestamp))} ago): "
            f"{html.escape(state.last_problem)}</div>"
        )
    else:
        parts.append('<p class="none">Last error: none</p>')

    span = samples[-1].timestamp - samples[0].timestamp
    over = f"last {human_duration(span)}" if len(samples) > 1 else "no history yet"
    channels_chart = sparkline(
        [(s.timestamp, float(s.channels)) for s in samples],
        label=f"active channels, {over}",
        color="#2f6fbf",
    )
    calls_chart = sparkline(
        [(s.timestamp, float(s.calls)) for s in samples],
        label=f"active calls, {over}",
        color="#6a4fb3",
    )
    peak_channels = max(s.channels for s in samples)
    peak_calls = max(s.calls for s in samples)
    baseline = _window_baseline(samples, now)
    if baseline is not None:
        age = now - baseline.timestamp
        window = f"last {human_duration(age - age % 60 if age >= 60 else age)}"
        originates = str(live.originates - baseline.originates)
        failed = live.originates_failed - baseline.originates_failed
        hangups = str(live.hangups - baseline.hangups)
    else:
        window, originates = "since start", str(live.originates)
        failed, hangups = live.originates_failed, str(live.hangups)
    # The live point closes a partial interval: leave it out of the per-interval charts once
    # there is a full one, or the last point would always dip.
    stored = samples[:-1] if len(samples) > 2 and samples[-1] is live else samples
    originate_chart = sparkline(
        _deltas(stored, "originates"),
        label=f"originates per {_interval_text(history)}, {over}",
        color="#137a3a",
    )
    hangup_chart = sparkline(
        _deltas(stored, "hangups"),
        label=f"hangups per {_interval_text(history)}, {over}",
        color="#b3261e",
    )
    parts.append('<div class="tiles">')
    parts.append(
        _tile("Active channels", str(live.channels), f"peak {peak_channels}, {over}",
              channels_chart)
    )  # fmt: skip
    parts.append(_tile("Active calls", str(live.calls), f"peak {peak_calls}, {over}", calls_chart))
    parts.append(
        _tile(f"Originates, {window}", originates,
              f"{failed} failed · {live.originates} since start", originate_chart)
    )  # fmt: skip
    parts.append(_tile(f"Hangups, {window}", hangups, f"{live.hangups} since start", hangup_chart))
    parts.append("</div>")

    causes = top_hangup_causes(state)
    parts.append("<h3>Top hangup causes <span class=\"since\">(since the exporter started)</span>"
                 "</h3>")  # fmt: skip
    if causes:
        total = sum(state.hangups.values()) or 1
        best = causes[0][2] or 1
        rows = [
            '<table class="causes"><tr><th>cause</th><th>name</th><th>meaning</th>'
            '<th class="num">hangups</th><th class="num">share</th><th></th></tr>'
        ]
        for cause, name, count in causes:
            width = max(1, round(100 * count / best))
            rows.append(
                f"<tr><td>{html.escape(cause)}</td><td>{html.escape(name)}</td>"
                f'<td class="hint">{html.escape(CAUSE_HINTS.get(cause, ""))}</td>'
                f'<td class="num">{count}</td><td class="num">{100 * count / total:.0f} %</td>'
                f'<td style="width:30%"><div class="bar" style="width:{width}%"></div></td></tr>'
            )
        rows.append("</table>")
        parts.append("".join(rows))
    else:
        parts.append('<p class="none">No hangup seen yet.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _interval_text(history: History | None) -> str:
    return f"{history.interval:g} s" if history is not None else "interval"


def render_status_page(
    states: Sequence[ServerState],
    history: History | None = None,
    *,
    telemetry_path: str = "/metrics",
    now: float | None = None,
    refresh: int = REFRESH_SECONDS,
) -> bytes:
    """The whole page as UTF-8 bytes."""
    now = time.time() if now is None else now
    up = sum(1 for st in states if st.up)
    metrics = html.escape(telemetry_path)
    if history is not None:
        kept = human_duration(history.interval * history.points)
        keeps = f"History: the last {kept}, one point every {history.interval:g} s, in memory."
    else:
        keeps = "No history is kept."
    sections = "\n".join(_server_section(st, history, now) for st in states)
    if not states:
        sections = '<p class="none">No server configured.</p>'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{int(refresh)}">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AMI status: {up}/{len(states)} up - ami-exporter</title>
<style>{_CSS}</style></head>
<body><header><h1>Asterisk AMI status</h1>
<span class="meta">ami-exporter {html.escape(__version__)} · {up} of {len(states)} servers up ·
updated {html.escape(_clock_time(now, now))} · refreshes every {int(refresh)} s</span>
<nav><a href="{metrics}">Metrics</a><a href="/-/healthy">/-/healthy</a>
<a href="/-/ready">/-/ready</a></nav></header>
<main>
{sections}
</main>
<footer>{html.escape(keeps)} Caller numbers and names are neither shown nor kept.
Diagnose a server from the shell: <code>ami-exporter check</code>.</footer>
</body></html>
"""
    return page.encode("utf-8")
