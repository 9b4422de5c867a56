"""Encoding the registry for one scrape: our own writer for the table families, in slices.

Content negotiation (Prometheus text 0.0.4 or 1.0.0, OpenMetrics 1.0.0, and the name
escaping scheme, from the ``Accept`` header) is prometheus_client's own ``choose_encoder``.
The bytes are prometheus_client's too, but the table families (:mod:`.table`) are written by
:class:`Writer` straight from each row's samples: no ``Metric``/``Sample`` objects, no label
dicts to sort, the family headers and the sample-line templates (label names in sorted
order, the server's label value pre-escaped) made once per family and format. It writes a
series in about a tenth of ``generate_latest``'s time, byte for byte the same text
(``tests/test_exposition_writer.py`` compares the two on every capture and on random label
values). Other collectors (the process metrics, build info) go through prometheus_client.

A scrape is a sequence of steps (:meth:`Exposition.steps`): each reads one row of one
server's state and writes its lines, yielding every few hundred series.
:meth:`Exposition.encode_async` runs a big scrape (the last one cost more than
:data:`THREAD_ABOVE` of CPU) in a scrape thread of its own, where the interpreter hands the GIL
back to the loop every :data:`SWITCH_INTERVAL`, so even one family of 80k series read at once
never holds the loop (Asterisk logs off a session whose socket stays full for 100 ms); a small
one on the loop, giving it a turn whenever a slice has run :data:`SLICE_SECONDS`. Rows read
state through snapshots (``list(d.items())``, atomic under the GIL); a collector whose read
meets a dict changing under it off the loop is done again on the loop. Each family is read
whole at one instant; families of one scrape may be read some milliseconds apart, as with any
exporter whose collectors run one after another. No automatic garbage collection runs during
a scrape (:func:`_gc_paused`). ``benchmarks/scrape.py`` (scenario 6) measures each option.

Around each collector of the registry the scrape measures its time and catches its errors
(:mod:`.self`): a collector that raises is left out of that scrape (success 0, logged with a
rate limit) and the rest is still served. ``collect[]`` and ``name[]`` query parameters
select what a scrape contains (:func:`parse_selection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl

from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from prometheus_client.validation import _is_valid_legacy_metric_name

from ami_exporter.metrics.self import COLLECTOR_DURATION, COLLECTOR_SUCCESS, CollectorErrors
from ami_exporter.metrics.table import HistogramRow, Row, TableCollector, exported

__all__ = [
    "CollectorRegistry",
    "Exposition",
    "Format",
    "Selection",
    "UnknownCollectorError",
    "collector_name",
    "encode",
    "in_scrape_thread",
    "negotiate",
    "parse_selection",
]

log = logging.getLogger("ami_exporter.metrics")

SLICE_SECONDS: Final = 0.002  # longest run of encoding before the loop gets a turn
THREAD_ABOVE: Final = 0.005  # a scrape that cost more than this is encoded in a thread
STEP_SAMPLES: Final = 256  # samples written between two checks of the slice's time
MAX_SELECTED: Final = 256  # collect[] / name[] values looked at in one query
MAX_ESCAPED: Final = 65_536  # escaped label values kept between scrapes
_go: Final = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus_client
_COMMON: Final = tuple(_go(n) for n in range(4096))  # int-valued samples


@dataclass(frozen=True, slots=True)
class Format:
    """The negotiated exposition format of one scrape."""

    openmetrics: bool
    escaping: str
    content_type: str
    fallback: Callable[[Any], bytes]  # prometheus_client's encoder for this Accept

    @property
    def key(self) -> tuple[bool, str]:
        return (self.openmetrics, self.escaping)


def negotiate(accept: str) -> Format:
    """The format prometheus_client would answer an ``Accept`` header with."""
    encoder, content_type = choose_encoder(accept)
    escaping = om.UNDERSCORES
    if isinstance(encoder, partial):
        escaping = str(encoder.keywords.get("escaping", om.UNDERSCORES))
    openmetrics = content_type.startswith("application/openmetrics-text")
    return Format(openmetrics, escaping, content_type, encoder)


@dataclass(frozen=True, slots=True)
class Selection:
    """What one scrape contains: ``None`` is everything."""

    collectors: frozenset[str] | None = None  # collect[]: these collectors only
    names: frozenset[str] | None = None  # name[]: families named so (or one of their samples)

    @property
    def key(self) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """A hashable, order-free key: scrapes with the same key share one encoding."""
        c = None if self.collectors is None else tuple(sorted(self.collectors))
        n = None if self.names is None else tuple(sorted(self.names))
        return (c, n)

    def wants_collector(self, name: str | None) -> bool:
        # The exporter's own metrics (process, build, reload: no collector name) always go,
        # as node_exporter keeps its go_/process_ metrics under collect[].
        return self.collectors is None or name is None or name in self.collectors

    def wants_family(self, family: str, samples: Iterable[str]) -> bool:
        if self.names is None or family in self.names:
            return True
        return any(s in self.names for s in samples)


EVERYTHING: Final = Selection()


class UnknownCollectorError(ValueError):
    """A ``collect[]`` value that names no collector (the web layer answers 400)."""


def parse_selection(query: str, known: Collection[str]) -> Selection:
    """``collect[]=<collector>`` (repeatable, node_exporter's) and ``name[]=<family>``
    (client_python's) from a query string; other parameters are ignored."""
    collectors: set[str] = set()
    names: set[str] = set()
    for key, value in parse_qsl(query, keep_blank_values=True)[:MAX_SELECTED]:
        if key == "collect[]":
            collectors.add(value)
        elif key == "name[]":
            names.add(value)
    unknown = sorted(collectors - set(known))
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        raise UnknownCollectorError(
            f"unknown collector {shown} in collect[]; known collectors: " + ", ".join(sorted(known))
        )
    return Selection(frozenset(collectors) or None, frozenset(names) or None)


def collector_name(collector: object) -> str | None:
    """The name ``collect[]`` and the self-metrics use: a table collector's module name
    (``health``, ``peers``...) unless its class sets ``COLLECTOR``; ``None`` for the rest."""
    if not isinstance(collector, TableCollector):
        return None
    kind = type(collector)
    explicit: str = getattr(kind, "COLLECTOR", "")
    return explicit or kind.__module__.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------- the writer


def _escape_value(value: str) -> str:
    """A label value as prometheus_client escapes it (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _number(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float formatting)."""
    if type(value) is int:
        if 0 <= value < len(_COMMON):  # counters: no float repr needed
            return _COMMON[value]
        value = float(value)
    if -math.inf < value < 1e6:  # false for NaN; Go's exponent form starts at 1e6
        return repr(float(value))
    return _go(value)


class _Escaped(dict[str, str]):
    """Label values already escaped: a hit is a dict lookup in C, no Python call."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = _escape_value(value)
        return escaped


@dataclass(frozen=True, slots=True)
class _Shape:
    """One family in one format: its header and how to write a sample line."""

    header: str
    sample: str  # the sample name as written (counters: with _total)
    names: tuple[str, ...]  # escaped label names, sorted as prometheus_client sorts them
    order: tuple[int, ...]  # for each: its index in the row's label values, -1 the server
    samples: tuple[str, ...]  # every sample name of the family (for name[])
    bucket_names: tuple[str, ...] = ()  # histograms: the same with `le` (index -2) sorted in
    bucket_order: tuple[int, ...] = ()
    written: tuple[str, ...] = ()  # the sample names as written, as ``samples``

    @property
    def fill(self) -> tuple[int, ...]:
        """The label values a sample line fills in (the server's is in the template)."""
        return tuple(i for i in self.order if i >= 0)


class Writer:
    """Writes table families as prometheus_client would, from each row's samples."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[Row | HistogramRow, tuple[bool, str]], _Shape | None] = {}
        self._escaped = _Escaped()

    def shape(self, row: Row | HistogramRow, fmt: Format) -> _Shape | None:
        """The family's shape, or ``None`` where only prometheus_client can write it (a name
        outside the legacy character set): the caller then falls back."""
        key = (row, fmt.key)
        try:
            return self._shapes[key]
        except KeyError:
            shape = self._shapes[key] = _make_shape(row, fmt)
            return shape

    def histogram_lines(
        self,
        shape: _Shape,
        server: str | None,
        samples: Sequence[tuple[Sequence[str], Any]],
        out: list[str],
    ) -> None:
        """Histogram samples: ``_bucket`` lines (``le`` among the labels), ``_count``, ``_sum``."""
        bucket, count_name, sum_name = shape.written
        esc = self._escaped
        srv = esc[server or ""]
        for values, hist in samples:
            cumulative = hist.cumulative()  # read together with the sum: one consistent sample
            total = hist.total
            # The bucket line as a %-template: `le` and the count are filled per bucket.
            parts = []
            for name, index in zip(shape.bucket_names, shape.bucket_order, strict=True):
                if index == -2:
                    parts.append(f'{name}="%s"')
                else:
                    value = srv if index == -1 else esc[values[index]]
                    parts.append(f'{name}="{value.replace("%", "%%")}"')
            template = f"{bucket}{{{','.join(parts)}}} %s\n"
            for le, count in cumulative:
                out.append(template % (le, _number(count)))
            if float(cumulative[0][0]) >= 0 and total is not None:
                plain = ",".join(
                    f'{name}="{srv if index == -1 else esc[values[index]]}"'
                    for name, index in zip(shape.names, shape.order, strict=True)
                )
                braces = f"{{{plain}}}" if plain else ""
                out.append(f"{count_name}{braces} {_number(cumulative[-1][1])}\n")
                out.append(f"{sum_name}{braces} {_number(total)}\n")

    def lines(
        self,
        shape: _Shape,
        server: str | None,
        samples: Sequence[tuple[Sequence[str], float]],
        out: list[str],
    ) -> Iterator[None]:
        """Counter or gauge samples, one line each; yields every :data:`STEP_SAMPLES`."""
        if len(self._escaped) > MAX_ESCAPED:
            self._escaped.clear()  # bounded: label values come and go with the state
        esc = self._escaped
        append = out.append
        number = _number
        fill = shape.fill
        width = len(fill)
        if not fill:
            head = _template(shape, server, fill=False)
            for start in range(0, len(samples), STEP_SAMPLES):
                for _, value in samples[start : start + STEP_SAMPLES]:
                    append(head + number(value) + "\n")
                yield
            return
        template = _template(shape, server, fill=True)
        i, j, k = (*fill, 0, 0)[:3]
        pick: Callable[[Sequence[str]], Any] = itemgetter(*fill)
        for start in range(0, len(samples), STEP_SAMPLES):
            chunk = samples[start : start + STEP_SAMPLES]
            # Unrolled for the usual widths: no per-sample generator or unpacking.
            if width == 1:
                for values, value in chunk:
                    append(template % (esc[values[i]], number(value)))
            elif width == 2:
                for values, value in chunk:
                    append(template % (esc[values[i]], esc[values[j]], number(value)))
            elif width == 3:
                for values, value in chunk:
                    line = (esc[values[i]], esc[values[j]], esc[values[k]], number(value))
                    append(template % line)
            else:
                for values, value in chunk:
                    append(template % (*map(esc.__getitem__, pick(values)), number(value)))
            yield


def _template(shape: _Shape, server: str | None, *, fill: bool) -> str:
    """A sample line with the server's label value in: with ``fill``, a %-template with
    ``%s`` for each other label value and for the value; else just the head of the line."""
    srv = _escape_value(server or "")
    if fill:
        srv = srv.replace("%", "%%")
    parts = [
        f'{n}="{srv}"' if i < 0 else f'{n}="%s"'
        for n, i in zip(shape.names, shape.order, strict=True)
    ]
    head = f"{shape.sample}{{{','.join(parts)}}} " if parts else f"{shape.sample} "
    return head + "%s\n" if fill else head


def _make_shape(row: Row | HistogramRow, fmt: Format) -> _Shape | None:
    counter = row.type == "counter"
    sample = row.name + "_total" if counter else row.name
    histogram = isinstance(row, HistogramRow)
    samples: tuple[str, ...] = (sample,)
    if histogram:
        samples = (f"{row.name}_bucket", f"{row.name}_count", f"{row.name}_sum")
    if not all(_is_valid_legacy_metric_name(s) for s in (row.name, *samples)):
        return None
    escaping = fmt.escaping
    if fmt.openmetrics:
        head = om.escape_metric_name(row.name, escaping)
        help_ = om._escape(row.help, om.ALLOWUTF8, om._is_legacy_labelname_rune)
        written = tuple(om._escape(s, escaping, om._is_legacy_labelname_rune) for s in samples)
    else:
        head = om.escape_metric_name(sample, escaping)
        help_ = row.help.replace("\\", r"\\").replace("\n", r"\n")
        written = tuple(om.escape_metric_name(s, escaping) for s in samples)
    header = f"# HELP {head} {help_}\n# TYPE {head} {row.type}\n"
    # Label values follow `server` in the row's samples: index -1 is the server.
    per_server = bool(row.labels) and row.labels[0] == "server"
    indexed = sorted((name, i - 1 if per_server else i) for i, name in enumerate(row.labels))
    with_le = sorted([*indexed, ("le", -2)]) if histogram else []

    def esc(pairs: list[tuple[str, int]]) -> tuple[str, ...]:
        return tuple(om.escape_label_name(n, escaping) for n, _ in pairs)

    return _Shape(
        header,
        written[0],
        esc(indexed),
        tuple(i for _, i in indexed),
        samples,
        esc(with_le),
        tuple(i for _, i in with_le),
        written,
    )


# ---------------------------------------------------------------------- one scrape


class _Fixed:
    """Metrics already collected, as the registry-like object prometheus_client encodes."""

    def __init__(self, metrics: list[Any]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Any]:
        return self._metrics


SWITCH_INTERVAL: Final = 0.0005  # seconds; the interpreter's default is 0.005
_gc_lock = threading.Lock()
_gc_pauses = [0, False]  # scrapes under way, whether the collector was on before the first
_switching = [0, 0.005]  # scrapes in worker threads, the switch interval before the first


@contextlib.contextmanager
def _gc_paused(*, switch: bool = False) -> Iterator[None]:
    """No automatic garbage collection while scrapes are under way (nested: until the last
    ends). A family's samples are tens of thousands of fresh tuples alive while it is
    written; every collection they trigger walks them all, and a full one the whole heap:
    measured, most of a 90k-series scrape's time and the loop's longest stalls (16 ms per
    young collection, 55 ms for a full one). Reference counting frees them as each family is
    written, so the collection after the scrape finds little; a scrape lasts well under a
    second, so cyclic garbage waits that long at most.

    With ``switch`` (a scrape in a worker thread) the interpreter's switch interval is
    :data:`SWITCH_INTERVAL` meanwhile: each time the loop thread comes back from a system
    call (select, recv, send) it waits for the GIL at most that long, not 5 ms."""
    with _gc_lock:
        if _gc_pauses[0] == 0:
            _gc_pauses[1] = gc.isenabled()
            gc.disable()
        _gc_pauses[0] += 1
        if switch:
            if _switching[0] == 0:
                _switching[1] = sys.getswitchinterval()
                sys.setswitchinterval(SWITCH_INTERVAL)
            _switching[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses[0] -= 1
            if _gc_pauses[0] == 0 and _gc_pauses[1]:
                gc.enable()
            if switch:
                _switching[0] -= 1
                if _switching[0] == 0:
                    sys.setswitchinterval(_switching[1])


class _Body:
    """A scrape body being written: lines, flushed to UTF-8 pieces between slices."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.lines: list[str] = []  # the writers hold its append: cleared, never replaced

    def flush(self) -> None:
        if self.lines:
            self.pieces.append("".join(self.lines).encode("utf-8"))
            self.lines.clear()

    def mark(self) -> int:
        self.flush()
        return len(self.pieces)

    def rollback(self, mark: int) -> None:
        self.lines.clear()
        del self.pieces[mark:]

    def bytes(self) -> bytes:
        self.flush()
        return b"".join(self.pieces)


class Exposition:
    """Encodes one registry for scrapes, with per-collector self-metrics (:mod:`.self`)."""

    def __init__(self, registry: CollectorRegistry, *, self_metrics: bool = True) -> None:
        self.registry = registry
        self.self_metrics = self_metrics  # off only to compare with prometheus_client
        self.writer = Writer()
        self.errors = CollectorErrors(log)
        # Time the last whole scrape spent in the collectors: unknown at first, so the first
        # scrape goes to a thread (it may be the biggest).
        self.last_cost = math.inf

    def collectors(self) -> list[Collector]:
        # An AMIRegistry (metrics.collector) keeps its collectors in order; a plain one
        # (tests, ad-hoc) is encoded by prometheus_client whole.
        found: list[Collector] | None = getattr(self.registry, "collectors", None)
        return list(found) if found is not None else []

    def collector_names(self) -> list[str]:
        names = (collector_name(c) for c in self.collectors())
        return [n for n in names if n is not None]

    def encode(self, fmt: Format, selection: Selection = EVERYTHING) -> bytes:
        """The whole body at once, on the calling thread (tests, benchmarks)."""
        body = _Body()
        with _gc_paused():
            timings = _drain(self.steps(fmt, selection, body))
        self._finish(fmt, selection, timings, body)
        return body.bytes()

    async def encode_async(
        self,
        fmt: Format,
        selection: Selection = EVERYTHING,
        *,
        thread: bool | None = None,
        budget: float = SLICE_SECONDS,
    ) -> bytes:
        """The body without stalling the event loop.

        A big scrape (the last one of this exposition cost more than :data:`THREAD_ABOVE`,
        or ``thread=True``) runs in a worker thread: the interpreter hands the GIL back to
        the loop every switch interval, however long one family's read or write takes. Rows
        read state through snapshots (``list(d.items())``, atomic under the GIL); a
        collector whose read still meets a dict changing under it (``RuntimeError``) is done
        again on the loop, in slices. A small one (or ``thread=False``) runs on the loop in
        slices of ``budget`` seconds: no thread hand-off to wait for (a family's read is then
        one slice, however big).
        """
        body = _Body()
        deferred: list[tuple[int, Collector, str | None]] = []
        if thread is None:
            thread = self.last_cost > THREAD_ABOVE
        if thread:

            def work() -> tuple[dict[str, tuple[float, bool]], float]:
                cpu = time.thread_time()  # not the GIL waits: what the scrape itself costs
                with _gc_paused(switch=True):
                    done = _drain(self.steps(fmt, selection, body, deferred))
                return done, time.thread_time() - cpu

            timings, cost = await in_scrape_thread(work)
        else:
            timings = await _sliced(self.steps(fmt, selection, body), body, budget)
            cost = sum(spent for spent, _ in timings.values())
        for mark, collector, name in reversed(deferred):
            again = _Body()
            spent_ok = await _sliced(
                self._run(collector, name, fmt, selection, again), again, budget
            )
            again.flush()
            body.pieces[mark:mark] = again.pieces
            if name is not None and spent_ok is not None:
                timings[name] = spent_ok
        self._finish(fmt, selection, timings, body)
        if selection == EVERYTHING:
            self.last_cost = cost
        if thread:
            return await in_scrape_thread(body.bytes)  # joining megabytes: off the loop too
        return body.bytes()

    def steps(
        self,
        fmt: Format,
        selection: Selection,
        body: _Body,
        deferred: list[tuple[int, Collector, str | None]] | None = None,
    ) -> Generator[None, None, dict[str, tuple[float, bool]]]:
        """Write the collectors' families into ``body``, yielding between slices of work;
        gives each named collector's (time, success). With ``deferred``, a collector that
        meets state changing under it is left for the caller to run again (on the loop)."""
        timings: dict[str, tuple[float, bool]] = {}
        if getattr(self.registry, "collectors", None) is None:
            registry: Any = self.registry
            if selection.names is not None:
                registry = self.registry.restricted_registry(sorted(selection.names))
            body.lines.append(fmt.fallback(registry).decode("utf-8").removesuffix("# EOF\n"))
            return timings
        for collector in self.collectors():
            name = collector_name(collector)
            if not selection.wants_collector(name):
                continue
            if name is not None:
                timings[name] = (0.0, True)  # the collectors' order, for the self-metrics
            mark = body.mark()
            try:
                result = yield from self._run(collector, name, fmt, selection, body, deferred)
            except RuntimeError:  # only with `deferred`: see _run
                body.rollback(mark)
                assert deferred is not None
                deferred.append((mark, collector, name))
                continue
            if name is not None and result is not None:
                timings[name] = result
        return timings

    def _run(
        self,
        collector: Collector,
        name: str | None,
        fmt: Format,
        selection: Selection,
        body: _Body,
        deferred: list[tuple[int, Collector, str | None]] | None = None,
    ) -> Generator[None, None, tuple[float, bool] | None]:
        """One collector, step by step: its time (steps only) and whether it succeeded. A
        collector that raises leaves nothing of its own in the body."""
        mark = body.mark()
        spent = 0.0
        clock = time.perf_counter
        work = self._collector_steps(collector, fmt, selection, body.lines)
        while True:
            t0 = clock()
            try:
                done = next(work, True)
            except RuntimeError as exc:
                if deferred is not None and "changed size during iteration" in str(exc):
                    raise  # read off the loop while the loop changed it: again, on the loop
                spent += clock() - t0
                self.errors.failed(name or type(collector).__name__)
                body.rollback(mark)
                return spent, False
            except Exception:  # a bug in one collector: the rest of the scrape still goes
                spent += clock() - t0
                self.errors.failed(name or type(collector).__name__)
                body.rollback(mark)
                return spent, False
            spent += clock() - t0
            if done is True:
                if name is not None:
                    self.errors.succeeded(name)
                return spent, True
            yield

    def _finish(
        self,
        fmt: Format,
        selection: Selection,
        timings: dict[str, tuple[float, bool]],
        body: _Body,
    ) -> None:
        if self.self_metrics and getattr(self.registry, "collectors", None) is not None:
            self._self_metrics(fmt, selection, timings, body.lines)
        if fmt.openmetrics:
            body.lines.append("# EOF\n")

    def _collector_steps(
        self, collector: Collector, fmt: Format, selection: Selection, out: list[str]
    ) -> Iterator[None]:
        if not isinstance(collector, TableCollector):
            metrics = [
                m
                for m in collector.collect()
                if selection.wants_family(m.name, {s.name for s in m.samples})
            ]
            text = fmt.fallback(_Fixed(metrics)).decode("utf-8")
            out.append(text.removesuffix("# EOF\n") if fmt.openmetrics else text)
            return
        states = collector.states
        for row in collector.TABLE:
            shape = self.writer.shape(row, fmt)
            if shape is not None and not selection.wants_family(row.name, shape.samples):
                continue
            yield from self._row_steps(row, shape, states, fmt, out)

    def _row_steps(
        self,
        row: Row | HistogramRow,
        shape: _Shape | None,
        states: Sequence[Any],
        fmt: Format,
        out: list[str],
    ) -> Iterator[None]:
        if shape is None:  # a name only prometheus_client can write
            from ami_exporter.metrics.table import build_family

            out.append(fmt.fallback(_Fixed([build_family(row, states)])).decode("utf-8"))
            if fmt.openmetrics:
                out[-1] = out[-1].removesuffix("# EOF\n")
            return
        out.append(shape.header)
        per_server = -1 in shape.order
        for st in exported(row, states):
            samples: Sequence[Any] = row.read(st)  # type: ignore[assignment]
            if not isinstance(samples, list | tuple):
                samples = list(samples)  # a generator must not run across slices
            server = st.name if per_server else None
            if isinstance(row, HistogramRow):
                self.writer.histogram_lines(shape, server, samples, out)
                yield
            else:
                yield from self.writer.lines(shape, server, samples, out)

    def _self_metrics(
        self,
        fmt: Format,
        selection: Selection,
        timings: dict[str, tuple[float, bool]],
        out: list[str],
    ) -> None:
        for row, samples in (
            (COLLECTOR_DURATION, [((n,), spent) for n, (spent, _) in timings.items()]),
            (COLLECTOR_SUCCESS, [((n,), 1.0 if ok else 0.0) for n, (_, ok) in timings.items()]),
        ):
            shape = self.writer.shape(row, fmt)
            if shape is None or not selection.wants_family(row.name, shape.samples):
                continue
            out.append(shape.header)
            for _ in self.writer.lines(shape, None, samples, out):
                pass


T = TypeVar("T")
SCRAPE_THREADS: Final = 2
_executor: list[ThreadPoolExecutor] = []


async def in_scrape_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in the scrape threads: a pool of our own, so scrapes never queue behind
    whatever else uses the loop's default executor (and never take all of it)."""
    if not _executor:
        _executor.append(ThreadPoolExecutor(SCRAPE_THREADS, thread_name_prefix="scrape"))
    return await asyncio.get_running_loop().run_in_executor(_executor[0], partial(fn, *args))


def _drain(steps: Generator[None, None, T]) -> T:
    """Run steps to the end, at once."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)


async def _sliced(steps: Generator[None, None, T], body: _Body, budget: float) -> T:
    """Run steps on the loop, giving it a turn whenever a slice has run ``budget`` seconds."""
    clock = time.perf_counter
    deadline = clock() + budget
    with _gc_paused():
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return cast(T, done.value)
            if clock() >= deadline:
                body.flush()  # the UTF-8 encoding of the lines, slice by slice too
                await asyncio.sleep(0)
                deadline = clock() + budget


def encode(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body and its content type for an ``Accept`` header (all at once)."""
    fmt = negotiate(accept)
    return Exposition(registry).encode(fmt), fmt.content_type
