#!/usr/bin/env python3
"""Generate the simulator's PJSIP trunk scripts and answers from the real Asterisk 22 captures.

Usage::

    python3 tools/generate_pjsip_scripts.py           # (re)write src/ami_simulator/scripts/pjsip/
    python3 tools/generate_pjsip_scripts.py --check   # exit 1 if a file is not up to date

The captures are ``tests/fixtures/pjsip`` (Asterisk 22.10.1, chan_pjsip, real SIP calls to SIPp
carriers; ``CAPTURES.md`` there). For each script of :data:`ami_simulator.scripts.PJSIP_SCRIPTS`
this takes ONE real call of one capture (:data:`CALLS`: the first channel of that endpoint whose
dialled number starts with the carrier-behaviour prefix) and writes
``src/ami_simulator/scripts/pjsip/<name>.json`` in the format of :mod:`ami_simulator.scripts`:

* the call's events are those about its channel (``Channel``, ``DestChannel`` or ``Uniqueid``
  is its own) and its ``OriginateResponse``, in the capture's order; events about other
  channels (a queue agent's Local channels, device states) are not part of it;
* its own values become placeholders: channel name and Uniqueid (``{c1}`` ``{u1}``), the
  dialled number and the endpoint (``{num}`` ``{trunk}``), the ActionID, the caller name, the
  Cdr times, every per-report RTCP value, a queue caller's position, hold and talk times and
  the agent it reached (:data:`ami_simulator.scripts.PJSIP_PLACEHOLDERS`);
* waits: ``pdd`` after the channel's ``DialBegin`` (the carrier's post-dial delay), ``ring``
  after it rings (``DialState RINGING``), ``queue`` after ``QueueCallerJoin`` when an agent
  answers, ``hold`` before the first event of the hang-up (``HangupRequest``,
  ``SoftHangupRequest`` or the ``RTPAUDIOQOS`` variables) of an answered channel;
* the first RTCP report(s) become ``repeat`` steps (sent every RTCP interval while the channel is
  up) and the later ones are dropped; an outbound carrier call gets the ``RTCPReceived`` of the
  captured call into Asterisk itself (``@self``) too, since SIPp sends no RTCP and a real carrier
  does.

``answers.json`` holds what the PJSIP actions answer (``answers.exporter.raw``,
``answers.leastpriv.raw``, ``commands.admin.raw``): the ``ListCommands`` table (name, synopsis,
privilege) and, for each list event and response, the header names and captured values, which
:mod:`ami_simulator.trunks` fills in from its live state. ``events.json`` holds the qualify,
device-state and registration events of ``trunk-down`` and the queue member events of
``queue``. The generator checks that no concrete per-call value is left over;
``tests/test_simulator_pjsip.py`` fails while the committed files differ from what it makes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's packages, whatever is installed

from ami_exporter.ami.protocol import AMIParser, Message  # noqa: E402
from ami_simulator.scripts import (  # noqa: E402
    PJSIP_SCRIPTS,
    SNAPSHOT_KEYS,
    CallScript,
    EventStep,
    Header,
    SnapshotRef,
    Step,
    Wait,
    dump,
)

FIXTURES: Final = ROOT / "tests" / "fixtures" / "pjsip"
OUT: Final = ROOT / "src" / "ami_simulator" / "scripts" / "pjsip"
GENERATED: Final = (
    "by tools/generate_pjsip_scripts.py from tests/fixtures/pjsip/{capture}; do not edit by hand"
)


@dataclass(frozen=True, slots=True)
class Pick:
    """Which captured call a script is: capture, endpoint, dialled prefix (None: any)."""

    capture: str
    endpoint: str
    prefix: str | None
    requires: str = ""  # an event the call must have (what its queue caller did)


_MIX: Final = "trunk-mix.listener.raw.gz"
_QUEUE: Final = "queue.listener.raw.gz"
CALLS: Final[dict[str, Pick]] = {
    "answered": Pick(_MIX, "carrier", "2"),  # the carrier sends BYE
    "answered_local_bye": Pick(_MIX, "carrier", "3"),  # Asterisk sends BYE (sinkhang)
    "busy": Pick(_MIX, "carrier", "486"),
    "congestion": Pick(_MIX, "carrier", "503"),
    "not_found": Pick(_MIX, "carrier", "404"),
    "unavailable": Pick(_MIX, "carrier", "480"),
    "declined": Pick(_MIX, "carrier", "603"),
    "ring_out": Pick(_MIX, "carrier", "180"),
    "inbound": Pick(_MIX, "selfin", None),  # the far end of a call into Asterisk itself
    "queue_answered": Pick(_QUEUE, "carrier", "3", "AgentComplete"),
    "queue_abandoned": Pick(_QUEUE, "carrier", "2", "QueueCallerAbandon"),
}
TRUNK_DOWN: Final = "trunk-down.listener.raw"  # an originate to an unreachable carrier

_CDR_TIMES: Final = {
    "StartTime": "start",
    "AnswerTime": "answer",
    "EndTime": "end",
    "Duration": "dur",
    "BillableSeconds": "bill",
}
# RTCP values that change with every report, by event: header -> placeholder. RTCPSent is what
# Asterisk sends (its report on the stream it receives), RTCPReceived the far end's report.
_RTCP: Final[dict[str, dict[str, str]]] = {
    "RTCPSent": {
        "To": "rtp_far",
        "From": "rtp_near",
        "MES": "mes_rx",
        "SSRC": "ssrc_us",
        "SentNTP": "ntp",
        "SentRTP": "sent_rtp",
        "SentPackets": "sent_pkts",
        "SentOctets": "sent_octets",
        "Report0SourceSSRC": "ssrc_them",
        "Report0FractionLost": "fl_rx",
        "Report0CumulativeLost": "cl_rx",
        "Report0HighestSequence": "seq_rx",
        "Report0IAJitter": "jit_rx",
        "Report0LSR": "lsr_rx",
        "Report0DLSR": "dlsr_rx",
    },
    "RTCPReceived": {
        "To": "rtp_near",
        "From": "rtp_far",
        "RTT": "rtt",
        "MES": "mes_tx",
        "SSRC": "ssrc_them",
        "SentNTP": "ntp_them",
        "SentRTP": "sent_rtp",
        "SentPackets": "sent_pkts",
        "SentOctets": "sent_octets",
        "Report0SourceSSRC": "ssrc_us",
        "Report0FractionLost": "fl_tx",
        "Report0CumulativeLost": "cl_tx",
        "Report0HighestSequence": "seq_tx",
        "Report0IAJitter": "jit_tx",
        "Report0LSR": "lsr_tx",
        "Report0DLSR": "dlsr_tx",
    },
}
# A queue caller's values (QueueCallerJoin/Leave/Abandon, AgentCalled/Connect/Complete).
_QUEUE_VALUES: Final = {
    "Position": "qpos",
    "Count": "qcount",
    "OriginalPosition": "qpos",
    "HoldTime": "qhold",
    "TalkTime": "talk",
    "Interface": "agent_if",
    "MemberName": "agent_name",
}
# The first of these events of an answered channel ends its talk time (the "hold" wait).
_HANGUP_START: Final = frozenset(
    {"HangupRequest", "SoftHangupRequest", "AgentComplete", "BridgeLeave"}
)


def read(name: str) -> bytes:
    data = (FIXTURES / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def events_of(name: str) -> list[Message]:
    return [m for m in AMIParser(expect_banner=True).feed(read(name)) if m.kind == "event"]


def _required(message: Message, key: str) -> str:
    value = message.get(key)
    if value is None:
        raise ValueError(f"{message.name}: no {key}")
    return value


# -- finding one call ------------------------------------------------------------------------


@dataclass(slots=True)
class Found:
    """One captured call: its channel's events and the values that are per call."""

    channel: str
    uniqueid: str
    number: str
    endpoint: str
    events: list[Message]
    agent: dict[str, str]


