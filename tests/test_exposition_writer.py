"""Our exposition writer against prometheus_client's ``generate_latest``: the same bytes.

metrics.exposition writes the table families itself (pre-rendered headers and sample-line
templates); prometheus_client's encoders, fed the families that ``build_family`` makes from
the same rows, are the reference. Compared on the state of every real capture (server up and
down, so live rows are skipped too), in every format and name-escaping scheme the Accept
header can pick, and on random rows (Hypothesis): label values and help text with
backslashes, quotes, newlines, ``%`` and any Unicode, values including NaN, infinities, -0.0
and large numbers, histograms.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from helpers import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami_exporter.ami.protocol import AMIParser
from ami_exporter.metrics.collector import AMIRegistry, build_registry
from ami_exporter.metrics.exposition import Exposition, negotiate
from ami_exporter.metrics.table import HistogramRow, Row, TableCollector
from ami_exporter.state.channels import Histogram
from ami_exporter.state.server import ServerState

pytestmark = pytest.mark.unit

ACCEPTS = (
    "",  # Prometheus text 0.0.4
    "text/plain; version=0.0.4",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=underscores",
    "text/plain; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text",
)


def captures() -> list[str]:
    """Every capture of what an Asterisk sent (the .raw side), in every fixture directory."""
    names = []
    for path in sorted(FIXTURES.rglob("*.raw*")):
        if path.suffix in (".raw", ".gz") and ".raw" in path.name:
            names.append(str(path.relative_to(FIXTURES)))
    return names


def assert_same(registry: AMIRegistry, accept: str) -> None:
    fmt = negotiate(accept)
    # The scrape self-metrics left out: prometheus_client's encoders do not make them.
    ours = Exposition(registry, self_metrics=False).encode(fmt).decode("utf-8")
    reference = fmt.fallback(registry).decode("utf-8")
    assert ours == reference


def replayed(name: str) -> ServerState:
    raw = (FIXTURES / name).read_bytes()
    if name.endswith(".gz"):
        import gzip

        raw = gzip.decompress(raw)
    parser = AMIParser(expect_banner=True)
    state = ServerState("pbx-" + name.split("/")[-1][:12])
    for msg in parser.feed(raw):
        if msg.kind == "event":
            state.handle_event(msg)
    return state


@pytest.mark.parametrize("name", captures())
def test_every_capture_encodes_byte_for_byte_as_prometheus_client(name: str) -> None:
    up = replayed(name)
    up.record_session_up()  # live rows exported
    down = replayed(name)  # live rows skipped: the session never came up
    registry = build_registry([up, down, ServerState('odd "name" \\ %s\n')], process=False)
    for accept in ACCEPTS:
        assert_same(registry, accept)


def test_the_capture_list_is_not_empty() -> None:
    names = captures()
    assert len(names) >= 40
    assert any(n.startswith("pjsip/") for n in names)
    assert any(n.startswith("sip18/") for n in names)


# ---------------------------------------------------------------------- random rows

LABEL_NAMES = ("server", "tech", "peer", "status", "a", "zz", "le_x", "reason", "Queue")
texts = st.text(max_size=12) | st.sampled_from(["", "%", "%s", '"', "\\", "\n", "\\n", "é", "山"])
numbers = (
    st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 0.0, -0.0, 1, 4095, 4096, 1e6, 123456789.0, 1e-9])
)


@st.composite
def rows(draw: st.DrawFn) -> tuple[Row | HistogramRow, dict[str, list[Any]]]:
    """A random row and, for each of two servers, the samples its read() returns (a table
    row's labels start with ``server``: TableCollector puts the server's name there)."""
    others = draw(
        st.lists(
            st.sampled_from([n for n in LABEL_NAMES if n != "server"]), unique=True, max_size=4
        )
    )
    labels = ("server", *others)
    kind = draw(st.sampled_from(["counter", "gauge", "histogram"]))
    name = "x_" + draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
    help_ = draw(st.text(max_size=30))
    live = draw(st.booleans())
    width = len(others)
    label_values = st.tuples(*([texts] * width))
    samples: dict[str, list[Any]] = {}
    for server in ("s1", 'we"ird%\n'):
        if kind == "histogram":
            observed = st.lists(st.floats(min_value=0, max_value=1e5), max_size=5)
            drawn = draw(st.lists(st.tuples(label_values, observed), max_size=4))
            hists = []
            for values, seen in drawn:
                hist = Histogram(bounds=(0.5, 1.0, 10.0))
                for v in seen:
                    hist.observe(v)
                hists.append((values, hist))
            samples[server] = hists  # type: ignore[assignment]
        else:
            samples[server] = draw(st.lists(st.tuples(label_values, numbers), max_size=6))
    row: Row | HistogramRow
    if kind == "histogram":
        row = HistogramRow(name, help_, labels, lambda s: samples[s.name], live=live)  # type: ignore[arg-type,return-value]
    else:
        row = Row(name, kind, help_, labels, lambda s: samples[s.name], live)  # type: ignore[arg-type,return-value]
    return row, samples


def registry_of(table: Sequence[Row | HistogramRow], states: Sequence[ServerState]) -> AMIRegistry:
    class Random(TableCollector):
        TABLE: ClassVar[Sequence[Row | HistogramRow]] = tuple(table)

    registry = AMIRegistry()
    registry.register(Random(states))
    return registry


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), min_size=1, max_size=4, unique_by=lambda r: r[0].name), st.booleans())
def test_random_rows_encode_byte_for_byte_as_prometheus_client(
    drawn: list[tuple[Row | HistogramRow, object]], second_up: bool
) -> None:
    first = ServerState("s1")
    first.record_session_up()
    second = ServerState('we"ird%\n')
    if second_up:
        second.record_session_up()
    registry = registry_of([row for row, _ in drawn], [first, second])
    for accept in ACCEPTS:
        assert_same(registry, accept)


def test_special_values_are_written_as_go_writes_them() -> None:
    """Independently of prometheus_client: the Go spellings Prometheus parses."""
    values = [((str(i),), v) for i, v in enumerate([math.inf, -math.inf, math.nan, -0.0, 1e6, 7])]
    row = Row("x_values", "gauge", "v", ("server", "i"), lambda s: values)
    state = ServerState("s")
    body = Exposition(registry_of([row], [state])).encode(negotiate("")).decode()
    lines = [line for line in body.splitlines() if line.startswith("x_values{")]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [
        "+Inf",
        "-Inf",
        "NaN",
        "-0.0",
        "1e+06",
        "7.0",
    ]


async def test_a_big_scrape_gives_the_loop_turns_and_still_matches() -> None:
    """20,000 series encoded with a zero slice budget: the loop gets a turn between slices
    (a ticker task advances meanwhile), and the body is still prometheus_client's."""
    samples = [((f"peer{i:05d}", "reachable"), float(i)) for i in range(20_000)]
    row = Row("x_many", "counter", "many", ("server", "peer", "status"), lambda s: samples)
    state = ServerState("s")
    registry = registry_of([row], [state])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    fmt = negotiate("")
    exposition = Exposition(registry, self_metrics=False)
    body = await exposition.encode_async(fmt, thread=False, budget=0.0)
    task.cancel()
    assert ticks >= 20_000 // 256
    assert body == fmt.fallback(registry)


