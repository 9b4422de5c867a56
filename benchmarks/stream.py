"""Deterministic, realistic AMI event streams built from a real Asterisk 22 capture.

One answered call is taken from ``tests/fixtures/03-originate-100.exporter.raw`` (a real
``Originate`` to ``Local/100@test``): its ``Event:`` messages that name the call's Uniqueids
or channels are kept (27; the ``DeviceStateChange`` events carry neither and are dropped), and
``HangupRequest`` is dropped to get exactly :data:`EVENTS_PER_CALL` (26) events per call.
Every event gets a ``Timestamp:`` header after ``Privilege:``, as with ``timestampevents=yes``
(the order of ``10-timestampevents-originate-100``).

N calls are then produced by renumbering: Uniqueid/Linkedid (``<epoch>.<counter>``, with a
seven-digit counter as on a server that has been up for a while), channel names
``Local/100@test-%08x;1`` / ``;2``, the ``OriginateResponse`` ``ActionID``, caller numbers
(12 digits) and non-ASCII UTF-8 caller names in ``CallerIDName``/``ConnectedLineName`` (and
the ``Cdr`` ``CallerID``). Calls are interleaved in groups of :data:`INTERLEAVE` (the order
inside a call is kept), as in a burst. The result is about 475 bytes and 19 header lines per
event, like the burst the issue describes; ``python -m benchmarks.stream`` prints the measured
shape.

A "prefill" of K live channels is K/2 calls of which only the two ``Newchannel`` events are
sent: they are never hung up during the run. :func:`coreshowchannels_items` renders the same
channels as a ``CoreShowChannels`` answer.
"""

from __future__ import annotations

import argparse
import itertools
from array import array
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

from ami_exporter.ami.protocol import AMIParser

REPO: Final = Path(__file__).resolve().parent.parent
CAPTURE: Final = REPO / "tests" / "fixtures" / "03-originate-100.exporter.raw"

# What identifies the call in the capture.
_CAPTURE_UIDS: Final = ("1795771598.0", "1795771598.1")
_CAPTURE_CHANNEL_TAG: Final = "test-00000000"
_CAPTURE_NAME: Final = "AMI Test"
_CAPTURE_NUMBER: Final = "5551000"
_CAPTURE_ACTION_ID: Final = "orig-03-originate-100"

DROPPED_EVENTS: Final = ("HangupRequest",)
EVENTS_PER_CALL: Final = 26
INTERLEAVE: Final = 8
BASE_EPOCH: Final = 1795771598
UID_COUNTER_BASE: Final = 1_000_000
NOMINAL_EVENTS_PER_SECOND: Final = 20_000  # spacing of the Timestamp headers only

CALLER_NAMES: Final = (
    "Zoë Müller-Lüdenscheidt",
    "Łukasz Żółć-Wiśniewski",
    "José Nuñez García",
    "François Lefèvre-Bœuf",
    "Søren Kierkegård Ødegaard",
    "Ana Petrović Đorđević",
    "Gülşen Çelik Öztürk",
    "Nguyễn Văn An",
    "Ștefan Țurcanu",
    "Björn Ågren Hällström",
    "Ελένη Παπαδοπούλου",
    "山田 太郎",
)


@dataclass(frozen=True, slots=True)
class Stream:
    """A pre-rendered byte stream of ``Event:`` messages and where each message ends."""

    data: bytes
    ends: array[int]  # byte offset just past each message
    counts: dict[str, int]  # events by name
    calls: int
    prefill_channels: int

    @property
    def events(self) -> int:
        return len(self.ends)

    def shape(self) -> dict[str, float]:
        """Measured averages: bytes and header lines per event, events per call."""
        events = max(1, self.events)
        lines = self.data.count(b"\r\n") - self.events  # minus each closing blank line
        traffic = self.events - self.prefill_channels
        return {
            "bytes_per_event": len(self.data) / events,
            "lines_per_event": lines / events,
            "events_per_call": traffic / self.calls if self.calls else 0.0,
            "non_ascii_share": sum(1 for b in self.data if b >= 0x80) / max(1, len(self.data)),
        }


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _template_value(value: str) -> str:
    if value == _CAPTURE_UIDS[0]:
        return "{uid1}"
    if value == _CAPTURE_UIDS[1]:
        return "{uid2}"
    if value == _CAPTURE_ACTION_ID:
        return "orig-{chan}"
    out = _escape(value)
    out = out.replace(_CAPTURE_CHANNEL_TAG, "test-{chan}")
    out = out.replace(_CAPTURE_NAME, "{name}")
    return out.replace(_CAPTURE_NUMBER, "{num}")


@lru_cache(maxsize=4)
def call_templates(system_name: str = "") -> tuple[tuple[str, str], ...]:
    """``(event name, str.format template)`` for the 26 events of one answered call."""
    parser = AMIParser()
    messages = parser.feed(CAPTURE.read_bytes())
    kept = []
    for msg in messages:
        if msg.kind != "event" or msg.name in DROPPED_EVENTS:
            continue
        values = [value for _, value in msg.headers]
        if any(v in _CAPTURE_UIDS or _CAPTURE_CHANNEL_TAG in v for v in values):
            kept.append(msg)
    if len(kept) != EVENTS_PER_CALL:
        raise RuntimeError(f"expected {EVENTS_PER_CALL} call events in {CAPTURE}, got {len(kept)}")
    templates = []
    for msg in kept:
        headers = list(msg.headers)
        at = 2 if len(headers) > 1 and headers[1][0].lower() == "privilege" else 1
        extra = [("Timestamp", "{ts}")]
        if system_name:
            extra.append(("SystemName", _escape(system_name)))
        headers[at:at] = extra
        lines = [
            f"{key}: {value if value == '{ts}' else _template_value(value)}\r\n"
            for key, value in headers
        ]
        templates.append((msg.name, "".join(lines) + "\r\n"))
    return tuple(templates)


