"""The alert and recording rules: ``promtool check rules`` clean, ``promtool test rules`` green,
every alert unit-tested firing and not firing, annotated and documented; the recording rules
named level:metric:operations after the labels they keep, and every recorded series an alert
reads recorded; the example Prometheus config (which loads both files) passes
``promtool check config``.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from helpers import PROMETHEUS_HINT, REPO, require_binary
from prometheus_client.utils import floatToGoString

from ami_exporter.metrics.collector import AMICollector
from ami_exporter.state.queues import WAIT_BUCKETS
from ami_exporter.state.server import ServerState
from ami_exporter.state.trunks import JITTER_BUCKETS, LOSS_BUCKETS, MES_BUCKETS, PDD_BUCKETS

ROOT = REPO
RULES = ROOT / "alerts" / "ami-exporter.rules.yml"
RECORDING = ROOT / "alerts" / "ami-exporter.recording.yml"
RULE_TESTS = sorted((ROOT / "tests" / "alerts").glob("*.test.yml"))
EXAMPLE_CONFIG = ROOT / "examples" / "prometheus" / "prometheus.yml"
SEVERITIES = {"critical", "warning", "info"}

# The alerts issue #3 asks for, with the severity it asks for where it names one.
REQUIRED = {
    "AsteriskAMIDown": "critical",
    "AsteriskExporterDown": None,
    "AsteriskAMILoginFailures": "critical",
    "AsteriskAMIFlapping": None,
    "AsteriskAMIEventStreamStalled": None,
    "AsteriskRestarted": None,
    "AsteriskOriginateFailureRatioHigh": None,
    "AsteriskHangupCongestionShareHigh": None,
    "AsteriskNoCalls": None,
    "AsteriskSecurityBruteForce": None,
    # issue #11
    "AsteriskTrunkASRCollapsed": None,
    "AsteriskTrunkPostDialDelayHigh": None,
    "AsteriskTrunkRTPLossHigh": None,
    "AsteriskTrunkRTPJitterHigh": None,
    "AsteriskTrunkMediaExperienceLow": None,
    "AsteriskQueueServiceLevelMissed": None,
    "AsteriskRestartingRepeatedly": None,
}
# The percentile alerts and the bucket bounds of the histogram each reads. On a bound, the
# alert is exact: p95 > bound exactly when more than 5 % of the observations exceed it.
QUANTILE_ALERTS: dict[str, tuple[float, ...]] = {
    "AsteriskTrunkPostDialDelayHigh": PDD_BUCKETS,
    "AsteriskTrunkRTPLossHigh": LOSS_BUCKETS,
    "AsteriskTrunkRTPJitterHigh": JITTER_BUCKETS,
    "AsteriskTrunkMediaExperienceLow": MES_BUCKETS,
}
# Thresholds between two bounds, and those bounds: histogram_quantile interpolates linearly
# inside the bucket, as if its observations were spread evenly over it. Loss 3 % sits a third
# of the way into (2 %, 5 %]: reports of 6/256 or 7/256 (2.3 %, 2.7 %) alone can fire it, and a
# 5.5 % share of reports at 4.7 % reads p95 2.3 % and does not. A 0.03 bound would make it
# exact (README's metric table lists the bounds).
BETWEEN_BUCKETS: dict[str, tuple[float, float]] = {}
RECORDED_NAME = re.compile(
    r"^(?P<level>[a-z]+(?:_[a-z]+)*):(?P<metric>[a-z0-9_]+):(?P<ops>[a-z0-9_]+)$"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = require_binary("promtool", install=PROMETHEUS_HINT)
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RECORDING.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def recorded_in(expr: str) -> set[str]:
    """The recorded series (level:metric:operations) an expression reads."""
    return set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", expr))


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("path", "count"),
    [(RULES, lambda: len(alert_rules())), (RECORDING, lambda: len(recording_rules()))],
)
def test_promtool_check_rules_is_clean(path: Any, count: Any) -> None:
    result = promtool("check", "rules", str(path.relative_to(ROOT)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {count()} rules found" in output, output
    assert "warning" not in output.lower(), output


def test_recording_rules_follow_level_metric_operations() -> None:
    """The level names the labels the rule keeps besides job and instance; the metric is an
    exporter metric (or a ratio of it); every recorded name is recorded once."""
    names = [r["record"] for r in recording_rules()]
    assert recording_rules() and all("record" in r for r in recording_rules())
    assert len(names) == len(set(names)), "a series recorded twice"
    for rule in recording_rules():
        m = RECORDED_NAME.match(rule["record"])
        assert m, f"{rule['record']}: not level:metric:operations"
        assert m["metric"].startswith("asterisk_"), rule["record"]
        assert re.search(r"rate\d+m$", m["ops"]), f"{rule['record']}: operations name no window"
        window = re.search(r"(\d+m)$", m["ops"])
        assert window is not None
        for used in re.findall(r"\[(\w+)\]", rule["expr"]):
            assert used == window[1], f"{rule['record']}: window [{used}], name says {window[1]}"
        kept = {"job", "instance", *m["level"].split("_")}
        for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"]):
            labels = {label.strip() for label in clause.split(",")} - {"le"}
            assert labels == kept, f"{rule['record']}: keeps {sorted(labels)}, level says {kept}"
        for series in recorded_in(rule["expr"]):
            earlier = names[: names.index(rule["record"])]
            assert series in earlier, f"{rule['record']} reads {series} before it is recorded"


def test_every_recorded_series_an_alert_reads_is_recorded() -> None:
    recorded = {r["record"] for r in recording_rules()}
    used = set()
    for rule in alert_rules():
        used |= recorded_in(rule["expr"])
        assert recorded_in(rule["expr"]) <= recorded, f"{rule['alert']}: reads an unrecorded series"
    assert used, "the trunk, quality and queue alerts read recorded series"


@pytest.mark.e2e
def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool test files in tests/alerts/"
    result = promtool("test", "rules", *(str(p.relative_to(ROOT)) for p in RULE_TESTS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_TESTS), output


@pytest.mark.e2e
def test_promtool_check_example_config_with_rules() -> None:
    result = promtool("check", "config", str(EXAMPLE_CONFIG.relative_to(ROOT)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS: 2 rule files found" in output, output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output
    assert f"SUCCESS: {len(recording_rules())} rules found" in output, output
    assert "warning" not in output.lower(), output


def test_required_alerts_present_with_severity_and_annotations() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert len(rules) == len(alert_rules()), "duplicate alert names"
    missing = set(REQUIRED) - set(rules)
    assert not missing, f"missing alerts: {sorted(missing)}"
    for name, rule in rules.items():
        severity = rule["labels"]["severity"]
        assert severity in SEVERITIES, name
        if REQUIRED.get(name):
            assert severity == REQUIRED[name], name
        summary = rule["annotations"]["summary"]
        description = rule["annotations"]["description"]
        assert summary[0].isupper() and summary.endswith("."), f"{name}: summary {summary!r}"
        assert "$value" in description, f"{name}: the description must give the value"
        where = "$labels.instance" if name == "AsteriskExporterDown" else "$labels.server"
        assert where in description, f"{name}: the description must name {where}"
        assert where in summary, f"{name}: the summary must name {where}"
        if name != "AsteriskExporterDown":
            # aggregations keep the labels the annotations use
            for group in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                labels = {g.strip() for g in group.split(",")}
                assert {"job", "instance", "server"} <= labels, f"{name}: by ({group})"
    down = rules["AsteriskAMIDown"]
    assert down["for"] == "2m"
    assert re.search(r"asterisk_ami_up\)? == 0", down["expr"]), down["expr"]


def test_alert_metrics_exist_in_the_exporter() -> None:
    exported = set()
    for family in AMICollector([ServerState("x")]).collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            exported.add(family.name + suffix)
    rules = [(r["alert"], r["expr"]) for r in alert_rules()]
    rules += [(r["record"], r["expr"]) for r in recording_rules()]
    for name, expr in rules:
        raw = re.sub(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", " ", expr)  # recorded series
        for metric in set(re.findall(r"\b(asterisk_\w+)", raw)):
            assert metric in exported, f"{name}: {metric} is not exported"


def test_percentile_thresholds_fall_on_the_exporters_bucket_bounds() -> None:
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    for alert, bounds in QUANTILE_ALERTS.items():
        m = re.search(r":p\d+_rate5m\s*[<>]\s*([\d.]+)", rules[alert])
        assert m, f"{alert}: no percentile threshold in {rules[alert]}"
        threshold = float(m[1])
        if alert in BETWEEN_BUCKETS:
            below = max(b for b in bounds if b < threshold)
            above = min(b for b in bounds if b > threshold)
            assert threshold not in bounds, f"{alert}: {threshold} is a bound now"
            assert BETWEEN_BUCKETS[alert] == (below, above), alert
        else:
            assert threshold in bounds, f"{alert}: {threshold} between the bounds {bounds}"
    # the service level counts the answered callers of the 20 s bucket, as the exporter
    # writes its le label
    (bound,) = set(re.findall(r'le="([^"]+)"', RECORDING.read_text()))
    assert bound == floatToGoString(20.0) == "20.0"
    assert 20.0 in WAIT_BUCKETS


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    over_recorded = {r["alert"] for r in alert_rules() if recorded_in(r["expr"])}
    recording_groups = [g["name"] for g in yaml.safe_load(RECORDING.read_text())["groups"]]
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        rule_files = {(path.parent / f).resolve() for f in spec["rule_files"]}
        assert RULES.resolve() in rule_files, f"{path.name} must test {RULES}"
        assert rule_files <= {RULES.resolve(), RECORDING.resolve()}, path.name
        tested = {
            case["alertname"] for test in spec["tests"] for case in test.get("alert_rule_test", [])
        }
        if tested & over_recorded:
            # recording groups evaluated first, so the alerts see this instant's records
            assert RECORDING.resolve() in rule_files, f"{path.name} must load {RECORDING.name}"
            order = spec.get("group_eval_order", [])
            assert order[: len(recording_groups)] == recording_groups, path.name
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
                for alert in case.get("exp_alerts") or []:
                    assert alert.get("exp_annotations"), f"{case['alertname']}: annotations"
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), f"never tested firing: {sorted(names - firing)}"
    assert names - silent == set(), f"never tested silent: {sorted(names - silent)}"


def test_readme_documents_every_alert_and_its_threshold() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Alerts\n(.*?)^## ", readme, re.M | re.S)
    assert m, "README has no '## Alerts' section"
    section = m[1]
    assert "alerts/ami-exporter.rules.yml" in section
    for rule in alert_rules():
        rows = [line for line in section.splitlines() if f"`{rule['alert']}`" in line]
        assert rows, f"README does not document {rule['alert']}"
        assert re.search(r"\d", rows[0]), f"README row of {rule['alert']} lacks its threshold"
