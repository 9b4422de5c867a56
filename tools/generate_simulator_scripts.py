#!/usr/bin/env python3
"""Generate the simulator's call scripts from the real Asterisk captures.

Usage::

    python3 tools/generate_simulator_scripts.py           # (re)write src/ami_simulator/scripts/
    python3 tools/generate_simulator_scripts.py --check   # exit 1 if a file is not up to date

For each outcome the simulator knows, this reads one capture pair of ``tests/fixtures``
(``03-originate-<ext>.exporter.raw`` and ``.sent``: what Asterisk 22.10.1 sent and what the
client sent for one async ``Originate``) and writes ``src/ami_simulator/scripts/<outcome>.json``
in the format documented in :mod:`ami_simulator.scripts`:

* the call's events are every event after the Originate's ``Response`` (found by its
  ``ActionID``), in the capture's order;
* the call's own values become placeholders: the two Local halves' channel names and Uniqueids
  (from their ``Newchannel``) wherever a header holds one, the Originate's ``ActionID``, the
  caller name of its ``CallerID`` (also inside other values), the ``Cdr`` times and durations,
  and the argument of the dialled extension's ``Wait()``; literal braces are doubled;
* a channel event (one whose headers after ``Privilege`` are the snapshot block) keeps only the
  snapshot values it changes, and a prefixed snapshot block in another event (``Dest...``,
  ``LocalOne...``) that equals that half's current snapshot becomes a reference to it;
* the call waits ``ring`` after ``LocalBridge`` (the Local pair is up and its ``;2`` half starts
  the dialled extension, whose reaction follows) and ``hold`` after the ``;2`` half's ``Wait()``.

The generator checks that no concrete per-call value is left over. Run it after changing a rule
here or the format; ``tests/test_simulator_scripts.py`` fails while the committed files differ
from what it generates.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's packages, whatever is installed

from ami_exporter.ami.protocol import AMIParser, Message  # noqa: E402
from ami_simulator.scripts import (  # noqa: E402
    OUTCOMES,
    SNAPSHOT_KEYS,
    CallScript,
    EventStep,
    Header,
    SnapshotRef,
    Step,
    Wait,
    dump,
)

FIXTURES: Final = ROOT / "tests" / "fixtures"
OUT: Final = ROOT / "src" / "ami_simulator" / "scripts"

# The capture of each outcome: 03-originate-<this>.exporter.{raw,sent} (tests/fixtures/README.md).
CAPTURES: Final = {
    "answered": "100",
    "busy": "200",
    "congestion": "300",
    "no_answer": "600",
    "unallocated": "400",
    "rejected": "720",
    "failed_originate": "invalid-tech",
}

GENERATED: Final = (
    "by tools/generate_simulator_scripts.py from tests/fixtures/{capture}; do not edit by hand"
)

# Cdr keys that hold the call's times: always placeholders, except an empty AnswerTime (a call
# never answered), which stays empty.
_CDR_TIMES: Final = {
    "StartTime": "start",
    "AnswerTime": "answer",
    "EndTime": "end",
    "Duration": "dur",
    "BillableSeconds": "bill",
}


class _Call:
    """The concrete values of one captured call and how each becomes a placeholder."""

    def __init__(self, originate: Message, events: Sequence[Message]) -> None:
        action_id = _required(originate, "ActionID")
        self.exact: dict[str, str] = {action_id: "{aid}"}  # concrete value -> placeholder
        self.halves: dict[str, int] = {}  # concrete channel name -> half
        for event in events:
            if event.name == "Newchannel":
                channel = _required(event, "Channel")
                half = _half_of(channel)
                self.halves[channel] = half
                self.exact[channel] = f"{{c{half}}}"
                self.exact[_required(event, "Uniqueid")] = f"{{u{half}}}"
        match = re.fullmatch(r'"(.*)" <.*>', _required(originate, "CallerID"))
        self.caller_name = match.group(1) if match else ""
        # The distinctive values replaced, for the leftover check (not durations: "0", "1").
        self.replaced: set[str] = set(self.exact)

    def template(self, event: Message, half: int | None, key: str, value: str) -> str:
        """The template of one header value of ``event``."""
        if event.name == "Cdr" and key in _CDR_TIMES and (value or key != "AnswerTime"):
            if key.endswith("Time"):  # durations are small numbers, found everywhere
                self.replaced.add(value)
            return f"{{{_CDR_TIMES[key]}}}"
        if _is_hold(event, half) and key == "AppData":
            return "{hold}"
        if value in self.exact:
            return self.exact[value]
        text = _escape(value)
        if self.caller_name:
            text = text.replace(_escape(self.caller_name), "{cidname}")
        return text


def _is_hold(event: Message, half: int | None) -> bool:
    """The dialled extension's ``Wait()``: the ``;2`` half runs that extension."""
    return event.name == "Newexten" and half == 2 and event.get("Application") == "Wait"


