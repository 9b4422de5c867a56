"""Call scripts: what one originated call of each outcome sends, as data files.

A call script is the event stream of one real ``Originate`` (the captures
``tests/fixtures/03-originate-*.exporter.raw``) with the call's own values turned into
placeholders. The scripts are package data, ``ami_simulator/scripts/<outcome>.json``, written
by ``tools/generate_simulator_scripts.py`` from the captures and read here at run time with
:mod:`importlib.resources`; nothing here reads a capture. This module holds the format (the
dataclasses below and their JSON, both ways) and nothing about timing, sessions or versions:
:mod:`ami_simulator.templates` compiles a script into one Asterisk version's event templates.

The format, one JSON object per file::

    {
      "generated": "<how it was made; do not edit by hand>",
      "outcome": "busy",                       # one of OUTCOMES
      "capture": "03-originate-200.exporter.raw",
      "dial": "Local/200@test",                # the Originate's Channel
      "steps": [ <step>, ... ]                 # in the capture's order
    }

A step is one of:

* ``{"wait": "ring"}`` or ``{"wait": "hold"}``: here the call waits ``ring_time`` (the far
  end rings) or the answered call's hold time; the PJSIP trunk scripts also wait ``"pdd"``
  (the carrier's post-dial delay, before its first answer) and ``"queue"`` (a caller waiting
  in a queue for an agent);
* an event: ``{"event": "Hangup", "privilege": "call,all", "headers": [...]}``, its headers
  after ``Event`` and ``Privilege``. A channel event (one that starts with the snapshot block of
  ``SNAPSHOT_KEYS``) also has ``"half"``: 1 or 2, the ``;1`` or ``;2`` half of the Local channel
  it is about, and ``"snapshot"``: the snapshot keys whose values change with it (all of them on
  the half's first event), as ``[key, value]`` pairs. The simulator keeps each half's snapshot
  and sends it whole before ``headers``.

An event with ``"repeat": true`` is a media report (``RTCPSent``/``RTCPReceived``): it is sent
every RTCP interval from there on until the channel hangs up, not once.

The PJSIP trunk scripts (``ami_simulator/scripts/pjsip/<name>.json``, written by
``tools/generate_pjsip_scripts.py`` from ``tests/fixtures/pjsip``) have one channel, ``half``
1, and more placeholders (:data:`PJSIP_PLACEHOLDERS`).

A header is ``[key, value]``, or ``{"snapshot": 1, "prefix": "Dest"}``: the current snapshot of
that half with every key prefixed (``DestChannel``, ``LocalOneUniqueid``...).

Values are :meth:`str.format` templates: ``{{`` and ``}}`` are literal braces, and these
placeholders are the per-call values: ``{c1}`` ``{c2}`` the halves' channel names, ``{u1}``
``{u2}`` their Uniqueids, ``{aid}`` the Originate's ActionID, ``{cidname}`` the caller name,
``{start}`` ``{answer}`` ``{end}`` ``{dur}`` ``{bill}`` the CDR times, ``{hold}`` the answered
call's ``Wait()`` argument.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

__all__ = [
    "OUTCOMES",
    "PJSIP_PLACEHOLDERS",
    "PJSIP_SCRIPTS",
    "PLACEHOLDERS",
    "SNAPSHOT_KEYS",
    "WAITS",
    "CallScript",
    "EventStep",
    "Header",
    "SnapshotRef",
    "Step",
    "Wait",
    "dump",
    "load",
    "load_all",
    "load_pjsip",
    "parse",
]

# One script per outcome, in this order (the traffic mix and the stats are keyed by it).
OUTCOMES: Final = (
    "answered",
    "busy",
    "congestion",
    "no_answer",
    "unallocated",
    "rejected",
    "failed_originate",
)

# The channel snapshot block shared by every channel event, in Asterisk's header order.
SNAPSHOT_KEYS: Final = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)

PLACEHOLDERS: Final = frozenset(
    {"c1", "c2", "u1", "u2", "aid", "cidname", "start", "answer", "end", "dur", "bill", "hold"}
)

# The PJSIP trunk scripts, by the carrier behaviour of tests/fixtures/pjsip (CAPTURES.md).
PJSIP_SCRIPTS: Final = (
    "answered",
    "answered_local_bye",
    "busy",
    "congestion",
    "not_found",
    "unavailable",
    "declined",
    "ring_out",
    "trunk_down",
    "inbound",
    "queue_answered",
    "queue_abandoned",
)

# Per-call values of the PJSIP scripts beyond PLACEHOLDERS: the dialled number and trunk, the
# RTCP report values (``ami_simulator.trunks``), a queue caller's position, waits and agent.
PJSIP_PLACEHOLDERS: Final = PLACEHOLDERS | frozenset(
    {
        "num",
        "trunk",
        "rtp_far",
        "rtp_near",
        "ssrc_us",
        "ssrc_them",
        "ntp",
        "ntp_them",
        "sent_rtp",
        "sent_pkts",
        "sent_octets",
        "mes_rx",
        "mes_tx",
        "fl_rx",
        "fl_tx",
        "cl_rx",
        "cl_tx",
        "seq_rx",
        "seq_tx",
        "jit_rx",
        "jit_tx",
        "lsr_rx",
        "lsr_tx",
        "dlsr_rx",
        "dlsr_tx",
        "rtt",
        "qpos",
        "qcount",
        "qleft",
        "qhold",
        "talk",
        "agent_c",
        "agent_u",
        "agent_if",
        "agent_name",
    }
)

WaitFor = Literal["ring", "hold", "pdd", "queue"]
WAITS: Final[tuple[WaitFor, ...]] = ("ring", "hold", "pdd", "queue")
Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """The current snapshot of one half, inside another event, every key prefixed."""

    half: int
    prefix: str


Header = Pair | SnapshotRef


@dataclass(frozen=True, slots=True)
class Wait:
    """The call pauses here: ``ring`` (ring_time) or ``hold`` (an answered call's hold time)."""

    until: WaitFor


@dataclass(frozen=True, slots=True)
class EventStep:
    """One event; ``half`` is set for channel events, whose ``snapshot`` are its changes.

    ``repeat``: a media report (RTCP) that the simulator sends again every RTCP interval from
    here until the call's channel hangs up, instead of once."""

    event: str
    privilege: str
    headers: tuple[Header, ...] = ()
    half: int | None = None
    snapshot: tuple[Pair, ...] = ()
    repeat: bool = False


Step = EventStep | Wait


@dataclass(frozen=True, slots=True)
class CallScript:
    outcome: str
    capture: str  # the fixture it was generated from
    dial: str  # the Originate's Channel: Local/<exten>@<context>, or a failing one
    steps: tuple[Step, ...]
    generated: str = ""


# -- reading ----------------------------------------------------------------------------------


def load(outcome: str) -> CallScript:
    """The script of ``outcome`` from the package data."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    text = resources.files("ami_simulator").joinpath("scripts", f"{outcome}.json")
    return parse(text.read_text(encoding="utf-8"))


def load_all() -> dict[str, CallScript]:
    return {outcome: load(outcome) for outcome in OUTCOMES}


def load_pjsip(name: str) -> CallScript:
    """The PJSIP trunk script ``name`` (one of PJSIP_SCRIPTS) from the package data."""
    if name not in PJSIP_SCRIPTS:
        raise ValueError(
            f"unknown PJSIP script {name!r}; expected one of {', '.join(PJSIP_SCRIPTS)}"
        )
    text = resources.files("ami_simulator").joinpath("scripts", "pjsip", f"{name}.json")
    return parse(text.read_text(encoding="utf-8"))


def parse(text: str) -> CallScript:
    """A script from its JSON; ``ValueError`` if it is not in the format above."""
    data = _obj(json.loads(text), "script")
    steps = _list(data.get("steps"), "steps")
    return CallScript(
        outcome=_str(data.get("outcome"), "outcome"),
        capture=_str(data.get("capture"), "capture"),
        dial=_str(data.get("dial"), "dial"),
        steps=tuple(_step(step) for step in steps),
        generated=_str(data.get("generated", ""), "generated"),
    )


def _step(value: object) -> Step:
    data = _obj(value, "step")
    if "wait" in data:
        until = data["wait"]
        for wait in WAITS:
            if until == wait:
                return Wait(wait)
        raise ValueError(f"bad wait {until!r}")
    half = data.get("half")
    return EventStep(
        event=_str(data.get("event"), "event"),
        privilege=_str(data.get("privilege"), "privilege"),
        headers=tuple(_header(h) for h in _list(data.get("headers", []), "headers")),
        half=None if half is None else _half(half),
        snapshot=tuple(_pair(p) for p in _list(data.get("snapshot", []), "snapshot")),
        repeat=data.get("repeat", False) is True,
    )


def _header(value: object) -> Header:
    if isinstance(value, dict):
        return SnapshotRef(_half(value.get("snapshot")), _str(value.get("prefix"), "prefix"))
    return _pair(value)


def _half(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2):
        return value
    raise ValueError(f"bad half {value!r}: 1 or 2")


def _pair(value: object) -> Pair:
    if isinstance(value, list) and len(value) == 2:
        key, val = value
        return _str(key, "header key"), _str(val, "header value")
    raise ValueError(f"bad header {value!r}")


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected an object, got {value!r}")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"{what}: expected a list, got {value!r}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {value!r}")
    return value


# -- writing ----------------------------------------------------------------------------------


def dump(script: CallScript) -> str:
    """The JSON text of a script, laid out for reading and diffing (one header a line)."""
    data: dict[str, object] = {
        "generated": script.generated,
        "outcome": script.outcome,
        "capture": script.capture,
        "dial": script.dial,
        "steps": [_step_json(step) for step in script.steps],
    }
    return _render(data, "") + "\n"


def _step_json(step: Step) -> dict[str, object]:
    if isinstance(step, Wait):
        return {"wait": step.until}
    out: dict[str, object] = {"event": step.event, "privilege": step.privilege}
    if step.repeat:
        out["repeat"] = True
    if step.half is not None:
        out["half"] = step.half
        out["snapshot"] = [list(pair) for pair in step.snapshot]
    out["headers"] = [
        {"snapshot": h.half, "prefix": h.prefix} if isinstance(h, SnapshotRef) else list(h)
        for h in step.headers
    ]
    return out


def _render(value: object, indent: str) -> str:
    # A container of plain values goes on one line (a header, a wait); others, one item a line.
    if isinstance(value, dict):
        items: list[object] = list(value.values())
    elif isinstance(value, list):
        items = list(value)
    else:
        return json.dumps(value, ensure_ascii=False)
    if not any(isinstance(item, dict | list) for item in items):
        return json.dumps(value, ensure_ascii=False)
    inner = indent + "  "
    if isinstance(value, dict):
        lines = [f"{inner}{json.dumps(k)}: {_render(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(lines) + f"\n{indent}}}"
    lines = [inner + _render(item, inner) for item in items]
    return "[\n" + ",\n".join(lines) + f"\n{indent}]"