def _dialstring(events: Sequence[Message], channel: str) -> tuple[str, bool]:
    """The DialString of the channel's DialBegin, and whether it was originated directly."""
    for m in events:
        if m.name == "DialBegin" and m.get("DestChannel") == channel:
            return _required(m, "DialString"), m.get("Channel") is None
    return "", False


def _about(m: Message, channel: str, uniqueid: str, originate: str) -> bool:
    if m.name == "OriginateResponse":
        return m.get("Channel") in (channel, originate)
    return channel in (m.get("Channel"), m.get("DestChannel")) or uniqueid in (
        m.get("Uniqueid"),
        m.get("UniqueID"),
    )


def find(pick: Pick) -> Found:
    """The first call of ``pick`` in its capture."""
    events = events_of(pick.capture)
    for i, m in enumerate(events):
        channel = m.get("Channel") or ""
        if m.name != "Newchannel" or not channel.startswith(f"PJSIP/{pick.endpoint}-"):
            continue
        dialstring, direct = _dialstring(events[i:], channel)
        number = dialstring.partition("@")[0] or _required(m, "Exten")
        if pick.prefix is not None and not (direct and number.startswith(pick.prefix)):
            continue
        uid = _required(m, "Uniqueid")
        originate = f"PJSIP/{dialstring}"
        mine = [e for e in events[i:] if _about(e, channel, uid, originate)]
        if pick.requires and all(e.name != pick.requires for e in mine):
            continue
        agent = _agent(mine)
        return Found(channel, uid, number, pick.endpoint, mine, agent)
    raise ValueError(f"no call of {pick} in {pick.capture}")


