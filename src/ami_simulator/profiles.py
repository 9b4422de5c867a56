"""Asterisk version profiles for the simulator: 11, 13, 16, 18, 20 and 22.

The simulator's call scripts are in the Asterisk 22 dialect of the captures. A profile says
what differs in another release, and the functions here rewrite each event, once at compile
time, into what that version sends (AMI reference 2):

* banner / ``AMIversion`` per release (table 2.1);
* **11** (AMI 1.3): the 1.8/11 per-event field sets (no channel snapshot block, no Linkedid, no
  Language), ``Dial`` with ``SubEvent: Begin``/``End`` instead of ``DialBegin``/``DialEnd``,
  ``LocalBridge`` with ``Channel1``/``Channel2``, no ``NewConnectedLine`` and no
  ``DeviceStateChange`` (12+ events), ``OriginateResponse`` reasons of the pre-12.3 derivation
  (a Local channel that hangs up before answer gives 1, whatever the cause) and
  ``Uniqueid: <null>`` when no channel was created, no security events, ``CoreShowChannel`` with
  ``UniqueID`` and lower-case ``CallerIDnum``/``CallerIDname``, the 11 key order of
  ``...Complete`` list events (ActionID last); no res_pjsip;
* **13** (13.38, AMI 2.10.6): 12+ events with Linkedid (13.5+), ``Newexten`` in class ``call``
  (12 to 15), ``Command`` answered with ``Response: Follows``;
* **16+**: ``FullyBooted`` carries ``Uptime``/``LastReload`` (before 16 only ``Status``);
* **20/22**: ``CoreProcessedCalls`` in ``CoreStatus``; **22** has no chan_sip (removed in 21).

One deliberate liberty: the 11 profile turns the Originate's ``DialBegin``/``DialEnd`` into
``Dial`` events. A real 11 raises ``Dial`` only from ``Dial()`` (app_dial), not for the
Originate itself; the simulator keeps the same traffic in every profile so the tests can
compare the exporter's numbers across dialects.

Peers, registrations and queues, which a profile has or lacks by module, are in
:mod:`ami_simulator.extras`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ServerSession

__all__ = [
    "PROFILES",
    "VERSIONS",
    "Pairs",
    "Profile",
    "core_show_channel",
    "fully_booted",
    "list_answer",
    "list_complete",
    "profile_for",
    "rewrite_event",
]

Pairs = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Profile:
    """One release: the defaults are Asterisk 22's, a profile lists what differs."""

    major: str
    asterisk_version: str
    ami_version: str
    old_events: bool = False  # the 1.8/11 dialect
    fullybooted_uptime: bool = True  # 16+
    newexten_class: str = "dialplan"
    processed_calls: bool = True  # CoreStatus CoreProcessedCalls (20.12+)
    sounds_custom_dir: bool = True  # CoreSettings SoundsSearchCustomDir (18.21+)
    command_follows: bool = False  # Command output as Response: Follows (<= 13)
    chan_sip: bool = False  # <= 20
    pjsip: bool = True  # 12+
    contact_created: bool = False  # 13.x says Created where 16.6+ says NonQualified


# Newest first: each release is the next newer one without what that one added or changed.
_22: Final = Profile("22", "22.10.1", "11.0.0")
_20: Final = replace(
    _22, major="20", asterisk_version="20.17.0", ami_version="9.0.0", chan_sip=True
)
_18: Final = replace(
    _20, major="18", asterisk_version="18.26.4", ami_version="7.0.3", processed_calls=False
)
_16: Final = replace(
    _18, major="16", asterisk_version="16.30.1", ami_version="5.0.5", sounds_custom_dir=False
)
_13: Final = replace(
    _16,
    major="13",
    asterisk_version="13.38.3",
    ami_version="2.10.6",
    fullybooted_uptime=False,
    newexten_class="call",
    command_follows=True,
    contact_created=True,
)
_11: Final = replace(
    _13,
    major="11",
    asterisk_version="11.25.3",
    ami_version="1.3",
    old_events=True,
    newexten_class="dialplan",
    pjsip=False,
    contact_created=False,
)

PROFILES: Final[dict[str, Profile]] = {p.major: p for p in (_11, _13, _16, _18, _20, _22)}
VERSIONS: Final = tuple(PROFILES)


def profile_for(version: str) -> Profile:
    """The profile of ``"11"`` or a full version such as ``"11.25.3"``."""
    major = version.strip().split(".")[0]
    profile = PROFILES.get(major)
    if profile is None:
        raise ValueError(
            f"unsupported Asterisk version {version!r}; profiles: {', '.join(VERSIONS)}"
        )
    return profile


