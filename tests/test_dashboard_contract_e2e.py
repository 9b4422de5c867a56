"""The per-carrier, call-quality, queue and restart queries against a real Prometheus, on
series of known rates: the figures they compute.

``test_prometheus_e2e.py`` checks that every query has data on the exporter watching the
simulator, whose traffic is random. Here a stand-in target serves the names, labels and bucket
bounds the exporter writes (counters growing at fixed rates, histograms with fixed shapes on the
exporter's own bounds, from prometheus_client's own exposition), a real Prometheus scrapes it
every second with both rule files, every recorded series and every dashboard query that reads
one of these series must return data, and the ASR, NER and service level read what the
stand-in's rates make them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PROMETHEUS_HINT, free_port, require_binary
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from test_prometheus_e2e import (
    RATE_INTERVAL,
    PromAPI,
    recording_rules,
    resolve_variables,
    run_dashboard_queries,
    running_prometheus,
)

from ami_exporter.state.queues import TALK_BUCKETS, WAIT_BUCKETS
from ami_exporter.state.trunks import (
    ANSWERED_BUCKETS,
    JITTER_BUCKETS,
    LOSS_BUCKETS,
    MES_BUCKETS,
    PDD_BUCKETS,
    RTT_BUCKETS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SERVER = "contract"
# The series of issue #11 that the stand-in serves; the dashboard queries reading one must
# return data from it.
ISSUE_11 = re.compile(
    r"\b(asterisk_trunk_\w+|asterisk_queue_(wait|talk)_seconds\w*|asterisk_restarts_total)\b"
)
STARTED = time.monotonic()
# per carrier: outbound outcomes per second
OUTCOMES = {
    "carrierA": {"answered": 2.0, "busy": 1.0, "no_answer": 1.0},  # ASR 50 %, NER 100 %
    "carrierB": {"answered": 0.5, "congestion": 4.0, "unallocated": 0.5},  # ASR 10 %, NER 10 %
}


# The bucket bounds the exporter writes for each histogram.
BOUNDS: dict[str, tuple[float, ...]] = {
    "asterisk_trunk_post_dial_delay_seconds": PDD_BUCKETS,
    "asterisk_trunk_answered_duration_seconds": ANSWERED_BUCKETS,
    "asterisk_trunk_rtp_loss_ratio": LOSS_BUCKETS,
    "asterisk_trunk_rtp_jitter_seconds": JITTER_BUCKETS,
    "asterisk_trunk_rtp_rtt_seconds": RTT_BUCKETS,
    "asterisk_trunk_rtp_media_experience_score": MES_BUCKETS,
    "asterisk_queue_wait_seconds": WAIT_BUCKETS,
    "asterisk_queue_talk_seconds": TALK_BUCKETS,
}


def elapsed() -> float:
    return time.monotonic() - STARTED


def histogram(
    name: str, labels: list[str], shapes: dict[tuple[str, ...], dict[float, float]]
) -> HistogramMetricFamily:
    """Histograms with the exporter's own bucket bounds (BOUNDS), whose counts grow at
    ``rate`` per second at each bound of the shape and not at the others."""
    family = HistogramMetricFamily(name, name, labels=labels)
    t = elapsed()
    bounds = BOUNDS[name]
    for values, per_bucket in shapes.items():
        assert set(per_bucket) <= set(bounds), f"{name}: {sorted(per_bucket)} not in {bounds}"
        cumulative, buckets, total = 0.0, [], 0.0
        for bound in bounds:
            cumulative += per_bucket.get(bound, 0.0) * t
            total += bound * per_bucket.get(bound, 0.0) * t
            buckets.append((floatToGoString(bound), cumulative))
        buckets.append(("+Inf", cumulative))
        family.add_metric(list(values), buckets, total)
    return family


class ContractCollector(Collector):
    """The series of issue #11 for one server, two carriers and one queue."""

    def collect(self) -> Iterator[Metric]:
        t = elapsed()
        up = GaugeMetricFamily("asterisk_ami_up", "up", labels=["server"])
        up.add_metric([SERVER], 1.0)
        yield up
        calls = CounterMetricFamily(
            "asterisk_trunk_calls", "calls", labels=["server", "trunk", "direction", "outcome"]
        )
        for trunk, outcomes in OUTCOMES.items():
            for outcome, per_second in outcomes.items():
                calls.add_metric([SERVER, trunk, "outbound", outcome], per_second * t)
            calls.add_metric([SERVER, trunk, "inbound", "answered"], 0.2 * t)
        yield calls
        sip = CounterMetricFamily(
            "asterisk_trunk_sip_responses", "sip", labels=["server", "trunk", "code"]
        )
        sip.add_metric([SERVER, "carrierA", "486"], 1.0 * t)
        sip.add_metric([SERVER, "carrierB", "503"], 4.0 * t)
        yield sip
        active = GaugeMetricFamily(
            "asterisk_trunk_active_channels", "active", labels=["server", "trunk", "direction"]
        )
        for trunk in OUTCOMES:
            active.add_metric([SERVER, trunk, "outbound"], 12.0)
            active.add_metric([SERVER, trunk, "inbound"], 3.0)
        yield active
        yield from self.histograms()
        restarts = CounterMetricFamily("asterisk_restarts", "restarts", labels=["server"])
        restarts.add_metric([SERVER], 0.0)
        yield restarts
        build = GaugeMetricFamily(
            "ami_exporter_build_info", "build", labels=["version", "python_version"]
        )
        build.add_metric(["0.0.0-contract", "3.11.7"], 1.0)
        yield build

    def histograms(self) -> Iterator[Metric]:
        trunks = list(OUTCOMES)
        streams = ("received", "sent")
        st = ["server", "trunk"]
        yield histogram(
            "asterisk_trunk_post_dial_delay_seconds",
            st,
            {(SERVER, tr): {1.0: 1.0, 2.0: 2.0, 6.0: 1.0, 12.0: 0.1} for tr in trunks},
        )
        yield histogram(
            "asterisk_trunk_answered_duration_seconds",
            [*st, "direction"],
            {
                (SERVER, tr, d): {30.0: 1.0, 120.0: 1.0}
                for tr in trunks
                for d in ("inbound", "outbound")
            },
        )
        quality = {
            "asterisk_trunk_rtp_loss_ratio": {0.0: 8.0, 0.01: 1.0, 0.05: 1.0},
            "asterisk_trunk_rtp_jitter_seconds": {0.005: 8.0, 0.02: 2.0},
            "asterisk_trunk_rtp_media_experience_score": {80.0: 1.0, 90.0: 9.0},
        }
        for name, shape in quality.items():
            shapes = {(SERVER, tr, s): shape for tr in trunks for s in streams}
            yield histogram(name, [*st, "stream"], shapes)
        yield histogram(
            "asterisk_trunk_rtp_rtt_seconds",
            st,
            {(SERVER, tr): {0.025: 1.0, 0.1: 0.1} for tr in trunks},
        )
        waits = {
            (SERVER, "support", "answered"): {10.0: 3.0, 20.0: 1.0, 60.0: 1.0},  # 4 of 6 in 20 s
            (SERVER, "support", "abandoned"): {30.0: 1.0},
        }
        yield histogram("asterisk_queue_wait_seconds", ["server", "queue", "outcome"], waits)
        yield histogram(
            "asterisk_queue_talk_seconds", ["server", "queue"], {(SERVER, "support"): {300.0: 4.0}}
        )


