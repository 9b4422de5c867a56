"""The dashboard as code: ``dashboards/asterisk-ami.json`` is what ``tools/generate_dashboard.py``
makes with Grafana's foundation SDK.

The committed file must equal the generator's output byte for byte (regenerate with
``python3 tools/generate_dashboard.py``), ``--check`` must fail on any other file, the output
must be deterministic, and the JSON must be the SDK's own dashboard model: decoded with the
SDK and encoded again, only the fields the generator adds where the SDK's schema has none may
be lost. The installed SDK must be the build ``pyproject.toml`` pins, since another build
generates other JSON. The queries run against a real Prometheus in ``test_prometheus_e2e.py``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "generate_dashboard.py"
DASHBOARD = ROOT / "dashboards" / "asterisk-ami.json"
# What Grafana reads but the SDK's schema (Grafana 10.4) lacks: the generator's extensions.
EXTENSION_KEYS = {"definition", "step", "titleFormat", "textFormat", "tagKeys", "useValueForTime"}


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_dashboard", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


generator = _load_tool()


def test_committed_dashboard_is_what_the_generator_makes() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generator.render(), (
        "dashboards/asterisk-ami.json is stale or edited by hand: change "
        "tools/generate_dashboard.py and run python3 tools/generate_dashboard.py"
    )


def test_check_passes_on_the_committed_file() -> None:
    assert generator.main(["--check"]) == 0


def test_check_fails_on_a_modified_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edited = tmp_path / "asterisk-ami.json"
    text = DASHBOARD.read_text(encoding="utf-8")
    edited.write_text(text.replace('"title": "Servers"', '"title": "Hosts"', 1), encoding="utf-8")
    assert edited.read_text(encoding="utf-8") != text
    assert generator.main(["--check", "--output", str(edited)]) == 1
    err = capsys.readouterr().err
    assert "not up to date" in err
    assert re.search(r'^-\s+"title": "Hosts",$', err, re.MULTILINE), err
    # a reformatted but equal dashboard is not the generated file either
    edited.write_text(json.dumps(json.loads(text), indent=4) + "\n", encoding="utf-8")
    assert generator.main(["--check", "--output", str(edited)]) == 1
    assert generator.main(["--check", "--output", str(tmp_path / "missing.json")]) == 1


def test_write_then_check(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    assert generator.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == DASHBOARD.read_text(encoding="utf-8")
    assert generator.main(["--check", "--output", str(out)]) == 0


def test_output_is_deterministic_and_laid_out_like_grafana_exports() -> None:
    text = generator.render()
    assert generator.render() == text
    assert json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n" == text
    flat = []
    for p in json.loads(text)["panels"]:
        flat += [p, *p.get("panels", [])]
    assert [p["id"] for p in flat] == list(range(1, len(flat) + 1)), "ids in document order"


def round_trip_losses(original: Any, again: Any, path: str = "") -> tuple[set[str], list[str]]:
    """(keys the SDK's model dropped, paths whose value it changed); keys it adds are its
    defaults (``auto_min`` on variables, a table's ``custom.align``) and are not counted."""
    lost: set[str] = set()
    changed: list[str] = []
    if isinstance(original, dict) and isinstance(again, dict):
        for key, value in original.items():
            if key not in again:
                lost.add(key)
            else:
                sub_lost, sub_changed = round_trip_losses(value, again[key], f"{path}/{key}")
                lost |= sub_lost
                changed += sub_changed
    elif isinstance(original, list) and isinstance(again, list) and len(original) == len(again):
        for i, (a, b) in enumerate(zip(original, again, strict=True)):
            sub_lost, sub_changed = round_trip_losses(a, b, f"{path}[{i}]")
            lost |= sub_lost
            changed += sub_changed
    elif original != again:
        changed.append(path)
    return lost, changed


def test_dashboard_is_the_sdk_model_plus_the_documented_extensions() -> None:
    register_default_plugins()  # decodes panel options and Prometheus queries by type
    original = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    model = Dashboard.from_json(json.loads(json.dumps(original)))
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    lost, changed = round_trip_losses(original, again)
    assert not changed, f"values the SDK's model reads differently: {changed[:10]}"
    assert lost == EXTENSION_KEYS, f"keys outside the SDK's model: {sorted(lost - EXTENSION_KEYS)}"


def test_installed_sdk_is_the_pinned_build() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = extras["optional-dependencies"]["dashboard"]
    requirement = Requirement(pin)
    assert requirement.name == "grafana-foundation-sdk"
    installed = version(requirement.name)
    assert requirement.specifier.contains(installed), (
        f"grafana-foundation-sdk {installed} is not {requirement.specifier}: install the "
        "dashboard extra (pip install -e '.[dashboard]'), another build generates other JSON"
    )
    assert "ami-exporter[dashboard]" in extras["optional-dependencies"]["test"]


def test_values_of_the_alert_rules_are_read_not_copied() -> None:
    assert generator.TRUNKS == 'peer!~"[0-9]+"'
    assert generator.CONGESTION_CAUSES == "34|38|41|42"
    assert (generator.CONGESTION_SHARE, generator.ORIGINATE_FAILURE) == (0.2, 0.8)
    assert (generator.RESTART_SECONDS, generator.QUEUE_HOLD) == (600, 300)
    assert generator.LOGIN_WINDOW == "10m"
    with pytest.raises(SystemExit, match="AsteriskTrunkUnreachable no longer matches"):
        generator.from_alert("AsteriskTrunkUnreachable", r"asterisk_peer_up\{(trunk=~\"x\")\}")
    # issue #11: the per-carrier, call-quality, queue and restart alerts
    assert (generator.ASR_FLOOR, generator.ASR_MIN_CALLS) == (0.1, 50)
    assert (generator.PDD_P95_MAX, generator.LOSS_P95_MAX) == (8, 0.03)
    assert (generator.JITTER_P95_MAX, generator.MES_P5_MIN) == (0.03, 60)
    assert (generator.SERVICE_LEVEL_GOAL, generator.RESTARTS_PER_HOUR) == (0.8, 3)


def test_outcome_groups_are_read_from_the_recording_rules() -> None:
    assert generator.ANSWERED == 'outcome="answered"'
    assert generator.EFFECTIVE == 'outcome=~"answered|busy|no_answer|rejected|cancelled"'
    assert generator.LEFT_QUEUE == 'outcome=~"answered|abandoned"'
    assert (generator.SERVICE_LEVEL_LE, generator.SERVICE_LEVEL_SECONDS) == ("20.0", 20)
    asr = "server_trunk_direction:asterisk_trunk_calls_answered:rate15m"
    with pytest.raises(SystemExit, match="no longer matches"):
        generator.from_record(asr, r'(outcome="busy")')
