"""The exporter's per-collector scrape self-metrics, as node_exporter names its own.

``ami_exporter_scrape_collector_duration_seconds{collector}`` is the time a scrape spent in
one collector (reading state and writing its lines; the loop's turns given to other work
in between are not counted) and ``ami_exporter_scrape_collector_success{collector}`` is 0
when that collector raised, so its families are missing from that scrape while the rest is
served. Collector names are the metrics module names (``health``, ``peers``...). The values
are those of the scrape that carries them (written last, by :mod:`.exposition`).
"""

from __future__ import annotations

import logging
import time
from typing import Final

from ami_exporter.metrics.table import gauge

__all__ = ["COLLECTOR_DURATION", "COLLECTOR_SUCCESS", "LOG_INTERVAL", "CollectorErrors"]

COLLECTOR_DURATION: Final = gauge(
    "ami_exporter_scrape_collector_duration_seconds",
    "ami_exporter: time the last scrape spent in each collector.",
    ("collector",),
    lambda st: (),  # not per server: written by metrics.exposition
)
COLLECTOR_SUCCESS: Final = gauge(
    "ami_exporter_scrape_collector_success",
    "ami_exporter: whether each collector succeeded in the last scrape (1) or raised (0).",
    ("collector",),
    lambda st: (),
)
LOG_INTERVAL: Final = 300.0  # a collector failing at every scrape logs once per interval


class CollectorErrors:
    """Logs collectors that raise: the first failure with its traceback, then at most once
    per :data:`LOG_INTERVAL` per collector with the count of failures since, and once when
    it works again. Called from inside the ``except`` block (the traceback is the current
    exception)."""

    def __init__(self, log: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._failing: dict[str, tuple[float, int]] = {}  # name -> (last logged, unlogged)

    def failed(self, name: str) -> None:
        now = time.monotonic()
        last = self._failing.get(name)
        if last is None:
            self._log.exception("collector %s failed; its metrics are left out of the scrape", name)
            self._failing[name] = (now, 0)
        elif now - last[0] >= self._interval:
            self._log.warning(
                "collector %s still failing (%d more failed scrapes since the last log)",
                name,
                last[1] + 1,
                exc_info=True,
            )
            self._failing[name] = (now, 0)
        else:
            self._failing[name] = (last[0], last[1] + 1)

    def succeeded(self, name: str) -> None:
        if self._failing.pop(name, None) is not None:
            self._log.warning("collector %s works again", name)