def value(result: list[Any], **labels: str) -> float:
    (sample,) = [r for r in result if all(r["metric"].get(k) == v for k, v in labels.items())]
    return float(sample["value"][1])


async def test_contract_series_feed_every_new_query(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus", install=PROMETHEUS_HINT)
    registry = CollectorRegistry()
    registry.register(ContractCollector())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        async with running_prometheus(prometheus, tmp_path, f"127.0.0.1:{port}") as api:
            await check(api)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


async def check(api: PromAPI) -> None:
    async def evaluated() -> bool:
        # 15m-window recordings need two samples of the counters under them; the dashboard's
        # rate() needs a few scrapes in RATE_INTERVAL
        try:
            err, result = await api.query(
                "server_trunk_direction:asterisk_trunk_asr:ratio_rate15m and on () "
                f"count_over_time(asterisk_ami_up[{RATE_INTERVAL}]) >= 4"
            )
        except OSError:  # not listening yet
            return False
        return err is None and len(result) >= 2

    await api.eventually(evaluated, "the recorded ASR and a few scrapes", 30)
    recorded = recording_rules()
    for name in recorded:
        err, result = await api.query(name)
        assert err is None, f"{name}: {err}"
        assert result, f"{name}: no data from the contract series"

    _, asr = await api.query("server_trunk_direction:asterisk_trunk_asr:ratio_rate15m")
    assert value(asr, trunk="carrierA", direction="outbound") == pytest.approx(0.5, rel=0.02)
    assert value(asr, trunk="carrierB", direction="outbound") == pytest.approx(0.1, rel=0.02)
    assert value(asr, trunk="carrierA", direction="inbound") == pytest.approx(1.0, rel=0.02)
    _, ner = await api.query("server_trunk_direction:asterisk_trunk_ner:ratio_rate15m")
    assert value(ner, trunk="carrierA", direction="outbound") == pytest.approx(1.0, rel=0.02)
    assert value(ner, trunk="carrierB", direction="outbound") == pytest.approx(0.1, rel=0.02)
    _, sl = await api.query("server_queue:asterisk_queue_service_level_20s:ratio_rate15m")
    assert value(sl, queue="support") == pytest.approx(4 / 6, rel=0.02)

    values = await resolve_variables(api)
    assert values["server"] == [SERVER]
    assert values["trunk"] == sorted(OUTCOMES)
    empty, errors = [], []
    for answer in await run_dashboard_queries(api, values):
        title, expr, query = answer.target.title, answer.target.expr, answer.query
        if answer.error is not None:
            errors.append(f"{title}: {query}\n    {answer.error}")
        elif ISSUE_11.search(expr) and " offset " not in expr and not answer.result:
            empty.append(f"{title}: {query}")
    assert not errors, "\n".join(errors)
    assert not empty, "queries without data on the contract series:\n" + "\n".join(empty)