def _agent(events: Sequence[Message]) -> dict[str, str]:
    """The queue agent's channel and Uniqueid the call reached (AgentCalled), as placeholders."""
    for m in events:
        if m.name == "AgentCalled":
            return {
                _required(m, "DestChannel"): "{agent_c}",
                _required(m, "DestUniqueid"): "{agent_u}",
            }
    return {}


# -- values into placeholders ----------------------------------------------------------------


class _Values:
    """How each concrete value of one call becomes a template."""

    def __init__(self, found: Found, action_id: str | None) -> None:
        self.found = found
        self.exact: dict[str, str] = {found.channel: "{c1}", found.uniqueid: "{u1}", **found.agent}
        if action_id is not None:
            self.exact[action_id] = "{aid}"
        self.exact[f"PJSIP/{found.number}@{found.endpoint}"] = "PJSIP/{num}@{trunk}"
        self.exact[f"{found.number}@{found.endpoint}"] = "{num}@{trunk}"
        self.exact[found.number] = "{num}"

    def template(self, event: Message, key: str, value: str) -> str:
        if event.name == "Cdr" and key in _CDR_TIMES and (value or key != "AnswerTime"):
            return f"{{{_CDR_TIMES[key]}}}"
        rtcp = _RTCP.get(event.name, {}).get(key)
        if rtcp is not None:
            return f"{{{rtcp}}}"
        if key in _QUEUE_VALUES and event.name.startswith(("Queue", "Agent")):
            if event.name == "QueueCallerLeave" and key == "Count":
                return "{qleft}"  # the callers still waiting once this one left
            return f"{{{_QUEUE_VALUES[key]}}}"
        if value in self.exact:
            return self.exact[value]
        if key.endswith("CallerIDName") or key.endswith("ConnectedLineName"):
            return "{cidname}" if value == "lab" else _escape(value)
        if event.name == "Cdr" and key == "CallerID":
            return _escape(value).replace('"lab"', '"{cidname}"')
        return _escape(value)


def _escape(value: str) -> str:
    return value.replace("{", "{{").replace("}", "}}")


