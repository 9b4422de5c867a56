"""VICIdial call types, from the call IDs VICIdial puts in CallerIDName (AMI reference 5.3).

Enabled per server with ``vicidial: true``. VICIdial names every call it places or routes with
a call ID carried in the channel's CallerIDName (or ConnectedLineName):

* ``V`` + 19 digits (``VmddhhmmssLLLLLLLLLL``): auto-dial (``auto_dial``);
* ``M`` + 19 digits: manual dial from the agent screen (``manual_dial``);
* ``Y`` + 19 digits: inbound (``inbound``);
* ``DC`` + 6 digits + ``W`` + 10 digits + ``W``: 3-way call (``three_way``);
* ``RINGAGENT...`` / ``RA_...``: ringing an agent's phone (``ring_agent``).

Definitions (the call ID itself is never exported, nor any caller name or number):

* a *call* is one distinct call ID. It is counted in ``asterisk_vicidial_calls_total`` once,
  at the first ``Newstate`` or ``Hangup`` of any channel carrying it (Local or not), so the two
  Local halves and the trunk leg of one auto-dial count once. A call ID seen again within
  :data:`DEDUP_SECONDS` of its last sighting is the same call.
* ``asterisk_vicidial_hangups_total{type, cause}`` counts the ``Hangup`` of every non-Local
  channel carrying a call ID: the trunk and phone legs, whose cause is the carrier's or the
  phone's answer. Local halves are left out: VICIdial wraps every call in them and their
  causes repeat (``;2``) or hide (``;1``, cause 0 on busy) the real one.

Per event this is one dict lookup; the regex runs only on names that start like a call ID.
"""

from __future__ import annotations

import re
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.state import labels
from ami_exporter.state.clock import SYSTEM_CLOCK, Clock

CALL_TYPES: Final = ("auto_dial", "manual_dial", "inbound", "three_way", "ring_agent")
DEDUP_SECONDS: Final = 3600.0
MAX_TRACKED_CALL_IDS: Final = 100_000
# Real call IDs have 20 characters (RINGAGENT... a few more); a longer name is none, and
# 100,000 remembered names of any length would be no memory bound.
MAX_CALL_ID_LENGTH: Final = 64

_PATTERNS: Final = (
    (re.compile(r"V\d{19}\Z"), "auto_dial"),
    (re.compile(r"M\d{19}\Z"), "manual_dial"),
    (re.compile(r"Y\d{19}\Z"), "inbound"),
    (re.compile(r"DC\d{6}W\d{10}W\Z"), "three_way"),
    (re.compile(r"(?:RINGAGENT|RA_)\S*\Z"), "ring_agent"),
)
_FIRST_CHARS: Final = frozenset("VMYDR")


def call_type(name: str | None) -> str | None:
    """The VICIdial call type of a CallerIDName, or None when it is not a call ID."""
    if not name or name[0] not in _FIRST_CHARS or len(name) > MAX_CALL_ID_LENGTH:
        return None
    for pattern, kind in _PATTERNS:
        if pattern.match(name):
            return kind
    return None


class VicidialState:
    """Call and hangup counters by VICIdial call type for one server."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.enabled = False
        self.calls: dict[str, int] = dict.fromkeys(CALL_TYPES, 0)
        self.hangups: dict[tuple[str, str], int] = {}
        self._seen: dict[str, float] = {}  # call id -> last sighting, oldest first
        self._monotonic = clock.monotonic

    def _call_id(self, msg: Message) -> tuple[str, str] | None:
        for key in ("CallerIDName", "ConnectedLineName"):
            value = msg.get(key)
            kind = call_type(value)
            if kind is not None and value is not None:
                return value, kind
        return None

    def observe(self, msg: Message, *, hangup: bool) -> None:
        """A ``Newstate`` or ``Hangup`` (``hangup=True``) of a live channel."""
        found = self._call_id(msg)
        if found is None:
            return
        call_id, kind = found
        now = self._monotonic()
        seen = self._seen
        last = seen.pop(call_id, None)
        if last is None or now - last > DEDUP_SECONDS:
            self.calls[kind] += 1
        seen[call_id] = now  # re-inserted: the dict stays ordered by last sighting
        while seen:
            oldest_id = next(iter(seen))
            if len(seen) <= MAX_TRACKED_CALL_IDS and now - seen[oldest_id] <= DEDUP_SECONDS:
                break
            del seen[oldest_id]
        if hangup and not (msg.get("Channel") or "").startswith("Local/"):
            cause = labels.hangup_cause(msg.get("Cause"))[0]
            key = (kind, cause)
            self.hangups[key] = self.hangups.get(key, 0) + 1
