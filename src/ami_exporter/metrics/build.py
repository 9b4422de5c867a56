"""The exporter's own build information (not per server)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ami_exporter import __version__
from ami_exporter.metrics.table import gauge

BUILD_INFO: Final = gauge(
    "ami_exporter_build_info",
    "ami-exporter build information; always 1.",
    ("version", "python_version"),
    lambda st: (),  # not per server: see BuildInfoCollector
)


class BuildInfoCollector(Collector):
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = BUILD_INFO.family()
        family.add_metric([__version__, platform.python_version()], 1.0)
        yield family