# -- events into steps -----------------------------------------------------------------------


class _Scripter:
    """One call's events as steps: its snapshot kept as they change it, waits put in."""

    def __init__(self, found: Found, values: _Values) -> None:
        self.found = found
        self.values = values
        self.snapshot: dict[str, str] = {}
        self.up = False
        self.rtcp_done = False  # the first run of RTCP reports is kept, the rest dropped
        self.in_rtcp = False
        # An abandoned queue caller waits in the queue ("queue") and hangs up: no talk time.
        self.held = any(m.name == "QueueCallerAbandon" for m in found.events)
        self.kept: set[str] = set()

    def steps(self, extra_rtcp: Sequence[Message] = ()) -> list[Step]:
        out: list[Step] = []
        pending: list[Step] = []  # a wait goes after the RTCP reports right behind its event
        for event in self.found.events:
            is_rtcp = event.name in _RTCP
            if self.in_rtcp and not is_rtcp:
                self.in_rtcp, self.rtcp_done = False, True
            if is_rtcp:
                out += self._report(event, extra_rtcp)
                continue
            out += pending
            if self._hangup_starts(event):
                out.append(Wait("hold"))
                self.held = True
            out.append(self._event(event))
            pending = self._wait_after(event)
        return out + pending

    def _report(self, event: Message, extra_rtcp: Sequence[Message]) -> list[Step]:
        """The first report of each kind, of the first run of reports: sent repeatedly."""
        if self.rtcp_done or event.name in self.kept:
            return []
        out: list[Step] = []
        if not self.in_rtcp:
            out += [self._borrowed(extra) for extra in extra_rtcp]
            self.kept.update(extra.name for extra in extra_rtcp)
        self.in_rtcp = True
        self.kept.add(event.name)
        out.append(self._event(event, repeat=True))
        return out

    def _borrowed(self, event: Message) -> EventStep:
        """A report of another call's channel, sent with this call's snapshot."""
        rest = event.headers[2 + len(SNAPSHOT_KEYS) :]
        pairs = tuple((k, self.values.template(event, k, v)) for k, v in rest)
        return EventStep(event.name, _required(event, "Privilege"), pairs, 1, (), repeat=True)

    def _hangup_starts(self, event: Message) -> bool:
        if self.held or not self.up:
            return False
        qos = event.name == "VarSet" and event.get("Variable") == "RTPAUDIOQOS"
        return event.name in _HANGUP_START or qos

    def _wait_after(self, event: Message) -> list[Step]:
        mine = event.get("DestChannel") == self.found.channel
        if event.name == "DialBegin" and mine:
            return [Wait("pdd")]
        if event.name == "DialState" and mine and event.get("DialStatus") == "RINGING":
            return [Wait("ring")]
        if event.name == "Newstate" and event.get("ChannelStateDesc") == "Up":
            self.up = True
        if event.name == "QueueCallerJoin":
            return [Wait("queue")]
        return []

    def _event(self, event: Message, *, repeat: bool = False) -> EventStep:
        head = [key for key, _ in event.headers[:2]]
        if head != ["Event", "Privilege"]:
            raise ValueError(f"{event.name}: expected Event and Privilege first, got {head}")
        pairs = [(k, self.values.template(event, k, v)) for k, v in event.headers[2:]]
        keys = [key for key, _ in pairs[: len(SNAPSHOT_KEYS)]]
        half: int | None = None
        changed: tuple[tuple[str, str], ...] = ()
        if keys == list(SNAPSHOT_KEYS) and pairs[0][1] == "{c1}":
            half = 1
            block, pairs = pairs[: len(SNAPSHOT_KEYS)], pairs[len(SNAPSHOT_KEYS) :]
            if not repeat:  # a borrowed report's snapshot is the call's own, unchanged
                changed = tuple((k, v) for k, v in block if self.snapshot.get(k) != v)
                self.snapshot.update(block)
        privilege = _required(event, "Privilege")
        return EventStep(event.name, privilege, tuple(self._headers(pairs)), half, changed, repeat)

    def _headers(self, pairs: list[tuple[str, str]]) -> list[Header]:
        """A ``Dest...`` block equal to the call's own snapshot becomes a reference to it."""
        out: list[Header] = []
        i = 0
        while i < len(pairs):
            block = pairs[i : i + len(SNAPSHOT_KEYS)]
            if [k for k, _ in block] == ["Dest" + k for k in SNAPSHOT_KEYS] and block == [
                ("Dest" + k, self.snapshot.get(k)) for k in SNAPSHOT_KEYS
            ]:
                out.append(SnapshotRef(1, "Dest"))
                i += len(SNAPSHOT_KEYS)
            else:
                out.append(pairs[i])
                i += 1
        return out


