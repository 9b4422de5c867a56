"""A real Prometheus server scrapes the exporter, evaluates the alert rules and the dashboard.

The exporter runs in-process, with queues and VICIdial on, on the simulator as an Asterisk 22
with TRUNKS PJSIP carriers (20 calls/s with the captured outcome mix, post-dial delay, RTCP
every 0.5 s with loss, jitter and MES, inbound and queue calls, qualify and registration flaps),
Local calls of every outcome and a failed login for the security events; Asterisk restarts
RESTARTS times. Debian's ``prometheus`` binary runs on loopback with a temporary data
directory, 1 s scrape and evaluation intervals, ``alerts/ami-exporter.recording.yml`` and
``alerts/ami-exporter.rules.yml``. Through its HTTP API the test checks that the target is up;
that every recording and alert rule loaded and evaluates cleanly; that the restart alerts fire
(critical and warning); that every recorded series and every PromQL expression of the dashboard
(panels, collapsed rows' panels and annotations) and every variable query returns a number, but
the queries of an earlier period listed in EMPTY_IN_A_SHORT_TEST; that the per-carrier graphs
show the busiest 10 carriers and the Carriers table all of them; that every label value the
dashboard and the rules match on (outcome, direction, stream, status, le...) is one the
exporter writes; and that stopping the simulator turns ``asterisk_ami_up`` to 0 and
AsteriskAMIDown to pending. Every HTTP call runs in a thread: Prometheus scrapes the exporter
served by this test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from helpers import (
    PROMETHEUS_HINT,
    REPO,
    Exporter,
    free_port,
    require_binary,
    running_exporter,
    server_config,
    wait_for,
)

from ami_simulator.server import OUTCOMES, SimulatedAsterisk

ROOT = REPO
RULES = ROOT / "alerts" / "ami-exporter.rules.yml"
RECORDING = ROOT / "alerts" / "ami-exporter.recording.yml"
DASHBOARD = ROOT / "dashboards" / "asterisk-ami.json"
JOB = "asterisk"
SERVER = "e2e"
RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for a 1 s scrape is 4 s; a little margin
DEADLINE = 75.0  # the whole test, seconds

pytestmark = pytest.mark.timeout(DEADLINE + 15)

# Simulated Asterisk 22 with more PJSIP carriers than the per-carrier graphs show (their top
# 10), short calls, RTCP every 0.5 s, a flap (qualify or registration) every 2 s or so, a queue.
TRUNKS = 12
TOP_CARRIERS = 10  # what the per-carrier graphs are capped at (topk(10, ...))
SIMULATOR = {
    "calls_per_second": 20,
    "hold_time": 2.0,
    "ring_time": 0.2,
    "ring_timeout": 2.0,
    "post_dial_delay": 0.5,
    "queue_wait": 2.0,
    "rtcp_interval": 0.5,
    "flap_interval": 2.0,
    "vicidial": True,
    "trunks": TRUNKS,
}
# AsteriskRestartingRepeatedly's threshold: this many restarts fire a critical alert (and
# AsteriskRestarted a warning), so that the dashboard's alert annotations have data too.
RESTARTS = 3
DATA_TIMEOUT = 20.0  # for every query to have data once the restarts are over

# The only dashboard queries that may have no data here, with why: each reads an earlier
# period that a Prometheus a minute old has not recorded. Every other query (panel, variable,
# annotation) and every recorded series must return a number (not only NaN).
EMPTY_IN_A_SHORT_TEST: dict[tuple[str, str], str] = {
    ("Calls now and a week ago", "B"): "offset 1w: a week of history",
    ("Active calls", "B"): "offset 1d: a day of history",
    ("Active calls", "C"): "offset 1w: a week of history",
    ("Channels created", "B"): "offset 1d: a day of history",
    ("Channels created", "C"): "offset 1w: a week of history",
    ("ASR and NER", "B"): "offset 1w: a week of history",
    ("ASR and NER", "D"): "offset 1w: a week of history",
    ("ASR per carrier", "B"): "offset 1w: a week of history",
    ("NER per carrier", "B"): "offset 1w: a week of history",
}


# Labels whose values the exporter fixes (outcomes, directions, streams, results, statuses,
# bucket bounds): every value a dashboard query or a rule matches on must be in the real
# series, or the query silently reads nothing (an ASR of 0 through `or 0 *`, say). Hangup
# causes and security event names are open sets and not checked.
CLOSED_LABELS = frozenset({"outcome", "direction", "stream", "result", "status", "le"})
# Values matched on that this simulator does not produce, with why.
ABSENT_VALUES: dict[tuple[str, str, str], str] = {
    ("asterisk_peers", "status", "lagged"): "chan_sip/IAX2 qualify only; the carriers are PJSIP",
    ("asterisk_peers", "status", "registered"): "chan_sip/IAX2 dynamic peers; PJSIP carriers",
}
MATCHER = re.compile(r'(?P<label>\w+)(?:=~|=)"(?P<value>[^"$]*)"')


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load(RECORDING.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"]}


def has_data(result: list[Any]) -> bool:
    """At least one sample that is a number: histogram_quantile of buckets that did not move
    is NaN, which Grafana draws as nothing."""
    return any(math.isfinite(float(r["value"][1])) for r in result)


def http_get(url: str) -> tuple[int, Any]:
    """GET a Prometheus API URL: (status, decoded JSON body), also for 4xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"status": "error", "error": body.decode(errors="replace")}


