"""Static checks of the Grafana dashboard and of the deployment examples that provision it.

The queries themselves run against a real Prometheus in ``test_prometheus_e2e.py``; here the
JSON's structure (variables, rows, units, descriptions, data sources), the cost rules of its
queries, the metric names and labels against the exporter, and the docker-compose / Grafana
provisioning / systemd files are checked without any network.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from ami_exporter.cli.main import build_arg_parser
from ami_exporter.metrics.collector import AMICollector
from ami_exporter.state.server import ServerState

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "asterisk-ami.json"
EXAMPLES = ROOT / "examples"
DS = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = ('job=~"$job"', 'instance=~"$instance"', 'server=~"$server"')
# Series Prometheus itself adds for every target; filtered by job and instance only.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def exported_series() -> set[str]:
    """Every series name the exporter can emit, from its collector."""
    names = set()
    for family in AMICollector([ServerState("x")]).collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def readme_labels() -> dict[str, set[str]]:
    """metric -> labels, from the README's metric table (the exporter's documented contract)."""
    out = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(asterisk_\w+)` \| [^|]+ \| ([^|]*) \|", line)
        if m:
            out[m[1]] = {label.strip() for label in m[2].split(",") if label.strip()}
    return out


def panels() -> list[dict[str, Any]]:
    return [p for p in load_dashboard()["panels"] if p["type"] != "row"]


def all_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def rows() -> dict[str, list[str]]:
    """Row title -> the titles of the panels under it."""
    out: dict[str, list[str]] = {}
    current = None
    for p in load_dashboard()["panels"]:
        if p["type"] == "row":
            current = p["title"]
            out[current] = []
        else:
            assert current is not None, f"panel {p['title']!r} is above the first row"
            out[current].append(p["title"])
    return out


PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def metric_names(expr: str) -> list[str]:
    """Metric names in a PromQL expression (functions, keywords, labels and strings removed)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = []
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        if m[2] or m[1] in PROMQL_KEYWORDS:
            continue  # a function call or a keyword
        names.append(m[1])
    return names


def matchers_of(expr: str, metric: str) -> list[str]:
    """The label matchers of each selector of ``metric`` ("" for a bare name)."""
    return [m or "" for m in re.findall(r"\b" + re.escape(metric) + r"\b(?:\{([^}]*)\})?", expr)]


# -- the dashboard ---------------------------------------------------------------------------


def test_dashboard_identity_and_portability() -> None:
    d = load_dashboard()
    assert d["uid"] == "ami-exporter-asterisk"
    assert d["title"]
    assert {"asterisk", "ami"} <= set(d["tags"])
    assert d["schemaVersion"] >= 39
    assert d.get("id") is None
    text = DASHBOARD.read_text()
    # Importable and file-provisionable as is: no import-time inputs, no fixed data source.
    assert "__inputs" not in text
    assert "${DS_" not in text
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "server"]
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    for name in ("job", "instance", "server"):
        v = variables[name]
        assert v["type"] == "query", name
        assert v["datasource"] == DS, name
        assert v["multi"] is True, name
        assert v["includeAll"] is True, name
        assert v["refresh"] == 2, f"{name}: refresh on time range change"
        assert v["definition"] == v["query"]["query"], name
    assert variables["job"]["definition"] == "label_values(asterisk_ami_up, job)"
    assert variables["instance"]["definition"] == (
        'label_values(asterisk_ami_up{job=~"$job"}, instance)'
    )
    assert variables["server"]["definition"] == (
        'label_values(asterisk_ami_up{job=~"$job", instance=~"$instance"}, server)'
    )


