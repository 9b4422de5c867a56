"""The collectors of every ``asterisk_*`` family, and the registry /metrics serves.

One collector per concern, each a table of families (see :mod:`ami_exporter.metrics.table`):

* :mod:`~ami_exporter.metrics.health`: the AMI session (up, connects, errors, ping, events);
* :mod:`~ami_exporter.metrics.core`: Asterisk's identity, start and reload times, restarts;
* :mod:`~ami_exporter.metrics.channels`: live channels and calls, channels created, resyncs;
* :mod:`~ami_exporter.metrics.outcomes`: hangups, originates, dials, channel durations;
* :mod:`~ami_exporter.metrics.security`, :mod:`~ami_exporter.metrics.peers`,
  :mod:`~ami_exporter.metrics.queues`, :mod:`~ami_exporter.metrics.vicidial`;
* :mod:`~ami_exporter.metrics.trunks`, :mod:`~ami_exporter.metrics.rtp`: per-trunk calls and
  RTP quality;
* :mod:`~ami_exporter.metrics.build`: the exporter's build information;
* :mod:`~ami_exporter.metrics.reload`: the outcome of the last configuration reload.

Nothing here is updated by events and nothing here writes state: each scrape reads
:class:`~ami_exporter.state.server.ServerState` row by row. :class:`AMIRegistry` keeps its
collectors in order so that :mod:`ami_exporter.metrics.exposition` can write the table
families itself, in slices, with per-collector self-metrics (:mod:`ami_exporter.metrics.self`);
it is still a prometheus_client registry (``generate_latest`` and ``get_sample_value`` work).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ami_exporter.metrics.build import BuildInfoCollector
from ami_exporter.metrics.channels import ChannelsCollector
from ami_exporter.metrics.core import CoreCollector
from ami_exporter.metrics.health import HealthCollector
from ami_exporter.metrics.outcomes import OutcomesCollector
from ami_exporter.metrics.peers import PeersCollector
from ami_exporter.metrics.queues import QueuesCollector
from ami_exporter.metrics.reload import ReloadCollector, ReloadStatus
from ami_exporter.metrics.rtp import RtpCollector
from ami_exporter.metrics.security import SecurityCollector
from ami_exporter.metrics.table import TableCollector
from ami_exporter.metrics.trunks import TrunksCollector
from ami_exporter.metrics.vicidial import VicidialCollector
from ami_exporter.state.server import ServerState

SERVER_COLLECTORS: Final[tuple[type[TableCollector], ...]] = (
    HealthCollector,
    CoreCollector,
    ChannelsCollector,
    OutcomesCollector,
    SecurityCollector,
    PeersCollector,
    QueuesCollector,
    VicidialCollector,
    TrunksCollector,
    RtpCollector,
)


def collectors(states: Sequence[ServerState]) -> list[Collector]:
    """Every collector of ``asterisk_*`` families, for the servers in ``states`` (kept, not
    copied: a reload replaces them in place)."""
    return [*(kind(states) for kind in SERVER_COLLECTORS), BuildInfoCollector()]


class AMICollector(Collector):
    """All the ``asterisk_*`` families in one collector (for tests and ad-hoc registries)."""

    def __init__(self, states: Sequence[ServerState]) -> None:
        self._collectors = collectors(states)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


class AMIRegistry(CollectorRegistry):
    """A prometheus_client registry that keeps its collectors in registration order."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self.collectors.remove(collector)


def build_registry(
    states: Sequence[ServerState],
    reload_status: ReloadStatus | None = None,
    *,
    process: bool = True,
) -> AMIRegistry:
    """A registry with every ``asterisk_*`` collector plus the standard process metrics
    (unless ``process`` is false: tests that compare two encodings) and the reload gauges,
    given the status the exporter keeps."""
    registry = AMIRegistry()
    for collector in collectors(states):
        registry.register(collector)
    if reload_status is not None:
        registry.register(ReloadCollector(reload_status))
    if process:
        ProcessCollector(registry=registry)
    return registry