def _self_rtcp_received() -> list[Message]:
    """The first RTCPReceived of the outbound leg of a call into Asterisk itself (``@self``)."""
    for m in events_of(_MIX):
        if m.name == "RTCPReceived" and (m.get("Channel") or "").startswith("PJSIP/self-"):
            # The carrier call's own snapshot replaces the borrowed one (see _Scripter._event).
            return [m]
    raise ValueError("no RTCPReceived of PJSIP/self- in the trunk-mix capture")


def _action_id(found: Found) -> str | None:
    for m in found.events:
        if m.name == "OriginateResponse":
            return _required(m, "ActionID")
    return None


def derive(name: str) -> CallScript:
    """The script ``name``, derived from its capture."""
    if name == "trunk_down":
        return _trunk_down()
    pick = CALLS[name]
    found = find(pick)
    values = _Values(found, _action_id(found))
    extra = _self_rtcp_received() if pick.endpoint == "carrier" else []
    steps = _Scripter(found, values).steps(extra)
    script = CallScript(
        outcome=name,
        capture=pick.capture,
        dial="PJSIP/{num}@{trunk}",
        steps=tuple(steps),
        generated=GENERATED.format(capture=pick.capture),
    )
    _check_leftovers(script, found)
    return script


def _trunk_down() -> CallScript:
    """An originate to a carrier that does not answer its qualify: one OriginateResponse."""
    for m in events_of(TRUNK_DOWN):
        if m.name == "OriginateResponse" and m.get("Uniqueid") == "<unknown>":
            channel = _required(m, "Channel")
            number, _, endpoint = channel.removeprefix("PJSIP/").partition("@")
            found = Found("", "", number, endpoint, [m], {})
            values = _Values(found, _required(m, "ActionID"))
            pairs = [(k, values.template(m, k, v)) for k, v in m.headers[2:]]
            step = EventStep(m.name, _required(m, "Privilege"), tuple(pairs))
            generated = GENERATED.format(capture=TRUNK_DOWN)
            return CallScript("trunk_down", TRUNK_DOWN, "PJSIP/{num}@{trunk}", (step,), generated)
    raise ValueError(f"no failed OriginateResponse in {TRUNK_DOWN}")


def _check_leftovers(script: CallScript, found: Found) -> None:
    """No concrete per-call value may survive: the simulator could not vary it."""
    text = dump(script)
    epoch = found.uniqueid.partition(".")[0]
    for value in (found.channel, found.uniqueid, epoch, *found.agent):
        if value and re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text):
            raise ValueError(f"{script.outcome}: per-call value {value!r} left in the script")


# -- answers and other events ----------------------------------------------------------------

_ANSWERS: Final = ("answers.exporter.raw", "commands.admin.raw", "queue.admin.raw")
# The list item to take as each event's template: the one about this object.
_ITEM_OF: Final = {
    "ObjectName": ("carrier", "regtrunk", "transport-udp", "selfin"),
    "AOR": ("carrier",),
}
_EVENTS: Final = (
    ("trunk-down.listener.raw", ("PeerStatus", "ContactStatus", "DeviceStateChange", "Registry")),
    (_QUEUE, ("QueueMemberStatus",)),
)