# -- event rewriting --------------------------------------------------------------------------

_CHANNEL_STATE: Final = ("Channel", "ChannelState", "ChannelStateDesc")
_CALLER: Final = ("CallerIDNum", "CallerIDName")
_CONNECTED: Final = ("ConnectedLineNum", "ConnectedLineName")

# 1.8/11 keys per event (reference 2.4), after Event and Privilege.
_OLD_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "Newchannel": (*_CHANNEL_STATE, *_CALLER, "AccountCode", "Exten", "Context", "Uniqueid"),
    "Newstate": (*_CHANNEL_STATE, *_CALLER, *_CONNECTED, "Uniqueid"),
    "Hangup": ("Channel", "Uniqueid", *_CALLER, *_CONNECTED, "AccountCode", "Cause", "Cause-txt"),
    "HangupRequest": ("Channel", "Uniqueid", "Cause"),
    "SoftHangupRequest": ("Channel", "Uniqueid", "Cause"),
    "Newexten": (
        "Channel",
        "Context",
        "Extension",
        "Priority",
        "Application",
        "AppData",
        "Uniqueid",
    ),
    "VarSet": ("Channel", "Variable", "Value", "Uniqueid"),
    "NewCallerid": ("Channel", *_CALLER, "Uniqueid", "CID-CallingPres"),
    "OriginateResponse": (
        "ActionID",
        "Response",
        "Channel",
        "Context",
        "Exten",
        "Reason",
        "Uniqueid",
        *_CALLER,
    ),
}
# Events Asterisk 11 does not have.
_NOT_IN_11: Final = frozenset({"NewConnectedLine", "DeviceStateChange", "DialState"})
# Snapshot keys that 12 added: dropped from 11's events that keep the other keys (Cdr...).
_NEW_IN_12: Final = ("Linkedid", "Language", "SystemName")
# OriginateResponse Reason of a failed Local originate before 12.3 (__ast_request_and_dial:
# the last control frame; the Local ;2 hanging up before answer gives HANGUP = 1).
_REASON_11: Final[dict[str, str]] = {
    "answered": "4",
    "busy": "5",
    "congestion": "8",
    "unallocated": "1",
    "no_answer": "1",
    "rejected": "1",
    "failed_originate": "0",
}


def rewrite_event(profile: Profile, outcome: str, name: str, pairs: Pairs) -> list[Pairs]:
    """The events ``profile`` sends for one Asterisk 22 event (none, one or more)."""
    if profile.major == "22":
        return [pairs]
    if not profile.old_events:
        if name == "Newexten":
            privilege = profile.newexten_class + ",all"
            return [[(k, privilege if k == "Privilege" else v) for k, v in pairs]]
        return [pairs]
    if name in _NOT_IN_11:
        return []
    if name in _OLD_KEYS:
        return [_old_keys(outcome, name, pairs)]
    if name == "LocalBridge":
        return [_local_bridge_11(pairs)]
    if name in ("DialBegin", "DialEnd"):
        return [_dial_11(name, pairs)]
    # Anything else (Cdr...): the same keys, minus the 12+ snapshot additions.
    return [[(k, v) for k, v in pairs if k not in _NEW_IN_12]]


def _old_keys(outcome: str, name: str, pairs: Pairs) -> Pairs:
    values = dict(pairs)
    out: Pairs = [pairs[0]]
    privilege = values.get("Privilege")
    if privilege is not None:
        out.append(("Privilege", privilege))
    out += [(key, values[key]) for key in _OLD_KEYS[name] if key in values]
    if name == "OriginateResponse":
        out = [(k, _REASON_11.get(outcome, v) if k == "Reason" else v) for k, v in out]
        out = [(k, "<null>" if v == "<unknown>" and k == "Uniqueid" else v) for k, v in out]
    return out


def _local_bridge_11(pairs: Pairs) -> Pairs:
    """``LocalBridge`` of 11: the halves as Channel1/Channel2, no snapshots."""
    values = dict(pairs)
    return [
        ("Event", "LocalBridge"),
        ("Privilege", values.get("Privilege") or "call,all"),
        ("Channel1", values.get("LocalOneChannel", "")),
        ("Channel2", values.get("LocalTwoChannel", "")),
        ("Uniqueid1", values.get("LocalOneUniqueid", "")),
        ("Uniqueid2", values.get("LocalTwoUniqueid", "")),
        ("LocalOptimization", values.get("LocalOptimization", "Yes")),
        ("Context", values.get("Context", "")),
        ("Exten", values.get("Exten", "")),
    ]


