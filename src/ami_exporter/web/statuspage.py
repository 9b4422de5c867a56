"""The status page at ``/``: one self-contained HTML document, rendered on the server.

No script, no external asset (inline CSS, inline SVG sparklines), so it works offline and behind
any proxy; a ``<meta http-equiv="refresh">`` reloads it, and its Content-Security-Policy
(``default-src 'none'``) keeps anything else from loading. Per server: AMI up or down and since
when, the last error (login failure, disconnect), active channels and calls, originates and
hangups over the last minutes with sparklines from :mod:`ami_exporter.web.history`, and the top
hangup causes. The state holds no caller number or name, so none can reach the page.

The markup and the CSS are package data (``templates/``), read once at import. Their
``${...}`` placeholders are filled by :func:`_fill`, which HTML-escapes every value but the
fragments already rendered (:class:`Markup`): every dynamic string is escaped.
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Final

from ami_exporter import __version__
from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History, Sample, take_sample

REFRESH_SECONDS: Final = 10
EXPORTER_NAME: Final = "AMI Exporter"
EXPORTER_DESCRIPTION: Final = (
    "Prometheus exporter for the Asterisk Manager Interface (AMI): channels, calls, "
    "originates, hangup causes, peers and AMI health"
)
RELOAD_PATH: Final = "/-/reload"
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


def _load(name: str) -> str:
    return (resources.files(__package__) / "templates" / name).read_text(encoding="utf-8")


def _fragment(name: str) -> Template:
    """A template spliced into another: its file's final newline is not part of it."""
    return Template(_load(name).removesuffix("\n"))


_PAGE: Final = Template(_load("status.html"))
_CSS: Final = _load("status.css")
_SERVER: Final = _fragment("server.html")
_TILE: Final = _fragment("tile.html")
_CAUSES: Final = _fragment("causes.html")
_CAUSE_ROW: Final = _fragment("cause-row.html")


class Markup(str):
    """Text that is already HTML (a rendered fragment): :func:`_fill` inserts it as it is."""

    __slots__ = ()


def _fill(template: Template, **values: object) -> Markup:
    """The template with every value HTML-escaped, but :class:`Markup`."""
    return Markup(
        template.substitute(
            {k: v if isinstance(v, Markup) else html.escape(str(v)) for k, v in values.items()}
        )
    )


def _server_section(state: ServerState, history: History | None, now: float) -> Markup:
    samples = history.series(state) if history is not None else []
    live = take_sample(state, now)
    if not samples or samples[-1].timestamp < now:
        samples.append(live)
    status = "up" if state.up else "down"
    since = (
        f"{status} since {_clock_time(state.state_since, now)} "
        f"({human_duration(now - state.state_since)})"
    )
    return _fill(
        _SERVER,
        name=state.name,
        status=status,
        since=since,
        facts=" · ".join(_facts(state, now)),
        error=_last_error(state, now),
        tiles=Markup("\n".join(_tiles(samples, live, history, now))),
        causes=_causes_table(state),
    )


def _facts(state: ServerState, now: float) -> list[str]:
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
    if state.features:  # the optional collectors (--collector.*, the server's YAML keys)
        on = [name for name, enabled in state.features.items() if enabled]
        facts.append("collectors on: " + (", ".join(on) if on else "none of the optional ones"))
    failures = sum(state.login_failures.values())
    disconnects = sum(state.disconnects.values())
    errors = sum(state.connection_errors.values())
    facts.append(
        f"{errors} connection errors, {failures} login failures, {disconnects} disconnects "
        "since the exporter started"
    )
    return facts


def _last_error(state: ServerState, now: float) -> Markup:
    """The current error, else the last one with its time (the session recovered since)."""
    if state.last_error:
        return Markup(
            f'<div class="error"><strong>Last error:</strong> {html.escape(state.last_error)}</div>'
        )
    if state.last_problem and state.last_problem_timestamp is not None:
        when = _clock_time(state.last_problem_timestamp, now)
        return Markup(
            f'<div class="error past"><strong>Last error</strong> ({html.escape(when)}, '
            f"{html.escape(human_duration(now - state.last_problem_timestamp))} ago): "
            f"{html.escape(state.last_problem)}</div>"
        )
    return Markup('<p class="none">Last error: none</p>')


