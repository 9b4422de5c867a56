"""Metric tables: each family declared once, as data, and built from plain state at scrape time.

A :class:`Row` names a family (name, type, help, label names) and how to read its samples from
one :class:`~ami_exporter.state.server.ServerState`: the label values after ``server`` and the
value. A :class:`TableCollector` turns a table into fresh families at every scrape, one sample
list per server, so a label set disappears as soon as the state drops it. Reading never
changes the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ami_exporter.state.channels import Histogram
from ami_exporter.state.server import ServerState

Labels = tuple[str, ...]
Samples = Iterable[tuple[Labels, float]]  # label values after `server`, and the value
K = TypeVar("K", bound=Labels)


@dataclass(frozen=True, slots=True)
class Row:
    """A counter or gauge family: its declaration and how to read one server's samples."""

    name: str  # a counter's name without `_total`: prometheus_client appends it
    type: Literal["counter", "gauge"]
    help: str
    labels: Labels  # `server` first where the family is per server
    read: Callable[[ServerState], Samples]
    # Describes live state (channels up now, peers, queue gauges): not exported for a server
    # whose session is down, so a dead session shows no stale picture. Counters stay.
    live: bool = False

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        kind = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        return kind(self.name, self.help, labels=self.labels)


@dataclass(frozen=True, slots=True)
class HistogramRow:
    """A histogram family: ``read`` gives the label values after ``server`` and a histogram."""

    name: str
    help: str
    labels: Labels
    read: Callable[[ServerState], Iterable[tuple[Labels, Histogram]]]
    type: Literal["histogram"] = "histogram"
    live: bool = False  # as Row.live

    def family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.help, labels=self.labels)


def counter(name: str, help_: str, labels: Labels, read: Callable[[ServerState], Samples]) -> Row:
    return Row(name, "counter", help_, labels, read)


def gauge(
    name: str,
    help_: str,
    labels: Labels,
    read: Callable[[ServerState], Samples],
    *,
    live: bool = False,
) -> Row:
    """A gauge; ``live=True`` for one describing live state (see :attr:`Row.live`)."""
    return Row(name, "gauge", help_, labels, read, live)


def exported(row: Row | HistogramRow, states: Sequence[ServerState]) -> Sequence[ServerState]:
    """The servers whose samples of ``row`` are exported now (live rows: sessions up)."""
    return [st for st in states if st.up] if row.live else states


# ---------------------------------------------------------------------- sample readers


def one(value: float | None) -> Samples:
    """A family with the server label only: one sample, none while the value is unknown."""
    return () if value is None else (((), value),)


def by_label(counts: Mapping[str, float]) -> Samples:
    """A dict keyed by one label value."""
    return [((key,), n) for key, n in list(counts.items())]


def by_labels(counts: Mapping[K, float]) -> Samples:
    """A dict keyed by a tuple of label values, in the family's label order."""
    return list(counts.items())


def clean(value: str) -> str:
    """Label values must be valid UTF-8; AMI text may carry undecodable bytes."""
    if value.isascii():  # O(1) in CPython: nearly every name, and never a lone surrogate
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------- collectors


class TableCollector(Collector):
    """Builds the families of :attr:`TABLE` from the servers in ``states`` at each scrape."""

    TABLE: ClassVar[Sequence[Row | HistogramRow]] = ()
    # The name collect[] and the scrape self-metrics use; empty: the module's name.
    COLLECTOR: ClassVar[str] = ""

    def __init__(self, states: Sequence[ServerState]) -> None:
        # Kept, not copied: a reload (SIGHUP) replaces the servers in place (cli.fleet).
        self._states = states

    @property
    def states(self) -> Sequence[ServerState]:
        """The servers read at each scrape (metrics.exposition writes the rows itself)."""
        return self._states

    def describe(self) -> list[Metric]:
        # Without describe(), registering would call collect() once at start-up; the metric
        # set is dynamic, so declare nothing up front.
        return []

    def collect(self) -> Iterator[Metric]:
        for row in self.TABLE:
            yield build_family(row, self._states)


def build_family(row: Row | HistogramRow, states: Sequence[ServerState]) -> Metric:
    """One family with the samples of every server (``server`` is the first label)."""
    states = exported(row, states)
    if isinstance(row, HistogramRow):
        histograms = row.family()
        for st in states:
            for values, hist in row.read(st):
                histograms.add_metric([st.name, *values], hist.cumulative(), hist.total)
        return histograms
    family = row.family()
    add = family.add_metric
    for st in states:
        server = st.name
        for values, value in row.read(st):
            add([server, *values], value)
    return family