def _pairs(message: Message) -> list[list[str]]:
    return [[k, v] for k, v in message.headers]


def _exact(capture: str, m: Message) -> list[list[str]]:
    """The message's headers cut from the raw bytes at CRLF only: Asterisk ends some error
    messages with a bare LF of its own ("No Contacts found\\n"), which a parser drops."""
    text = read(capture).decode("utf-8", "surrogateescape")
    for block in text.split("\r\n\r\n"):
        lines = [line.partition(": ") for line in block.split("\r\n")]
        pairs = [[k, v] for k, _, v in lines]
        if [k for k, _ in pairs] == [k for k, _ in m.headers] and pairs[1:2] == _pairs(m)[1:2]:
            return pairs
    raise ValueError(f"{capture}: no raw message {m.headers!r}")


def _wanted(m: Message) -> bool:
    for key, names in _ITEM_OF.items():
        value = m.get(key)
        if value is not None:
            return value in names
    return True


def _answers() -> dict[str, object]:
    """ListCommands, each action's response and Complete, one template per list item kind."""
    lists: dict[str, list[list[str]]] = {}
    starts: dict[str, list[list[str]]] = {}
    items: dict[str, list[list[str]]] = {}
    errors: dict[str, list[list[str]]] = {}
    for name in _ANSWERS:
        sent = AMIParser(expect_banner=False).feed(read(name.replace(".raw", ".sent")))
        action_of = {m.get("ActionID"): m.name for m in sent if m.kind == "action"}
        for m in AMIParser(expect_banner=True).feed(read(name)):
            action = action_of.get(m.get("ActionID"), "")
            if action == "ListCommands":
                lists.setdefault("exporter", [[k, v] for k, v in m.headers[2:]])
            elif m.kind == "response" and m.get("EventList") == "start":
                starts.setdefault(action.lower(), _pairs(m))
            elif m.kind == "response" and m.get("Response") == "Error":
                exact = _exact(name, m)
                errors.setdefault(_required(m, "Message").split(":")[0], exact)
            elif m.kind == "event" and m.name not in items and _wanted(m):
                items[m.name] = _pairs(m)
    return {
        "generated": GENERATED.format(capture=", ".join(_ANSWERS)),
        "list_commands": lists["exporter"],
        "responses": dict(sorted(starts.items())),
        "errors": dict(sorted(errors.items())),
        "items": dict(sorted(items.items())),
    }


def _events() -> dict[str, object]:
    """Qualify, device state and registration changes (each state seen), queue member status."""
    out: dict[str, list[list[str]]] = {}
    for capture, names in _EVENTS:
        for m in events_of(capture):
            if m.name not in names:
                continue
            state = (
                m.get("PeerStatus") or m.get("ContactStatus") or m.get("State") or m.get("Status")
            )
            out.setdefault(f"{m.name}:{state}", _pairs(m))
    captures = ", ".join(capture for capture, _ in _EVENTS)
    return {"generated": GENERATED.format(capture=captures), "events": dict(sorted(out.items()))}


def _render(data: dict[str, object]) -> str:
    """JSON with one header pair a line, for reading and diffing."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    # Fold each [key, value] pair onto one line.
    text = re.sub(r'\[\n\s+("(?:[^"\\]|\\.)*"),\n\s+("(?:[^"\\]|\\.)*")\n\s+\]', r"[\1, \2]", text)
    return text + "\n"


def generate() -> dict[str, str]:
    """File name -> text, for every script and the answers and events."""
    files = {f"{name}.json": dump(derive(name)) for name in PJSIP_SCRIPTS}
    files["answers.json"] = _render(_answers())
    files["events.json"] = _render(_events())
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the files go")
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    args = parser.parse_args(argv)
    files = generate()
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
    print(f"wrote {len(files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