def _dial_11(name: str, pairs: Pairs) -> Pairs:
    """``DialBegin``/``DialEnd`` as 11's ``Dial`` with ``SubEvent: Begin``/``End``."""
    values = dict(pairs)
    get = values.get
    channel = get("Channel") or get("DestChannel", "")
    uid = get("Uniqueid") or get("DestUniqueid", "")
    head: Pairs = [("Event", "Dial"), ("Privilege", get("Privilege") or "call,all")]
    if name == "DialEnd":
        end = [("Channel", channel), ("UniqueID", uid), ("DialStatus", get("DialStatus", ""))]
        return [*head, ("SubEvent", "End"), *end]
    return [
        *head,
        ("SubEvent", "Begin"),
        ("Channel", channel),
        ("Destination", get("DestChannel", "")),
        ("CallerIDNum", get("DestCallerIDNum", "<unknown>")),
        ("CallerIDName", get("DestCallerIDName", "<unknown>")),
        ("ConnectedLineNum", get("DestConnectedLineNum", "<unknown>")),
        ("ConnectedLineName", get("DestConnectedLineName", "<unknown>")),
        ("UniqueID", uid),
        ("DestUniqueID", get("DestUniqueid", "")),
        ("Dialstring", get("DialString", "")),
    ]


# -- answers in a version's words -------------------------------------------------------------


def fully_booted(profile: Profile, uptime: int, last_reload: int) -> Pairs:
    """``FullyBooted``'s headers after ``Event``: Uptime and LastReload from 16 on."""
    pairs: Pairs = [("Privilege", "system,all")]
    if profile.fullybooted_uptime:
        pairs += [("Uptime", str(uptime)), ("LastReload", str(last_reload))]
    return [*pairs, ("Status", "Fully Booted")]


def core_show_channel(profile: Profile, row: dict[str, str]) -> Pairs:
    """One ``CoreShowChannel`` item's headers from the 22-style fields of a live channel."""
    if not profile.old_events:
        return list(row.items())
    get = row.get
    return [
        ("Channel", get("Channel", "")),
        ("UniqueID", get("Uniqueid", "")),
        ("Context", get("Context", "")),
        ("Extension", get("Exten", "")),
        ("Priority", get("Priority", "1")),
        ("ChannelState", get("ChannelState", "")),
        ("ChannelStateDesc", get("ChannelStateDesc", "")),
        ("Application", get("Application", "")),
        ("ApplicationData", get("ApplicationData", "")),
        ("CallerIDnum", get("CallerIDNum", "")),
        ("CallerIDname", get("CallerIDName", "")),
        ("ConnectedLineNum", get("ConnectedLineNum", "")),
        ("ConnectedLineName", get("ConnectedLineName", "")),
        ("Duration", get("Duration", "")),
        ("AccountCode", get("AccountCode", "")),
        ("BridgedChannel", ""),
        ("BridgedUniqueID", ""),
    ]


def list_complete(profile: Profile, event: str, action_id: str | None, items: int) -> bytes:
    """``...Complete``: 11 puts ActionID last, 13+ right after Event (reference 1.5)."""
    tail = [("EventList", "Complete"), ("ListItems", str(items))]
    if profile.old_events and action_id is not None:
        return ServerSession.event(event, *tail, ("ActionID", action_id))
    return ServerSession.event(event, *tail, action_id=action_id)


def list_answer(
    profile: Profile,
    request: Message,
    items: Iterable[tuple[str, Sequence[tuple[str, str]]]],
    complete: str,
    *,
    message: str,
    item_action_id_first: bool,
) -> bytes:
    """A list action's whole answer: Success, each ``(event, pairs)`` item, the Complete.

    ``item_action_id_first``: the items carry the ActionID right after ``Event`` (as
    ``CoreShowChannel`` does), else as their last header.
    """
    if item_action_id_first and not profile.old_events:
        return ServerSession.list_answer(request, items, complete, message=message)
    action_id = request.get("ActionID")
    start = (("EventList", "start"), ("Message", message))
    parts = [ServerSession.response(request, "Success", *start)]
    last = [("ActionID", action_id)] if action_id is not None and not item_action_id_first else []
    first = action_id if item_action_id_first else None
    count = 0
    for name, pairs in items:
        parts.append(ServerSession.event(name, *pairs, *last, action_id=first))
        count += 1
    parts.append(list_complete(profile, complete, action_id, count))
    return b"".join(parts)