class PromAPI:
    def __init__(self, port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log = log

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-30:])

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        query = urllib.parse.urlencode(params)
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        return await asyncio.to_thread(http_get, url)

    async def query(self, expr: str) -> tuple[str | None, list[Any]]:
        """Instant query: (error or None, result vector)."""
        status, body = await self.get("/api/v1/query", query=expr)
        if status != 200 or body.get("status") != "success":
            return f"HTTP {status}: {body.get('error', body)}", []
        data = body["data"]
        result = data["result"]
        return None, result if isinstance(result, list) else [result]

    async def eventually(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"prometheus exited with {self.proc.returncode} while waiting for {what}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; prometheus log tail:\n"
                    + self.log_tail()
                )
            await asyncio.sleep(0.25)


class Target(NamedTuple):
    """One query of the dashboard: its panel (or annotation), refId and PromQL."""

    title: str
    ref: str
    expr: str


class Answer(NamedTuple):
    """A dashboard query as run: the query with the variables filled in, error or result."""

    target: Target
    query: str
    error: str | None
    result: list[Any]


def dashboard_targets() -> list[Target]:
    """Every query of the dashboard: the panels' targets, those of the panels inside
    collapsed rows, and the Prometheus annotations (refId ``annotation``)."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for top in dashboard["panels"]:
        for panel in [top, *top.get("panels", [])]:
            out.extend(
                Target(panel["title"], t["refId"], t["expr"]) for t in panel.get("targets", [])
            )
    for annotation in dashboard["annotations"]["list"]:
        if annotation["datasource"].get("type") == "prometheus":
            name = f"annotation {annotation['name']}"
            out.append(Target(name, "annotation", annotation["expr"]))
    return out


def test_the_queries_allowed_no_data_exist_and_read_an_earlier_period() -> None:
    targets = {(t.title, t.ref): t.expr for t in dashboard_targets()}
    for key, reason in EMPTY_IN_A_SHORT_TEST.items():
        assert key in targets, f"{key}: no such query in the dashboard ({reason})"
        assert " offset " in targets[key], f"{key}: reads no earlier period ({reason})"
    earlier = {key for key, expr in targets.items() if " offset " in expr}
    assert earlier == set(EMPTY_IN_A_SHORT_TEST)


def variable_queries() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        v["name"]: v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    }


def grafana_regex(values: list[str]) -> str:
    """What Grafana puts in =~"$var" for a multi-value selection, inside a PromQL string."""
    if values == [".+"]:
        return ".+"  # All, as allValue
    escaped = [re.escape(v).replace("\\", "\\\\") for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


async def failed_login(port: int) -> None:
    """A wrong secret: the simulator sends InvalidPassword to every read=security session."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # banner
        writer.write(b"Action: Login\r\nUsername: exporter\r\nSecret: wrong\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout=5)  # "Authentication failed", close
    finally:
        writer.close()


async def test_real_prometheus_scrapes_evaluates_rules_and_dashboard(
    tmp_path: Path, make_simulator: Callable[..., Awaitable[SimulatedAsterisk]]
) -> None:
    prometheus = require_binary("prometheus", install=PROMETHEUS_HINT)
    started = time.monotonic()
    sim = await make_simulator(**SIMULATOR)
    config = server_config(
        sim.port,
        name=SERVER,
        ping_interval=1.0,
        resync_interval=2.0,
        queues=True,
        vicidial=True,
    )
    async with running_exporter(config) as exporter:
        await wait_for(lambda: exporter.state.up, 5, "the exporter's AMI login")
        for outcome in OUTCOMES:  # Local calls too: every originate reason and hangup cause
            sim.start_call(outcome, hold_time=1.0)
        await failed_login(sim.port)

        target = f"127.0.0.1:{exporter.web.port}"
        async with running_prometheus(prometheus, tmp_path, target) as api:
            await run_checks(api, exporter, sim)
    assert time.monotonic() - started < DEADLINE


@contextlib.asynccontextmanager
async def running_prometheus(
    prometheus: str, tmp_path: Path, target: str
) -> AsyncIterator[PromAPI]:
    """Prometheus on loopback scraping ``target`` as job asterisk every second, with both
    rule files, evaluated every second."""
    port = free_port()
    prom_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RECORDING), str(RULES)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prom_config))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as log_fh:
        proc = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fh,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        yield PromAPI(port, proc, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_checks(api: PromAPI, exporter: Exporter, sim: SimulatedAsterisk) -> None:
    async def ready() -> bool:
        try:
            status, _ = await api.get("/api/v1/status/buildinfo")
        except OSError:
            return False
        return status == 200

    await api.eventually(ready, "prometheus to serve its API", 20)

    # -- the target is up -----------------------------------------------------------------
    async def target_up() -> bool:
        _, body = await api.get("/api/v1/targets", state="active")
        targets = body.get("data", {}).get("activeTargets", [])
        return any(t["labels"].get("job") == JOB and t["health"] == "up" for t in targets)

    await api.eventually(target_up, "the exporter target to be up", 15)
    await check_rules_evaluate(api)
    await restart_repeatedly(api, exporter, sim)

    # -- the dashboard: enough samples for rate() over $__rate_interval ----------------------
    async def enough_samples() -> bool:
        err, result = await api.query(
            f'count_over_time(asterisk_security_events_total{{event="InvalidPassword"}}'
            f"[{RATE_INTERVAL}]) >= 4"
        )
        return err is None and len(result) > 0

    await api.eventually(enough_samples, "a few scrapes of every series", 20)

    await check_recorded_series(api)
    await check_dashboard_queries(api, exporter.web.port, sim)
    await check_label_values(api)

    # -- the AMI session is up -------------------------------------------------------------
    _, body = await api.get("/api/v1/alerts")
    names = {a["labels"]["alertname"] for a in body["data"]["alerts"]}
    assert "AsteriskAMIDown" not in names
    assert "AsteriskExporterDown" not in names

    # -- Asterisk goes away: asterisk_ami_up reads 0 and AsteriskAMIDown goes pending ---------
    await sim.stop()

    async def ami_down() -> bool:
        err, result = await api.query(f'asterisk_ami_up{{server="{SERVER}"}}')
        return err is None and len(result) == 1 and result[0]["value"][1] == "0"

    await api.eventually(ami_down, "asterisk_ami_up == 0 in prometheus", 10)

    async def alert_pending() -> bool:
        _, body = await api.get("/api/v1/alerts")
        return any(
            a["labels"].get("alertname") == "AsteriskAMIDown"
            and a["labels"].get("server") == SERVER
            and a["labels"].get("severity") == "critical"
            and a["state"] == "pending"
            for a in body.get("data", {}).get("alerts", [])
        )

    await api.eventually(alert_pending, "AsteriskAMIDown to be pending", 10)


async def check_rules_evaluate(api: PromAPI) -> None:
    """Every recording and alert rule loaded and evaluates without error."""
    expected = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    } | set(recording_rules())
    rules_state: dict[str, Any] = {}

    async def rules_evaluated() -> bool:
        _, body = await api.get("/api/v1/rules")
        rules = [r for g in body.get("data", {}).get("groups", []) for r in g["rules"]]
        rules_state["rules"] = rules
        return len(rules) == len(expected) and all(
            r.get("lastEvaluation", "").startswith("20") and r["health"] != "unknown" for r in rules
        )

    await api.eventually(rules_evaluated, "every rule to be evaluated", 10)
    rules = rules_state["rules"]
    assert {r["name"] for r in rules} == expected
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, f"rules failing in a real Prometheus: {bad}"