class _Scripter:
    """Turns a call's events into steps, keeping each half's snapshot as the events change it."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.snapshots: dict[int, dict[str, str]] = {}

    def steps(self, events: Iterable[Message]) -> list[Step]:
        out: list[Step] = []
        for event in events:
            half = self._channel_half(event)
            out.append(self._event(event, half))
            if event.name == "LocalBridge":
                out.append(Wait("ring"))
            elif _is_hold(event, half):
                out.append(Wait("hold"))
        return out

    def _channel_half(self, event: Message) -> int | None:
        """The half a channel event is about, or None if it does not start with a snapshot."""
        keys = [key for key, _ in event.headers[2 : 2 + len(SNAPSHOT_KEYS)]]
        if keys != list(SNAPSHOT_KEYS):
            return None
        return self.call.halves.get(event.headers[2][1])

    def _event(self, event: Message, half: int | None) -> EventStep:
        head = [key for key, _ in event.headers[:2]]
        if head != ["Event", "Privilege"]:
            raise ValueError(f"{event.name}: expected Event and Privilege first, got {head}")
        pairs = [(k, self.call.template(event, half, k, v)) for k, v in event.headers[2:]]
        changed: tuple[tuple[str, str], ...] = ()
        if half is not None:
            block, pairs = pairs[: len(SNAPSHOT_KEYS)], pairs[len(SNAPSHOT_KEYS) :]
            state = self.snapshots.setdefault(half, {})
            changed = tuple((k, v) for k, v in block if state.get(k) != v)
            state.update(block)
        privilege = _required(event, "Privilege")
        return EventStep(event.name, privilege, tuple(self._headers(pairs)), half, changed)

    def _headers(self, pairs: list[tuple[str, str]]) -> list[Header]:
        out: list[Header] = []
        i = 0
        while i < len(pairs):
            ref = self._snapshot_ref(pairs[i : i + len(SNAPSHOT_KEYS)])
            if ref is None:
                out.append(pairs[i])
                i += 1
            else:
                out.append(ref)
                i += len(SNAPSHOT_KEYS)
        return out

    def _snapshot_ref(self, block: list[tuple[str, str]]) -> SnapshotRef | None:
        """A prefixed copy of a half's current snapshot (``DestChannel``...), else None."""
        first = block[0][0] if block else ""
        if not first.endswith("Channel") or first == "Channel":
            return None
        prefix = first.removesuffix("Channel")
        if [key for key, _ in block] != [prefix + key for key in SNAPSHOT_KEYS]:
            return None
        for half, state in self.snapshots.items():
            if block == [(prefix + key, state.get(key)) for key in SNAPSHOT_KEYS]:
                return SnapshotRef(half, prefix)
        return None


def _escape(value: str) -> str:
    return value.replace("{", "{{").replace("}", "}}")


def _half_of(channel: str) -> int:
    if channel.endswith((";1", ";2")):
        return int(channel[-1])
    raise ValueError(f"not a Local channel half: {channel!r}")


def _required(message: Message, key: str) -> str:
    value = message.get(key)
    if value is None:
        raise ValueError(f"{message.name}: no {key}")
    return value


def _originate(sent: bytes) -> Message:
    for message in AMIParser(expect_banner=False).feed(sent):
        if message.kind == "action" and message.name.lower() == "originate":
            return message
    raise ValueError("no Originate action in the client's stream")


def _call_events(raw: bytes, action_id: str) -> list[Message]:
    """The events after the Originate's response, in the capture's order."""
    messages = AMIParser(expect_banner=True).feed(raw)
    for i, message in enumerate(messages):
        if message.kind == "response" and message.get("ActionID") == action_id:
            return [m for m in messages[i + 1 :] if m.kind == "event"]
    raise ValueError(f"no response to the Originate {action_id!r}")


def _check_leftovers(script: CallScript, call: _Call) -> None:
    """No concrete per-call value may survive: the simulator could not vary it."""
    text = dump(script)
    for value in sorted(call.replaced):
        if value and re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text):
            raise ValueError(f"{script.outcome}: per-call value {value!r} left in the script")


def derive(outcome: str, fixtures: Path = FIXTURES) -> CallScript:
    """The script of ``outcome``, derived from its capture in ``fixtures``."""
    stem = f"03-originate-{CAPTURES[outcome]}.exporter"
    originate = _originate((fixtures / f"{stem}.sent").read_bytes())
    events = _call_events((fixtures / f"{stem}.raw").read_bytes(), _required(originate, "ActionID"))
    call = _Call(originate, events)
    script = CallScript(
        outcome=outcome,
        capture=f"{stem}.raw",
        dial=_required(originate, "Channel"),
        steps=tuple(_Scripter(call).steps(events)),
        generated=GENERATED.format(capture=f"{stem}.raw"),
    )
    _check_leftovers(script, call)
    return script


def generate(fixtures: Path = FIXTURES) -> dict[str, str]:
    """File name -> JSON text, for every outcome."""
    return {f"{outcome}.json": dump(derive(outcome, fixtures)) for outcome in OUTCOMES}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="the captures' folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where the scripts go")
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    args = parser.parse_args(argv)
    files = generate(args.fixtures)
    out: Path = args.out
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (out / name).is_file() or (out / name).read_bytes() != text.encode()
        ]
        for name in stale:
            print(f"{out / name}: not what the generator makes; run {Path(__file__).name}")
        return 1 if stale else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_bytes(text.encode())
    print(f"wrote {len(files)} scripts to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
