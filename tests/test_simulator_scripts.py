"""The simulator's call scripts: generated from the captures, shipped as package data.

``src/ami_simulator/scripts/*.json`` must be exactly what ``tools/generate_simulator_scripts.py``
makes from ``tests/fixtures``, and the simulator's compiled scripts, filled in with a capture's
own values, must give back that capture's call byte for byte.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ami_exporter.ami.protocol import AMIParser, Message, serialize
from ami_simulator import profiles, scripts, templates
from ami_simulator.scripts import OUTCOMES, PLACEHOLDERS, CallScript, EventStep, SnapshotRef

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TOOL = ROOT / "tools" / "generate_simulator_scripts.py"
DATA = ROOT / "src" / "ami_simulator" / "scripts"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_simulator_scripts", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_tool()


def test_committed_scripts_are_what_the_generator_makes() -> None:
    files = generator.generate(FIXTURES)
    assert sorted(files) == sorted(f"{outcome}.json" for outcome in OUTCOMES)
    assert sorted(p.name for p in DATA.glob("*.json")) == sorted(files)
    for name, text in files.items():
        assert (DATA / name).read_bytes() == text.encode(), (
            f"{name} is stale: run python3 tools/generate_simulator_scripts.py"
        )


@pytest.mark.e2e
def test_generator_check_mode(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = subprocess.run(
        [sys.executable, str(TOOL), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert stale.stdout.count("not what the generator makes") == len(OUTCOMES)


def test_scripts_are_derived_from_the_capture(tmp_path: Path) -> None:
    """Another call with other ids and one changed header gives the same script but that header."""
    stem = "03-originate-200.exporter"
    raw = (FIXTURES / f"{stem}.raw").read_bytes()
    raw = raw.replace(b"Cause-txt: User busy", b"Cause-txt: Very busy")
    raw = raw.replace(b"test-00000001;", b"test-0000beef;")  # another channel pair
    raw = raw.replace(b"1795771602.", b"1800000000.")  # other Uniqueids
    raw = raw.replace(b"2026-11-27 09:26:42", b"2027-01-02 03:04:05")  # other CDR times
    (tmp_path / f"{stem}.raw").write_bytes(raw)
    shutil.copy(FIXTURES / f"{stem}.sent", tmp_path / f"{stem}.sent")
    derived = scripts.dump(generator.derive("busy", tmp_path))
    committed = (DATA / "busy.json").read_text(encoding="utf-8")
    assert derived != committed
    assert derived == committed.replace("User busy", "Very busy")


def test_no_concrete_call_value_is_left() -> None:
    for path in DATA.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"1795771\d{3}", text), path.name  # the captures' epoch
        assert "2026-11-27" not in text, path.name  # their CDR dates
        assert not re.search(r"@test-[0-9a-f]{8}", text), path.name  # their channel names
        assert "orig-03-" not in text, path.name  # their ActionIDs
        assert "AMI Test" not in text, path.name  # the caller name is per call


def _values(script: CallScript) -> list[str]:
    out: list[str] = [script.dial]
    for step in script.steps:
        if isinstance(step, EventStep):
            out += [value for _, value in step.snapshot]
            out += [h[1] for h in step.headers if not isinstance(h, SnapshotRef)]
    return out


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_package_data_loads_and_round_trips(outcome: str) -> None:
    script = scripts.load(outcome)
    assert script.outcome == outcome
    assert script.capture == f"03-originate-{generator.CAPTURES[outcome]}.exporter.raw"
    assert "do not edit" in script.generated
    text = (DATA / f"{outcome}.json").read_text(encoding="utf-8")
    assert scripts.parse(text) == script
    assert scripts.dump(script) == text
    used = {
        field
        for value in _values(script)
        for _, field, _, _ in string.Formatter().parse(value)
        if field is not None
    }
    assert used <= PLACEHOLDERS


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[]", "expected an object"),
        ('{"outcome": "busy", "capture": "x", "dial": "y", "steps": [{"wait": "soon"}]}', "wait"),
        (
            '{"outcome": "busy", "capture": "x", "dial": "y",'
            ' "steps": [{"event": "E", "privilege": "call,all", "half": 3}]}',
            "half",
        ),
        (
            '{"outcome": "busy", "capture": "x", "dial": "y",'
            ' "steps": [{"event": "E", "privilege": "call,all", "headers": [["K"]]}]}',
            "bad header",
        ),
    ],
)
def test_parse_rejects_other_shapes(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        scripts.parse(text)


def _capture_call(name: str) -> tuple[list[Message], dict[str, str]]:
    """A 03 capture's call events and the values the simulator would have given that call."""
    messages = AMIParser(expect_banner=True).feed((FIXTURES / name).read_bytes())
    start = next(
        i for i, m in enumerate(messages) if m.get("Message") == "Originate successfully queued"
    )
    events = [m for m in messages[start + 1 :] if m.kind == "event"]
    values = {"aid": messages[start]["ActionID"], "cidname": "AMI Test"}
    for m in events:
        if m.name == "Newchannel":
            half = m["Channel"][-1]
            values["c" + half], values["u" + half] = m["Channel"], m["Uniqueid"]
        elif m.name == "Cdr":
            values |= {"start": m["StartTime"], "end": m["EndTime"], "answer": m["AnswerTime"]}
            values |= {"dur": m["Duration"], "bill": m["BillableSeconds"]}
        elif m.name == "Newexten" and m["Application"] == "Wait" and m["Channel"][-2:] == ";2":
            values["hold"] = m["AppData"]
    return events, values


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_compiled_script_replays_its_capture_exactly(outcome: str) -> None:
    script = templates.compiled(profiles.PROFILES["22"])[outcome]
    events, values = _capture_call(scripts.load(outcome).capture)
    replayed = [
        step.template.format_map(values).encode() for phase in script.phases for step in phase.steps
    ]
    assert replayed == [serialize(m) for m in events]
    waits = [phase.wait for phase in script.phases]
    assert waits == {
        "answered": ["", "ring", "hold"],
        "failed_originate": [""],
    }.get(outcome, ["", "ring"])