def _tiles(
    samples: list[Sample], live: Sample, history: History | None, now: float
) -> list[Markup]:
    """Channels, calls, originates and hangups: the number, a subtitle, a sparkline."""
    span = samples[-1].timestamp - samples[0].timestamp
    over = f"last {human_duration(span)}" if len(samples) > 1 else "no history yet"
    baseline = _window_baseline(samples, now)
    if baseline is not None:
        age = now - baseline.timestamp
        window = f"last {human_duration(age - age % 60 if age >= 60 else age)}"
        originates = live.originates - baseline.originates
        failed = live.originates_failed - baseline.originates_failed
        hangups = live.hangups - baseline.hangups
    else:
        window, originates = "since start", live.originates
        failed, hangups = live.originates_failed, live.hangups
    # The live point closes a partial interval: leave it out of the per-interval charts once
    # there is a full one, or the last point would always dip.
    stored = samples[:-1] if len(samples) > 2 and samples[-1] is live else samples
    per = f"per {_interval_text(history)}, {over}"
    return [
        _tile(
            "Active channels",
            live.channels,
            f"peak {max(s.channels for s in samples)}, {over}",
            sparkline(
                [(s.timestamp, float(s.channels)) for s in samples],
                label=f"active channels, {over}",
                color="#2f6fbf",
            ),
        ),
        _tile(
            "Active calls",
            live.calls,
            f"peak {max(s.calls for s in samples)}, {over}",
            sparkline(
                [(s.timestamp, float(s.calls)) for s in samples],
                label=f"active calls, {over}",
                color="#6a4fb3",
            ),
        ),
        _tile(
            f"Originates, {window}",
            originates,
            f"{failed} failed · {live.originates} since start",
            sparkline(_deltas(stored, "originates"), label=f"originates {per}", color="#137a3a"),
        ),
        _tile(
            f"Hangups, {window}",
            hangups,
            f"{live.hangups} since start",
            sparkline(_deltas(stored, "hangups"), label=f"hangups {per}", color="#b3261e"),
        ),
    ]


def _tile(label: str, value: int, sub: str, chart: str) -> Markup:
    return _fill(_TILE, label=label, value=value, sub=sub, chart=Markup(chart))


def _causes_table(state: ServerState) -> Markup:
    causes = top_hangup_causes(state)
    if not causes:
        return Markup('<p class="none">No hangup seen yet.</p>')
    total = sum(state.hangups.values()) or 1
    best = causes[0][2] or 1
    rows = [
        _fill(
            _CAUSE_ROW,
            cause=cause,
            name=name,
            hint=CAUSE_HINTS.get(cause, ""),
            count=count,
            share=f"{100 * count / total:.0f}",
            width=max(1, round(100 * count / best)),
        )
        for cause, name, count in causes
    ]
    return _fill(_CAUSES, rows=Markup("".join(rows)))


def _interval_text(history: History | None) -> str:
    return f"{history.interval:g} s" if history is not None else "interval"


@dataclass(frozen=True, slots=True)
class Landing:
    """exporter-toolkit's landing page fields (name, description, version, links), which the
    status page carries at its top, and facts about this exporter (its shard...)."""

    name: str = EXPORTER_NAME
    description: str = EXPORTER_DESCRIPTION
    version: str = __version__
    lifecycle: bool = False  # --web.enable-lifecycle: POST /-/reload is served
    facts: tuple[str, ...] = ()

    def links(self, telemetry_path: str) -> list[tuple[str, str, str]]:
        """``(address, text, description)`` of each link, as exporter-toolkit lists them."""
        links = [
            (telemetry_path, "Metrics", "the metrics of every server, for Prometheus"),
            ("/-/healthy", "Health", "200 while the exporter runs"),
            ("/-/ready", "Readiness", "503 until every server has logged in once"),
        ]
        if self.lifecycle:
            links.append(
                (RELOAD_PATH, "Reload", "POST or PUT: re-read the configuration, as SIGHUP")
            )
        return links


def _landing_links(landing: Landing, telemetry_path: str) -> Markup:
    return Markup(
        "\n".join(
            f'<li><a href="{html.escape(address)}">{html.escape(text)}</a>: '
            f"{html.escape(description)}</li>"
            if address != RELOAD_PATH
            else f"<li><code>{address}</code>: {html.escape(description)}</li>"
            for address, text, description in landing.links(telemetry_path)
        )
    )


def render_status_page(
    states: Sequence[ServerState],
    history: History | None = None,
    *,
    telemetry_path: str = "/metrics",
    now: float | None = None,
    refresh: int = REFRESH_SECONDS,
    landing: Landing | None = None,
) -> bytes:
    """The whole page as UTF-8 bytes."""
    landing = landing if landing is not None else Landing()
    now = time.time() if now is None else now
    if history is not None:
        kept = human_duration(history.interval * history.points)
        keeps = f"History: the last {kept}, one point every {history.interval:g} s, in memory."
    else:
        keeps = "No history is kept."
    sections = "\n".join(_server_section(st, history, now) for st in states)
    if not states:
        sections = '<p class="none">No server configured.</p>'
    page = _fill(
        _PAGE,
        refresh=int(refresh),
        up=sum(1 for st in states if st.up),
        total=len(states),
        css=Markup(_CSS),
        version=__version__,
        updated=_clock_time(now, now),
        metrics=telemetry_path,
        name=landing.name,
        description=landing.description,
        links=_landing_links(landing, telemetry_path),
        about=Markup("".join(f"<div>{html.escape(fact)}</div>\n" for fact in landing.facts)),
        sections=Markup(sections),
        keeps=keeps,
    )
    return page.encode("utf-8")
