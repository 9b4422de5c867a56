"""The simulator's PJSIP trunk data: generated from the Asterisk 22 captures, checked against them.

``src/ami_simulator/scripts/pjsip/*.json`` must be exactly what ``tools/generate_pjsip_scripts.py``
makes from ``tests/fixtures/pjsip``; each compiled script, filled in with its captured call's
own values, must give back that call's events byte for byte; the outcome table (dialled prefix
-> Hangup Cause/TechCause, DialEnd, OriginateResponse) and the ListCommands lists are computed
here from the raw capture bytes, without the project's parser.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import string
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from ami_simulator import profiles, scripts, templates
from ami_simulator.pjsip_actions import allowed_actions
from ami_simulator.scripts import PJSIP_PLACEHOLDERS, PJSIP_SCRIPTS, EventStep, SnapshotRef

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "pjsip"
TOOL = ROOT / "tools" / "generate_pjsip_scripts.py"
DATA = ROOT / "src" / "ami_simulator" / "scripts" / "pjsip"
PREFIXES = ("486", "503", "404", "480", "603", "180", "2", "3", "7")
SCRIPT_OF_PREFIX = {
    "2": "answered",
    "3": "answered_local_bye",
    "486": "busy",
    "503": "congestion",
    "404": "not_found",
    "480": "unavailable",
    "603": "declined",
    "180": "ring_out",
}


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_pjsip_scripts", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


generator = _load_tool()


# -- raw capture reading, independent of the project's parser ---------------------------------


def raw(name: str) -> bytes:
    data = (FIXTURES / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def split(data: bytes, banner: bool = True) -> list[list[tuple[str, str]]]:
    """Messages as header pairs: banner line off, split on blank lines, ``Key: Value``."""
    text = data.decode("utf-8", "surrogateescape")
    if banner:
        text = text.split("\r\n", 1)[1]
    out = []
    for block in text.split("\r\n\r\n"):
        if block.strip():
            out.append([tuple(line.split(": ", 1)) for line in block.split("\r\n")])
    return out


def first(pairs: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in pairs if k == key), None)


def outcome_table() -> dict[str, set[tuple[object, ...]]]:
    """Per dialled prefix of a directly originated PJSIP call in trunk-mix: (Hangup Cause,
    TechCause, DialEnd DialStatus or None, OriginateResponse Response, Reason)."""
    events = split(raw("trunk-mix.listener.raw.gz"))
    calls: dict[str, dict[str, object]] = {}
    for m in events:
        dest, dialstring = first(m, "DestChannel") or "", first(m, "DialString") or ""
        direct = first(m, "Channel") is None  # originated, not dialled by app_dial
        if first(m, "Event") == "DialBegin" and direct and dest.startswith("PJSIP/"):
            prefix = next(p for p in PREFIXES if dialstring.startswith(p))
            calls[dest] = {"prefix": prefix, "originate": "PJSIP/" + dialstring, "dial": None}
    for m in events:
        name, channel = first(m, "Event"), first(m, "Channel") or first(m, "DestChannel")
        if name == "DialEnd" and channel in calls:
            calls[channel]["dial"] = first(m, "DialStatus")
        elif name == "Hangup" and channel in calls:
            calls[channel]["hangup"] = (first(m, "Cause"), first(m, "TechCause"))
        elif name == "OriginateResponse":
            for dest, call in calls.items():
                if first(m, "Channel") in (dest, call["originate"]):
                    call["or"] = (first(m, "Response"), first(m, "Reason"))
    table: dict[str, set[tuple[object, ...]]] = defaultdict(set)
    for call in calls.values():
        table[str(call["prefix"])].add((call["hangup"], call["dial"], call["or"]))
    return dict(table)


# -- the generated files ----------------------------------------------------------------------


def test_committed_files_are_what_the_generator_makes() -> None:
    files = generator.generate()
    expected = {f"{name}.json" for name in PJSIP_SCRIPTS} | {"answers.json", "events.json"}
    assert set(files) == expected
    assert {p.name for p in DATA.glob("*.json")} == expected
    for name, text in files.items():
        assert (DATA / name).read_bytes() == text.encode(), (
            f"{name} is stale: run python3 tools/generate_pjsip_scripts.py"
        )


def test_scripts_are_derived_from_the_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed header in the capture changes that script, and only by that header."""
    shutil.copytree(FIXTURES, tmp_path / "pjsip")
    mix = tmp_path / "pjsip" / "trunk-mix.listener.raw.gz"
    changed = raw("trunk-mix.listener.raw.gz").replace(b"Cause-txt: User busy", b"Cause-txt: Busy!")
    mix.write_bytes(gzip.compress(changed))
    monkeypatch.setattr(generator, "FIXTURES", tmp_path / "pjsip")
    files = generator.generate()
    for name, text in files.items():
        committed = (DATA / name).read_text(encoding="utf-8")
        if name == "busy.json":
            assert text == committed.replace("User busy", "Busy!") != committed
        else:
            assert text == committed, name


def _values(script: scripts.CallScript) -> list[str]:
    out: list[str] = [script.dial]
    for step in script.steps:
        if isinstance(step, EventStep):
            out += [value for _, value in step.snapshot]
            out += [h[1] for h in step.headers if not isinstance(h, SnapshotRef)]
    return out


@pytest.mark.parametrize("name", PJSIP_SCRIPTS)
def test_scripts_load_round_trip_and_use_known_placeholders(name: str) -> None:
    script = scripts.load_pjsip(name)
    text = (DATA / f"{name}.json").read_text(encoding="utf-8")
    assert scripts.parse(text) == script
    assert scripts.dump(script) == text
    assert "do not edit" in script.generated
    used = {
        field
        for value in _values(script)
        for _, field, _, _ in string.Formatter().parse(value)
        if field is not None
    }
    assert used <= PJSIP_PLACEHOLDERS
    # No concrete value of the captured call is left: its epoch, channel names, CDR dates.
    assert "17961" not in text
    assert "PJSIP/carrier-0" not in text
    assert "2026-12-01" not in text