async def restart_repeatedly(api: PromAPI, exporter: Exporter, sim: SimulatedAsterisk) -> None:
    """Asterisk restarts RESTARTS times once Prometheus has the restart counter at 0: the
    restart annotation, the Servers table's restarts and a critical and a warning alert."""
    zero = f'asterisk_restarts_total{{server="{SERVER}"}} == 0'

    async def counter_at_zero() -> bool:
        err, result = await api.query(zero)
        return err is None and len(result) == 1

    await api.eventually(counter_at_zero, "asterisk_restarts_total at 0 in prometheus", 10)
    for count in range(1, RESTARTS + 1):
        await sim.restart(downtime=0.1)
        await wait_for(
            lambda n=count: exporter.state.up and exporter.state.core.restarts_detected == n,
            10,
            f"the exporter back after restart {count}",
        )

    async def alerts_firing() -> bool:
        _, body = await api.get("/api/v1/alerts")
        firing = {
            (a["labels"]["alertname"], a["labels"]["severity"])
            for a in body.get("data", {}).get("alerts", [])
            if a["state"] == "firing" and a["labels"].get("server") == SERVER
        }
        wanted = {("AsteriskRestartingRepeatedly", "critical"), ("AsteriskRestarted", "warning")}
        return wanted <= firing

    await api.eventually(alerts_firing, "the restart alerts to fire", 10)


