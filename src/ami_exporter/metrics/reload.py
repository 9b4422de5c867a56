"""The exporter's configuration reloads (SIGHUP): did the last one succeed, and when one did.

Named as Prometheus names its own (``prometheus_config_last_reload_successful`` ...), so the
same alert works: ``ami_exporter_config_last_reload_successful == 0`` means the files on disk
are not what runs. Loading the configuration at start counts as the first successful load.
Not per server: fed by :class:`ReloadStatus`, which the CLI updates, not by any AMI state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ami_exporter.metrics.table import gauge

__all__ = ["ReloadCollector", "ReloadStatus"]

RELOAD_SUCCESSFUL: Final = gauge(
    "ami_exporter_config_last_reload_successful",
    "Whether the last configuration reload (SIGHUP) succeeded: 1 yes (and at start), 0 no.",
    (),
    lambda st: (),  # not per server: see ReloadCollector
)
RELOAD_SUCCESS_TIMESTAMP: Final = gauge(
    "ami_exporter_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful configuration load (at start or at a reload).",
    (),
    lambda st: (),
)


@dataclass(slots=True)
class ReloadStatus:
    """The outcome of the last configuration load; a plain object, written by the CLI."""

    successful: bool = True
    success_timestamp: float = field(default_factory=time.time)

    def succeeded(self, now: float) -> None:
        self.successful = True
        self.success_timestamp = now

    def failed(self) -> None:
        self.successful = False  # the timestamp stays that of the configuration still running


class ReloadCollector(Collector):
    def __init__(self, status: ReloadStatus) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        successful = RELOAD_SUCCESSFUL.family()
        successful.add_metric([], 1.0 if self._status.successful else 0.0)
        yield successful
        timestamp = RELOAD_SUCCESS_TIMESTAMP.family()
        timestamp.add_metric([], self._status.success_timestamp)
        yield timestamp
