"""Call scripts compiled into one Asterisk version's ready-to-format event templates.

A :class:`~ami_simulator.scripts.CallScript` says what the captured Asterisk 22 sent; this
module expands its snapshots, runs each event through the version profile's rewriting
(:func:`ami_simulator.profiles.rewrite_event`) and serialises it once, so that a simulated call
costs one ``str.format_map`` per event. Compiled scripts are cached per profile. The timing of a
call (which phase runs when) is :mod:`ami_simulator.calls`' business.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ami_exporter.ami.protocol import serialize
from ami_simulator import profiles, scripts
from ami_simulator.scripts import SNAPSHOT_KEYS, CallScript, EventStep, SnapshotRef

__all__ = ["Effect", "Phase", "Script", "Step", "compiled", "pairs_text"]

Pairs = list[tuple[str, str]]
Action = Literal["add", "update", "remove"]


@dataclass(frozen=True, slots=True)
class Effect:
    """How an event changes the live channels, so that set always matches the events sent."""

    half: int
    action: Action
    snapshot: str  # the half's snapshot block, as a template
    application: str  # its Application and ApplicationData lines (CoreShowChannel), a template


@dataclass(frozen=True, slots=True)
class Step:
    """One event: its class (for event masks) and its text with placeholders."""

    cls: str
    template: str  # "" for an event this version lacks (its effects still apply)
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Phase:
    wait: str  # "" (start at once), "ring", "hold", "pdd" or "queue": what to wait before it
    steps: tuple[Step, ...]
    # Media reports sent every RTCP interval from this phase on, until the call hangs up.
    reports: tuple[Step, ...] = ()
    queue: str = ""  # "join" or "leave": the phase puts the caller in or out of the queue


@dataclass(frozen=True, slots=True)
class Script:
    outcome: str
    dial: str  # the Originate's Channel; the call's channels are named after it
    phases: tuple[Phase, ...]
    uses_channels: bool


_ACTIONS: Final[dict[str, Action]] = {"Newchannel": "add", "Hangup": "remove"}


def pairs_text(pairs: Sequence[tuple[str, str]]) -> str:
    """Header lines without the closing blank line: a fragment of a message."""
    return serialize(pairs).decode("utf-8", "surrogateescape")[:-2]


@functools.cache
def compiled(profile: profiles.Profile) -> dict[str, Script]:
    """Every outcome's script in ``profile``'s dialect (compiled once per profile)."""
    return {outcome: compile_script(script, profile) for outcome, script in _raw().items()}


@functools.cache
def _raw() -> dict[str, CallScript]:
    return scripts.load_all()


@functools.cache
def compiled_pjsip(profile: profiles.Profile) -> dict[str, Script]:
    """Every PJSIP trunk script in ``profile``'s dialect (compiled once per profile)."""
    return {
        name: compile_script(scripts.load_pjsip(name), profile) for name in scripts.PJSIP_SCRIPTS
    }


class _Compiler:
    """Walks one script, keeping each half's snapshot and dialplan application."""

    def __init__(self, script: CallScript, profile: profiles.Profile) -> None:
        self.script = script
        self.profile = profile
        self.snapshots: dict[int, dict[str, str]] = {}
        self.applications: dict[int, tuple[str, str]] = {}

    def phases(self) -> tuple[Phase, ...]:
        phases: list[Phase] = []
        steps: list[Step] = []
        reports: list[Step] = []
        wait = ""
        for step in self.script.steps:
            if isinstance(step, scripts.Wait):
                phases.append(self._phase(wait, steps, reports))
                steps, reports, wait = [], [], step.until
            elif step.repeat:
                reports += self._event(step)
            else:
                steps += self._event(step)
        phases.append(self._phase(wait, steps, reports))
        return tuple(phases)

    @staticmethod
    def _phase(wait: str, steps: list[Step], reports: list[Step]) -> Phase:
        names = {step.template[7 : step.template.find("\r")] for step in steps}
        queue = (
            "leave" if "QueueCallerLeave" in names else "join" if "QueueCallerJoin" in names else ""
        )
        return Phase(wait, tuple(steps), tuple(reports), queue)

    def _event(self, step: EventStep) -> list[Step]:
        pairs: Pairs = [("Event", step.event), ("Privilege", step.privilege)]
        effects: tuple[Effect, ...] = ()
        if step.half is not None:
            snapshot = self._snapshot(step.half, step)
            pairs += snapshot
            effects = (self._effect(step.half, step.event, snapshot),)
        pairs += self._expand(step.headers)
        rewritten = profiles.rewrite_event(self.profile, self.script.outcome, step.event, pairs)
        if not rewritten:  # an event this version lacks: its channel effects still apply
            return [Step(step.privilege.split(",")[0], "", effects)]
        out: list[Step] = []
        for event_pairs in rewritten:
            template = serialize(event_pairs).decode("utf-8", "surrogateescape")
            cls = dict(event_pairs).get("Privilege", step.privilege).split(",")[0]
            out.append(Step(cls, template, effects))
            effects = ()  # one event of several carries them
        return out

    def _snapshot(self, half: int, step: EventStep) -> Pairs:
        """The half's whole snapshot after this event's changes."""
        state = self.snapshots.setdefault(half, {})
        state.update(step.snapshot)
        if step.event == "Newexten":
            values = dict(pair for pair in step.headers if isinstance(pair, tuple))
            self.applications[half] = (values["Application"], values["AppData"])
        return [(key, state[key]) for key in SNAPSHOT_KEYS]

    def _effect(self, half: int, event: str, snapshot: Pairs) -> Effect:
        app, data = self.applications.get(half, ("", ""))
        application = pairs_text([("Application", app), ("ApplicationData", data)])
        return Effect(half, _ACTIONS.get(event, "update"), pairs_text(snapshot), application)

    def _expand(self, headers: Sequence[scripts.Header]) -> Pairs:
        out: Pairs = []
        for header in headers:
            if isinstance(header, SnapshotRef):
                state = self.snapshots[header.half]
                out += [(header.prefix + key, state[key]) for key in SNAPSHOT_KEYS]
            else:
                out.append(header)
        return out


def compile_script(script: CallScript, profile: profiles.Profile) -> Script:
    """One script as ``profile``'s event templates, cut into phases at its waits."""
    phases = _Compiler(script, profile).phases()
    uses_channels = any(isinstance(s, EventStep) and s.half is not None for s in script.steps)
    return Script(script.outcome, script.dial, phases, uses_channels)