def _call_fields(g: int) -> dict[str, str]:
    """Renumbered identifiers of global call number ``g``."""
    counter = UID_COUNTER_BASE + 2 * g
    epoch = BASE_EPOCH + (g * EVENTS_PER_CALL) // NOMINAL_EVENTS_PER_SECOND
    return {
        "uid1": f"{epoch}.{counter}",
        "uid2": f"{epoch}.{counter + 1}",
        "chan": f"{g:08x}",
        "name": CALLER_NAMES[g % len(CALLER_NAMES)],
        "num": f"+4930{g % 10**8:08d}",
    }


def _render(
    sequence: list[tuple[str, str, dict[str, str]]], first_event: int
) -> tuple[list[bytes], Counter[str]]:
    parts: list[bytes] = []
    counts: Counter[str] = Counter()
    step = 1.0 / NOMINAL_EVENTS_PER_SECOND
    for n, (name, template, fields) in enumerate(sequence, first_event):
        ts = f"{BASE_EPOCH + n * step:.6f}"
        parts.append(template.format(ts=ts, **fields).encode("utf-8"))
        counts[name] += 1
    return parts, counts


def build_stream(
    calls: int,
    prefill_channels: int = 0,
    *,
    system_name: str = "",
    interleave: int = INTERLEAVE,
) -> Stream:
    """Prefill (``Newchannel`` of ``prefill_channels`` live channels) then ``calls`` calls."""
    templates = call_templates(system_name)
    newchannels = [(n, t) for n, t in templates if n == "Newchannel"]
    prefill_calls = prefill_channels // 2
    sequence: list[tuple[str, str, dict[str, str]]] = []
    for j in range(prefill_calls):
        fields = _call_fields(j)
        sequence.extend((name, template, fields) for name, template in newchannels)
    for start in range(0, calls, interleave):
        group = [
            _call_fields(prefill_calls + i) for i in range(start, min(calls, start + interleave))
        ]
        # Round-robin over the group: each call's own order is kept.
        for k in range(EVENTS_PER_CALL):
            name, template = templates[k]
            sequence.extend((name, template, fields) for fields in group)
    parts, counts = _render(sequence, 0)
    ends = array("Q", itertools.accumulate(len(p) for p in parts))
    return Stream(b"".join(parts), ends, dict(counts), calls, 2 * prefill_calls)


_CSC_ITEM: Final = (
    "Event: CoreShowChannel\r\nActionID: {aid}\r\nChannel: Local/100@test-{chan};{half}\r\n"
    "ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: {num}\r\nCallerIDName: {name}\r\n"
    "ConnectedLineNum: {num}\r\nConnectedLineName: {name}\r\nLanguage: en\r\nAccountCode: \r\n"
    "Context: test\r\nExten: 100\r\nPriority: 1\r\nUniqueid: {uid}\r\nLinkedid: {uid1}\r\n"
    "Application: AppDial2\r\nApplicationData: (Outgoing Line)\r\nDuration: 00:00:05\r\n"
    "BridgeId: \r\n\r\n"
)


def coreshowchannels_answer(prefill_channels: int, action_id: str) -> bytes:
    """The full answer to ``CoreShowChannels``: response, one item per live channel, end.

    The format is that of ``04-coreshowchannels.exporter.raw`` (Asterisk 22).
    """
    aid = _escape(action_id)
    parts = [
        f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
        "Message: Channels will follow\r\n\r\n"
    ]
    template = _CSC_ITEM.replace("{aid}", aid)
    for j in range(prefill_channels // 2):
        fields = _call_fields(j)
        parts.append(template.format(half=1, uid=fields["uid1"], **fields))
        parts.append(template.format(half=2, uid=fields["uid2"], **fields))
    parts.append(
        f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\nEventList: Complete\r\n"
        f"ListItems: {2 * (prefill_channels // 2)}\r\n\r\n"
    )
    return "".join(parts).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--system-name", default="")
    parser.add_argument("--dump", type=Path, help="write the stream to this file")
    args = parser.parse_args()
    stream = build_stream(args.calls, args.prefill, system_name=args.system_name)
    shape = stream.shape()
    print(
        f"{stream.events} events, {len(stream.data)} bytes, {stream.calls} calls, "
        f"{stream.prefill_channels} prefilled channels"
    )
    print(
        f"{shape['bytes_per_event']:.1f} bytes/event, {shape['lines_per_event']:.2f} "
        f"lines/event, {shape['events_per_call']:.1f} events/call, "
        f"{100 * shape['non_ascii_share']:.2f} % non-ASCII bytes"
    )
    print("events by name:", dict(sorted(stream.counts.items())))
    if args.dump:
        args.dump.write_bytes(stream.data)


if __name__ == "__main__":
    main()