async def test_a_collector_meeting_state_changing_under_it_is_done_again_on_the_loop() -> None:
    """Off the loop, a read that iterates a live dict can meet it changing (RuntimeError):
    that collector is rerun on the loop, in its place, and the scrape is still whole."""
    import threading

    loop_thread = threading.current_thread()
    calls: list[bool] = []

    def read(st: ServerState) -> list[tuple[tuple[str, ...], float]]:
        on_loop = threading.current_thread() is loop_thread
        calls.append(on_loop)
        if not on_loop:
            raise RuntimeError("dictionary changed size during iteration")
        return [(("a",), 1.0)]

    first = Row("x_first", "gauge", "first", ("server",), lambda s: [((), 2.0)])
    flaky = Row("x_flaky", "gauge", "flaky", ("server", "k"), read)
    state = ServerState("s")
    registry = registry_of([first], [state])

    class Flaky(TableCollector):
        TABLE: ClassVar[Sequence[Row | HistogramRow]] = (flaky,)

    class Last(TableCollector):
        TABLE: ClassVar[Sequence[Row | HistogramRow]] = (
            Row("x_last", "gauge", "last", ("server",), lambda s: [((), 3.0)]),
        )

    registry.register(Flaky([state]))
    registry.register(Last([state]))
    fmt = negotiate("")
    body = await Exposition(registry, self_metrics=False).encode_async(fmt)
    assert calls == [False, True]
    assert body == fmt.fallback(registry)
    assert body.index(b"x_first") < body.index(b"x_flaky") < body.index(b"x_last")


async def test_the_first_scrape_goes_to_the_scrape_thread_and_a_small_one_then_stays() -> None:
    """The first scrape's cost is unknown: it runs off the loop. A small registry's next
    scrapes cost far under THREAD_ABOVE, so they run on the loop (no thread hand-off)."""
    import threading

    from ami_exporter.metrics.exposition import THREAD_ABOVE

    loop_thread = threading.current_thread()
    where: list[bool] = []

    def read(st: ServerState) -> list[tuple[tuple[str, ...], float]]:
        where.append(threading.current_thread() is loop_thread)
        return [((), 1.0)]

    registry = registry_of([Row("x_where", "gauge", "w", ("server",), read)], [ServerState("s")])
    exposition = Exposition(registry)
    fmt = negotiate("")
    for _ in range(3):
        await exposition.encode_async(fmt)
    assert where == [False, True, True]
    assert exposition.last_cost < THREAD_ABOVE