async def check_recorded_series(api: PromAPI) -> None:
    """Every recorded series has data: ASR, NER, ACD, post-dial delay and RTP percentiles,
    queue service level, all from the simulated carriers and queue."""
    errors: list[str] = []
    no_record: list[str] = []

    async def all_recorded() -> bool:
        errors.clear()
        no_record.clear()
        for name in recording_rules():
            err, result = await api.query(name)
            if err is not None:
                errors.append(f"{name}: {err}")
            elif not has_data(result):
                no_record.append(name)
        return not errors and not no_record

    await poll(api, all_recorded, DATA_TIMEOUT)
    assert not errors, f"recorded series Prometheus rejects: {errors}"
    assert not no_record, f"recorded series without data: {no_record}"


async def poll(api: PromAPI, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Run ``check`` until it holds or ``timeout`` passes; the caller asserts what is left."""
    deadline = time.monotonic() + timeout
    while not await check() and time.monotonic() < deadline:
        assert api.proc.returncode is None, f"prometheus exited:\n{api.log_tail()}"
        await asyncio.sleep(1.0)


async def check_dashboard_queries(api: PromAPI, exporter_port: int, sim: SimulatedAsterisk) -> None:
    """Variable queries, resolved like Grafana does, then used to fill in the panels' queries;
    every query parses and has data but those of EMPTY_IN_A_SHORT_TEST, and the per-carrier
    graphs show the busiest TOP_CARRIERS of the TRUNKS carriers."""
    values = await resolve_variables(api)
    assert values["job"] == [JOB]
    assert values["instance"] == [f"127.0.0.1:{exporter_port}"]
    assert values["server"] == [SERVER]
    assert sim.trunks is not None
    assert values["trunk"] == sorted(c.name for c in sim.trunks.carriers)
    errors: list[str] = []
    empty: list[str] = []
    answers: list[Answer] = []

    async def every_query_has_data() -> bool:
        answers[:] = await run_dashboard_queries(api, values)
        errors[:] = [f"{a.target.title}: {a.query}\n    {a.error}" for a in answers if a.error]
        empty[:] = [
            f"{a.target.title} ({a.target.ref}): {a.query}"
            for a in answers
            if a.error is None
            and not has_data(a.result)
            and (a.target.title, a.target.ref) not in EMPTY_IN_A_SHORT_TEST
        ]
        return not errors and not empty

    await poll(api, every_query_has_data, DATA_TIMEOUT)
    assert not errors, "dashboard queries that Prometheus rejects:\n" + "\n".join(errors)
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    with_data = [a for a in answers if (a.target.title, a.target.ref) not in EMPTY_IN_A_SHORT_TEST]
    assert len(with_data) == len(answers) - len(EMPTY_IN_A_SHORT_TEST)
    check_carrier_caps(answers)


def check_carrier_caps(answers: list[Answer]) -> None:
    """A graph per carrier shows at most the TOP_CARRIERS busiest (here all TRUNKS carriers
    call, so exactly that many); the Carriers table lists every carrier; no table cell is
    NaN."""
    capped = 0
    for a in answers:
        trunks = {r["metric"].get("trunk") for r in a.result} - {None}
        if f"topk({TOP_CARRIERS}, sum by (trunk" in a.target.expr:
            capped += 1
            assert len(trunks) <= TOP_CARRIERS, f"{a.target.title}: {sorted(trunks)}"
            if a.target.title == "Carrier calls per minute":
                assert len(trunks) == TOP_CARRIERS, f"{a.target.title}: {sorted(trunks)}"
        elif a.target.title == "Carriers" and a.target.ref == "A":
            assert len(trunks) == TRUNKS, f"{a.target.title}: {sorted(trunks)}"
        if a.target.title in ("Carriers", "Servers"):  # a table prints NaN in its cell
            cells = [r["value"][1] for r in a.result]
            assert all(math.isfinite(float(v)) for v in cells), f"{a.query}: {cells}"
    assert capped >= 10, "the per-carrier graphs are capped"


def matched_values() -> dict[tuple[str, str], set[str]]:
    """(metric, label) -> the values the dashboard and both rule files match it on (= and =~
    with literal alternatives), for the labels of CLOSED_LABELS."""
    exprs = [t.expr for t in dashboard_targets()] + list(recording_rules().values())
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        exprs += [r["expr"] for r in group["rules"]]
    out: dict[tuple[str, str], set[str]] = {}
    for expr in exprs:
        for selector in re.finditer(r"\b([\w:]+)\{([^}]*)\}", expr):
            for m in MATCHER.finditer(selector[2]):
                if m["label"] in CLOSED_LABELS:
                    key = (selector[1], m["label"])
                    out.setdefault(key, set()).update(m["value"].split("|"))
    return out


async def check_label_values(api: PromAPI) -> None:
    """Every closed-set label value a query or rule matches on is in the real series."""
    wanted = matched_values()
    assert ("asterisk_trunk_calls_total", "outcome") in wanted
    assert "20.0" in wanted[("asterisk_queue_wait_seconds_bucket", "le")]
    missing = []
    for (metric, label), values in sorted(wanted.items()):
        status, body = await api.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert status == 200, body
        for value in sorted(values - set(body["data"])):
            if (metric, label, value) not in ABSENT_VALUES:
                missing.append(f'{metric}{{{label}="{value}"}} (real: {body["data"]})')
    assert not missing, "matched label values the exporter never writes:\n" + "\n".join(missing)


async def resolve_variables(api: PromAPI) -> dict[str, list[str]]:
    """The values of the dashboard's query variables, as Grafana resolves them in order."""
    values: dict[str, list[str]] = {}
    for name, definition in variable_queries().items():
        m = LABEL_VALUES.match(definition)
        assert m, f"variable {name}: unsupported query {definition!r}"
        params = {}
        if m["match"]:
            params["match[]"] = substitute(
                m["match"], {k: grafana_regex(v) for k, v in values.items()}
            )
        status, body = await api.get(f"/api/v1/label/{m['label']}/values", **params)
        assert status == 200, f"variable {name}: {body}"
        values[name] = body["data"]
        assert values[name], f"variable {name}: no value for {definition}"
    return values


async def run_dashboard_queries(api: PromAPI, values: dict[str, list[str]]) -> list[Answer]:
    """Every query of the dashboard, run as an instant query with the variables filled in."""
    variables = {k: grafana_regex(v) for k, v in values.items()}
    now_ms = int(time.time() * 1000)
    variables.update(
        {
            "datasource": "prometheus",
            "__rate_interval": RATE_INTERVAL,
            "__interval": "1s",
            "__range": "1m",
            "__from": str(now_ms - 3_600_000),  # the dashboard's default range, now-1h
            "__to": str(now_ms),
        }
    )
    out = []
    for target in dashboard_targets():
        query = substitute(target.expr, variables)
        assert "$" not in query, f"{target.title}: unsubstituted variable in {query}"
        err, result = await api.query(query)
        out.append(Answer(target, query, err, result))
    return out
