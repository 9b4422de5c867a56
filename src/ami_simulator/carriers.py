"""The state of a simulated Asterisk 22's PJSIP carriers, registration and queue, and the
package data (from the captures) that says how Asterisk words them.

:mod:`ami_simulator.trunks` changes this state as calls and flaps happen;
:mod:`ami_simulator.pjsip_actions` answers the list actions from it. The data files are
``ami_simulator/scripts/pjsip/answers.json`` and ``events.json``, written by
``tools/generate_pjsip_scripts.py`` from ``tests/fixtures/pjsip``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Final

from ami_simulator.calls import Call

__all__ = [
    "AGENTS",
    "QUEUE",
    "Carrier",
    "Pairs",
    "QueueState",
    "Registration",
    "answers",
    "fill",
    "recorded_events",
    "trunk_names",
]

Pairs = list[tuple[str, str]]

QUEUE: Final = "support"  # the captures' queue and its two static members
AGENTS: Final = (("Agent One", "Local/agent1@agents"), ("Agent Two", "Local/agent2@agents"))


def trunk_names(count: int) -> list[str]:
    """``carrier``, ``carrier2``, ``carrier3``... as the captures name their two carriers."""
    return ["carrier" if i == 0 else f"carrier{i + 1}" for i in range(count)]


@dataclass(slots=True)
class Carrier:
    """One PJSIP endpoint with a static, qualified AOR contact, and its seeded quality."""

    name: str
    port: int
    pdd: float  # post-dial delay factor: a call's is uniform 0.3-4 s times this
    loss: float  # mean fraction of packets lost, each way
    jitter: float  # mean interarrival jitter, seconds
    rtt: float  # media round trip, seconds
    reachable: bool = True
    rtt_usec: int = 1000  # the qualify round trip

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"


@dataclass(slots=True)
class Registration:
    """The outbound registration ``regtrunk`` of the captures."""

    name: str = "regtrunk"
    client_uri: str = "sip:lab@127.0.0.1:5074"
    server_uri: str = "sip:127.0.0.1:5074"
    registered: bool = True


@dataclass(slots=True)
class QueueState:
    """The queue's callers now and its counters, as QueueStatus/QueueSummary report them."""

    callers: list[tuple[Call, float]] = field(default_factory=list)  # (call, joined at)
    completed: int = 0
    abandoned: int = 0
    holdtime: int = 0  # Asterisk keeps running averages; these are of the last call
    talktime: int = 0


def _load(name: str) -> dict[str, object]:
    text = resources.files("ami_simulator").joinpath("scripts", "pjsip", name)
    data = json.loads(text.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected an object")
    return data


def _pairs(value: object) -> Pairs:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of pairs, got {value!r}")
    return [(str(k), str(v)) for k, v in value]


def _table(data: dict[str, object], key: str) -> dict[str, Pairs]:
    table = data.get(key)
    if not isinstance(table, dict):
        raise ValueError(f"{key}: expected an object")
    return {str(name): _pairs(value) for name, value in table.items()}


@dataclass(frozen=True, slots=True)
class Answers:
    """``answers.json``: the recorded ListCommands table, responses, errors and list items."""

    list_commands: Pairs
    responses: dict[str, Pairs]
    errors: dict[str, Pairs]
    items: dict[str, Pairs]


@functools.cache
def answers() -> Answers:
    data = _load("answers.json")
    return Answers(
        list_commands=_pairs(data.get("list_commands")),
        responses=_table(data, "responses"),
        errors=_table(data, "errors"),
        items=_table(data, "items"),
    )


@functools.cache
def recorded_events() -> dict[str, Pairs]:
    """``events.json``: ``"<Event>:<state>"`` -> the recorded event's headers."""
    return _table(_load("events.json"), "events")


def fill(template: Pairs, action_id: str | None, values: dict[str, str]) -> Pairs:
    """A recorded message's headers with ``values`` put in by key and the request's ActionID
    (dropped when the request had none), in the recorded order."""
    out: Pairs = []
    for key, value in template:
        if key == "ActionID":
            if action_id is not None:
                out.append((key, action_id))
        else:
            out.append((key, values.get(key, value)))
    return out