def test_dashboard_rows_and_required_panels() -> None:
    layout = rows()
    assert list(layout) == ["Overview", "Calls", "AMI health", "Security", "Trunks", "Queues"]
    required = {
        "Overview": [
            "AMI up",
            "Active channels",
            "Active calls",
            "Asterisk uptime",
            "Since last reload",
            "Exporter scrape health",
        ],
        "Calls": [
            "Active channels by technology",
            "Active channels by state",
            "Originate rate",
            "Originate success ratio",
            "Originate failures by reason",
            "Dial outcomes by status",
            "Top hangup causes",
            "Share of failure causes",
            "Channel duration percentiles",
        ],
        "AMI health": [
            "Login failures",
            "Connection errors by reason",
            "Disconnects by reason",
            "Reconnect rate",
            "Age of the last AMI message",
            "Ping round trip",
            "Events per second by type",
            "Malformed messages",
            "Resync corrections",
        ],
        "Security": ["Security events by type and service"],
        "Trunks": [
            "Peers down",
            "Registrations down",
            "Trunk channels (non-Local)",
            "Peer reachability",
            "Peer round trip",
            "Registrations",
        ],
        "Queues": ["Queue callers waiting", "Longest hold", "Queue members by status"],
    }
    for row, titles in required.items():
        missing = set(titles) - set(layout[row])
        assert not missing, f"row {row!r} lacks {sorted(missing)}"

    by_title = {p["title"]: p for p in panels()}
    up = by_title["AMI up"]
    assert up["type"] == "stat"
    steps = up["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "red", "value": None}, "AMI up must be red when 0"
    assert steps[1]["value"] == 1
    share = " ".join(t["expr"] for t in by_title["Share of failure causes"]["targets"])
    for group in ('"34|38|41|42"', '"1|3|28"', '"21"', '"18|19"'):
        assert group in share, f"failure cause group {group} missing"
    age = by_title["Age of the last AMI message"]["targets"][0]["expr"]
    assert age.startswith("time() - ") and "asterisk_ami_last_event_timestamp_seconds" in age
    duration = by_title["Channel duration percentiles"]["targets"]
    assert all("histogram_quantile(" in t["expr"] for t in duration)
    assert all("asterisk_channel_duration_seconds_bucket" in t["expr"] for t in duration)


def test_every_panel_has_datasource_unit_and_description() -> None:
    for p in panels():
        title = p["title"]
        assert p["datasource"] == DS, title
        assert p["description"].strip(), f"{title}: no description"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert p["targets"], f"{title}: no query"
        for t in p["targets"]:
            assert t["datasource"] == DS, title
            assert t["expr"].strip(), title
            assert t["refId"], title


@pytest.mark.parametrize(("title", "expr"), all_exprs())
def test_query_ranges_and_cost(title: str, expr: str) -> None:
    # Range windows follow the scrape interval and the time range, never a fixed duration.
    for window in re.findall(r"\[([^\]]*)\]", expr):
        assert window in ("$__rate_interval", "$__range"), f"{title}: fixed window [{window}]"
    if re.search(r"\b(rate|increase)\(", expr):
        assert "$__rate_interval" in expr or "$__range" in expr, title
    # Cheap: every selector names its metric and is scoped to the selected targets.
    assert "__name__" not in expr, f"{title}: selector without a metric name"
    assert not re.search(r'=~"\.[*+]"', expr), f"{title}: unbounded regex"
    for metric in metric_names(expr):
        matchers = matchers_of(expr, metric)
        scope = SCOPE if metric not in PROMETHEUS_SERIES else SCOPE[:2]
        for m in matchers:
            for needed in scope:
                assert needed in m, f"{title}: {metric}{{{m}}} lacks {needed}"


def test_dashboard_metrics_and_labels_exist() -> None:
    exported = exported_series()
    documented = readme_labels()
    for title, expr in all_exprs():
        for metric in metric_names(expr):
            if metric in PROMETHEUS_SERIES:
                continue
            assert metric in exported, f"{title}: {metric} is not exported"
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            base = base if base in documented else re.sub(r"_total$", "", metric) + "_total"
            labels = documented.get(base) or documented.get(metric)
            assert labels is not None, f"{title}: {metric} is not in the README table"
            known = labels | {"job", "instance"} | ({"le"} if metric.endswith("_bucket") else set())
            for matchers in matchers_of(expr, metric):
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                    assert label in known, f"{title}: {metric} has no label {label!r}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                all_labels = set().union(*documented.values()) | {"job", "instance", "le"}
                assert label in all_labels, f"{title}: grouping by unknown label {label!r}"


# -- deployment examples: docker-compose, Grafana provisioning, systemd ---------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(EXAMPLES / "docker-compose.yml")  # type: ignore[no-any-return]


def bind_mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts (host paths must exist)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            host = (EXAMPLES / source).resolve()
            assert host.exists(), f"bind mount source {source} does not exist ({host})"
            out[PurePosixPath(target)] = host
    return out


def to_host(container_path: str, mounts: dict[PurePosixPath, Path]) -> Path:
    """The host file behind a container path, through the bind mounts."""
    path = PurePosixPath(container_path)
    for target, host in sorted(mounts.items(), key=lambda kv: -len(str(kv[0]))):
        if path == target or target in path.parents:
            return host / path.relative_to(target)
    raise AssertionError(f"{container_path} is not inside any bind mount")


def normpath(path: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts)


def test_compose_bind_mounts_exist_and_build_the_repo() -> None:
    c = compose()
    services = c["services"]
    assert set(services) >= {"ami-exporter", "prometheus", "grafana"}
    for name, service in services.items():
        bind_mounts(service)  # asserts every host path exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in c.get("volumes", {}), f"{name}: undeclared volume {source}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} published beyond loopback"
    build = services["ami-exporter"]["build"]
    context = (EXAMPLES / build["context"]).resolve()
    assert context == ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_compose_exporter_command_is_valid_demo() -> None:
    command = compose()["services"]["ami-exporter"]["command"]
    args = build_arg_parser().parse_args(command)
    assert args.demo is True
    assert args.listen_address == ":9815"


def test_compose_prometheus_loads_the_example_config_and_rules() -> None:
    c = compose()
    service = c["services"]["prometheus"]
    mounts = bind_mounts(service)
    flags = dict(a.split("=", 1) for a in service["command"] if "=" in a)
    config_in_container = flags["--config.file"]
    config = to_host(config_in_container, mounts)
    assert config == (EXAMPLES / "prometheus" / "prometheus.yml").resolve()
    prom = load_yaml(config)
    for rule_file in prom["rule_files"]:
        inside = normpath(PurePosixPath(config_in_container).parent / rule_file)
        host = to_host(str(inside), mounts)
        assert host.is_file(), f"{rule_file} -> {inside} -> {host} does not exist"
        assert host == (ROOT / "alerts" / "ami-exporter.rules.yml").resolve()
        # the same relative path works from the checkout (promtool check config)
        assert (config.parent / rule_file).resolve() == host
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert "asterisk" in jobs, "AsteriskExporterDown expects job=asterisk"
    targets = [t for sc in jobs["asterisk"]["static_configs"] for t in sc["targets"]]
    assert targets == ["ami-exporter:9815"], "the compose service and the exporter's port"


def test_grafana_provisioning_points_at_real_paths() -> None:
    c = compose()
    service = c["services"]["grafana"]
    mounts = bind_mounts(service)
    datasources_dir = to_host("/etc/grafana/provisioning/datasources", mounts)
    dashboards_dir = to_host("/etc/grafana/provisioning/dashboards", mounts)
    ds_files = sorted(datasources_dir.glob("*.yml"))
    db_files = sorted(dashboards_dir.glob("*.yml"))
    assert ds_files
    assert db_files

    datasources = [d for f in ds_files for d in load_yaml(f)["datasources"]]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    ds = prometheus[0]
    assert ds["isDefault"] is True, "the dashboard's datasource variable picks the default"
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in c["services"]
    assert ds["jsonData"]["timeInterval"] == "15s"
    prom = load_yaml(EXAMPLES / "prometheus" / "prometheus.yml")
    assert prom["global"]["scrape_interval"] == ds["jsonData"]["timeInterval"]

    providers = [p for f in db_files for p in load_yaml(f)["providers"]]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    folder = to_host(provider["options"]["path"], mounts)
    assert folder == DASHBOARD.parent.resolve()
    assert (folder / DASHBOARD.name).is_file()
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert to_host(home, mounts) == DASHBOARD.resolve()


def systemd_unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((EXAMPLES / "systemd" / "ami-exporter.service").read_text())
    return parser


def test_systemd_unit_is_hardened_and_runs_valid_flags() -> None:
    unit = systemd_unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    for key, expected in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == expected, f"{key}={service.get(key)!r}"
    assert service["LoadCredential"].startswith("ami-secret:/")
    # ExecStart with systemd's line continuations and specifiers filled in
    exec_start = service["ExecStart"].replace("\\\n", " ")
    argv = shlex.split(exec_start.replace("%H", "dialer1").replace("%d", "/run/credentials/x"))
    assert argv[0].endswith("/ami-exporter")
    args = build_arg_parser().parse_args(argv[1:])
    assert args.ami_secret_file == "/run/credentials/x/ami-secret"
    assert "AMI_SECRET" not in exec_start, "the secret comes from the credential file"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