# -- replaying the captured calls -------------------------------------------------------------


def _captured_call(name: str) -> tuple[list[list[tuple[str, str]]], dict[str, str]]:
    """The events of the call the script was made from, and the values it had."""
    found = generator.find(generator.CALLS[name])
    events = [list(m.headers) for m in found.events]
    values = {"c1": found.channel, "u1": found.uniqueid, "num": found.number}
    values |= {"trunk": found.endpoint, "cidname": "lab", "qpos": "", "qleft": ""}
    for m in events:
        event = first(m, "Event")
        if event == "OriginateResponse":
            values["aid"] = first(m, "ActionID") or ""
        elif event == "Cdr":
            values |= {"start": first(m, "StartTime"), "end": first(m, "EndTime")}
            values |= {"answer": first(m, "AnswerTime"), "dur": first(m, "Duration")}
            values["bill"] = first(m, "BillableSeconds") or ""
        elif event == "QueueCallerJoin":
            values |= {"qpos": first(m, "Position"), "qcount": first(m, "Count")}
        elif event == "QueueCallerLeave":
            values["qleft"] = first(m, "Count") or ""
        elif event in ("AgentConnect", "QueueCallerAbandon"):
            values["qhold"] = first(m, "HoldTime") or ""
        elif event == "AgentComplete":
            values["talk"] = first(m, "TalkTime") or ""
        elif event == "AgentCalled":
            values |= {"agent_c": first(m, "DestChannel"), "agent_u": first(m, "DestUniqueid")}
            values |= {"agent_if": first(m, "Interface"), "agent_name": first(m, "MemberName")}
    return events, values


def _serialize(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in pairs) + b"\r\n"


@pytest.mark.parametrize("name", [n for n in PJSIP_SCRIPTS if n != "trunk_down"])
def test_compiled_script_replays_its_captured_call(name: str) -> None:
    """Every event but the RTCP reports, in order and byte for byte; the first report of each
    kind from the call itself, likewise (an outbound call's RTCPReceived is borrowed)."""
    script = templates.compiled_pjsip(profiles.PROFILES["22"])[name]
    events, values = _captured_call(name)
    replayed = [
        step.template.format_map(values).encode() for phase in script.phases for step in phase.steps
    ]
    rtcp = ("RTCPSent", "RTCPReceived")
    assert replayed == [_serialize(m) for m in events if first(m, "Event") not in rtcp]
    reports = {s.template[7 : s.template.find("\r")]: s for p in script.phases for s in p.reports}
    for kind, step in reports.items():
        mine = next((m for m in events if first(m, "Event") == kind), None)
        if mine is None:
            continue  # borrowed from the call into Asterisk itself
        keys = generator._RTCP[kind]
        report = values | {keys[k]: v for k, v in mine if k in keys}
        assert step.template.format_map(report).encode() == _serialize(mine)


def test_outcome_mapping_equals_the_capture() -> None:
    """Each carrier behaviour's Hangup Cause/TechCause, DialEnd and OriginateResponse are the
    capture's for that dialled prefix (every prefix gave one combination only)."""
    table = outcome_table()
    assert set(SCRIPT_OF_PREFIX) <= set(table)
    compiled = templates.compiled_pjsip(profiles.PROFILES["22"])
    values = defaultdict(str, c1="PJSIP/carrier-00000001", u1="1.1")
    for prefix, name in SCRIPT_OF_PREFIX.items():
        got: dict[str, list[tuple[str, str]]] = {}
        for phase in compiled[name].phases:
            for step in phase.steps:
                (message,) = split(step.template.format_map(values).encode(), banner=False)
                got.setdefault(first(message, "Event") or "", message)
        hangup = (first(got["Hangup"], "Cause"), first(got["Hangup"], "TechCause"))
        dial = first(got["DialEnd"], "DialStatus") if "DialEnd" in got else None
        originate = got["OriginateResponse"]
        result = (hangup, dial, (first(originate, "Response"), first(originate, "Reason")))
        assert table[prefix] == {result}, prefix


def test_list_commands_tables_are_the_recorded_ones() -> None:
    """What ListCommands lists for a user's write classes equals what Asterisk listed for the
    captures' exporter (system,call,reporting,originate) and leastpriv (reporting) users."""
    for user, write in (
        ("exporter", "system,call,reporting,originate"),
        ("leastpriv", "reporting"),
    ):
        (answer,) = [m for m in split(raw(f"answers.{user}.raw")) if first(m, "ActionID") == "a-0"]
        assert allowed_actions(frozenset(write.split(","))) == answer[2:], user


def test_clean_stream_mes_is_the_captured_one() -> None:
    """Asterisk's MES for a loss-free stream with no jitter is what every captured report
    says; losses lower it, twice per packet lost in the report's interval, as Asterisk's."""
    from ami_simulator.trunks import mes

    captured = {
        first(m, "MES")
        for m in split(raw("trunk-mix.listener.raw.gz"))
        if (first(m, "Event") or "").startswith("RTCP") and first(m, "Report0CumulativeLost") == "0"
    }
    assert captured == {f"{mes(0, 0.0, 0.0):.1f}"}
    assert mes(5, 0.0, 0.0) < mes(1, 0.0, 0.0) < mes(0, 0.0, 0.0)
    assert 0.0 <= mes(500, 0.1, 2.0) <= 100.0
