"""Asterisk version profiles for the simulator: 11, 13, 16, 18, 20 and 22.

The simulator's call scripts are written in the Asterisk 22 dialect of the captures. A profile
rewrites each event, once at compile time, into what that version sends (AMI reference 2):

* banner / ``AMIversion`` per release (table 2.1);
* **11** (AMI 1.3): the 1.8/11 per-event field sets (no channel snapshot block, no Linkedid, no
  Language), ``Dial`` with ``SubEvent: Begin``/``End`` instead of ``DialBegin``/``DialEnd``,
  ``LocalBridge`` with ``Channel1``/``Channel2``, no ``NewConnectedLine`` and no
  ``DeviceStateChange`` (12+ events), ``OriginateResponse`` reasons of the pre-12.3 derivation
  (a Local channel that hangs up before answer gives 1, whatever the cause) and
  ``Uniqueid: <null>`` when no channel was created, no security events, ``CoreShowChannel`` with
  ``UniqueID`` and lower-case ``CallerIDnum``/``CallerIDname``, the 11 key order of
  ``CoreShowChannelsComplete``; no res_pjsip;
* **13** (13.38, AMI 2.10.6): 12+ events with Linkedid (13.5+), ``Newexten`` in class ``call``
  (12 to 15), ``Command`` answered with ``Response: Follows``;
* **16+**: ``FullyBooted`` carries ``Uptime``/``LastReload`` (before 16 only ``Status``);
* **20/22**: ``CoreProcessedCalls`` in ``CoreStatus``; **22** has no chan_sip (removed in 21).

One deliberate liberty: the 11 profile turns the Originate's ``DialBegin``/``DialEnd`` into
``Dial`` events. A real 11 raises ``Dial`` only from ``Dial()`` (app_dial), not for the
Originate itself; the simulator keeps the same traffic in every profile so the tests can
compare the exporter's numbers across dialects.

Peers, registrations and queues (:class:`SimulatedExtras`) answer ``SIPpeers``,
``SIPshowregistry``, ``IAXpeerlist``, ``PJSIPShowContacts``, ``PJSIPShowRegistrationsOutbound``,
``QueueStatus`` and ``QueueSummary`` where the profile has the module, and broadcast
``PeerStatus``, ``ContactStatus`` and ``Registry`` when a test changes a peer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message, serialize

Pairs = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Profile:
    major: str
    asterisk_version: str
    ami_version: str
    old_events: bool  # the 1.8/11 dialect
    fullybooted_uptime: bool  # 16+
    newexten_class: str
    processed_calls: bool  # CoreStatus CoreProcessedCalls (20.12+)
    sounds_custom_dir: bool  # CoreSettings SoundsSearchCustomDir (18.21+)
    command_follows: bool  # Command output as Response: Follows (<= 13)
    chan_sip: bool  # <= 20
    pjsip: bool  # 12+
    contact_created: bool  # 13.x says Created where 16.6+ says NonQualified


PROFILES: Final[dict[str, Profile]] = {
    p.major: p
    for p in (
        Profile("11", "11.25.3", "1.3", True, False, "dialplan", False, False, True, True, False,
                False),
        Profile("13", "13.38.3", "2.10.6", False, False, "call", False, False, True, True, True,
                True),
        Profile("16", "16.30.1", "5.0.5", False, True, "dialplan", False, False, False, True,
                True, False),
        Profile("18", "18.26.4", "7.0.3", False, True, "dialplan", False, True, False, True,
                True, False),
        Profile("20", "20.17.0", "9.0.0", False, True, "dialplan", True, True, False, True, True,
                False),
        Profile("22", "22.10.1", "11.0.0", False, True, "dialplan", True, True, False, False,
                True, False),
    )
}  # fmt: skip
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


# -- event rewriting ---------------------------------------------------------------------------

# 1.8/11 keys per event (reference 2.4), after Event and Privilege.
_OLD_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "Newchannel": ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                   "AccountCode", "Exten", "Context", "Uniqueid"),
    "Newstate": ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                 "ConnectedLineNum", "ConnectedLineName", "Uniqueid"),
    "Hangup": ("Channel", "Uniqueid", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
               "ConnectedLineName", "AccountCode", "Cause", "Cause-txt"),
    "HangupRequest": ("Channel", "Uniqueid", "Cause"),
    "SoftHangupRequest": ("Channel", "Uniqueid", "Cause"),
    "Newexten": ("Channel", "Context", "Extension", "Priority", "Application", "AppData",
                 "Uniqueid"),
    "VarSet": ("Channel", "Variable", "Value", "Uniqueid"),
    "NewCallerid": ("Channel", "CallerIDNum", "CallerIDName", "Uniqueid", "CID-CallingPres"),
    "OriginateResponse": ("ActionID", "Response", "Channel", "Context", "Exten", "Reason",
                          "Uniqueid", "CallerIDNum", "CallerIDName"),
}  # fmt: skip
# Events Asterisk 11 does not have.
_NOT_IN_11: Final = frozenset({"NewConnectedLine", "DeviceStateChange", "DialState"})
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


def _pick(pairs: Pairs, keys: tuple[str, ...], privilege: str | None) -> Pairs:
    values = dict(pairs)
    out: Pairs = [pairs[0]]
    if privilege is not None:
        out.append(("Privilege", privilege))
    out += [(key, values[key]) for key in keys if key in values]
    return out


def rewrite_event(profile: Profile, outcome: str, name: str, pairs: Pairs) -> list[Pairs]:
    """The events ``profile`` sends for one Asterisk 22 event (none, one or more)."""
    if profile.major == "22":
        return [pairs]
    values = dict(pairs)
    privilege = values.get("Privilege")
    if not profile.old_events:
        if name == "Newexten":
            return [[(k, profile.newexten_class + ",all" if k == "Privilege" else v)
                     for k, v in pairs]]  # fmt: skip
        return [pairs]
    if name in _NOT_IN_11:
        return []
    if name in _OLD_KEYS:
        out = _pick(pairs, _OLD_KEYS[name], privilege)
        if name == "OriginateResponse":
            out = [
                (k, _REASON_11.get(outcome, v) if k == "Reason" else v) for k, v in out
            ]  # fmt: skip
            out = [(k, "<null>" if v == "<unknown>" and k == "Uniqueid" else v) for k, v in out]
        return [out]
    if name == "LocalBridge":
        return [[
            ("Event", "LocalBridge"), ("Privilege", privilege or "call,all"),
            ("Channel1", values.get("LocalOneChannel", "")),
            ("Channel2", values.get("LocalTwoChannel", "")),
            ("Uniqueid1", values.get("LocalOneUniqueid", "")),
            ("Uniqueid2", values.get("LocalTwoUniqueid", "")),
            ("LocalOptimization", values.get("LocalOptimization", "Yes")),
            ("Context", values.get("Context", "")), ("Exten", values.get("Exten", "")),
        ]]  # fmt: skip
    if name in ("DialBegin", "DialEnd"):
        channel = values.get("Channel") or values.get("DestChannel", "")
        uid = values.get("Uniqueid") or values.get("DestUniqueid", "")
        head: Pairs = [("Event", "Dial"), ("Privilege", privilege or "call,all")]
        if name == "DialEnd":
            return [[*head, ("SubEvent", "End"), ("Channel", channel), ("UniqueID", uid),
                     ("DialStatus", values.get("DialStatus", ""))]]  # fmt: skip
        return [[
            *head, ("SubEvent", "Begin"), ("Channel", channel),
            ("Destination", values.get("DestChannel", "")),
            ("CallerIDNum", values.get("DestCallerIDNum", "<unknown>")),
            ("CallerIDName", values.get("DestCallerIDName", "<unknown>")),
            ("ConnectedLineNum", values.get("DestConnectedLineNum", "<unknown>")),
            ("ConnectedLineName", values.get("DestConnectedLineName", "<unknown>")),
            ("UniqueID", uid), ("DestUniqueID", values.get("DestUniqueid", "")),
            ("Dialstring", values.get("DialString", "")),
        ]]  # fmt: skip
    # Anything else (Cdr...): the same keys, minus the 12+ snapshot additions.
    return [[(k, v) for k, v in pairs if k not in ("Linkedid", "Language", "SystemName")]]


def fully_booted(profile: Profile, uptime: int, last_reload: int) -> Pairs:
    pairs: Pairs = [("Event", "FullyBooted"), ("Privilege", "system,all")]
    if profile.fullybooted_uptime:
        pairs += [("Uptime", str(uptime)), ("LastReload", str(last_reload))]
    return [*pairs, ("Status", "Fully Booted")]


def core_show_channel(profile: Profile, row: dict[str, str], action_id: str | None) -> bytes:
    """One ``CoreShowChannel`` item from the 22-style fields of a live channel."""
    head: Pairs = [("Event", "CoreShowChannel")]
    if action_id is not None:
        head.append(("ActionID", action_id))
    if not profile.old_events:
        return serialize([*head, *row.items()])
    get = row.get
    return serialize([
        *head, ("Channel", get("Channel", "")), ("UniqueID", get("Uniqueid", "")),
        ("Context", get("Context", "")), ("Extension", get("Exten", "")),
        ("Priority", get("Priority", "1")), ("ChannelState", get("ChannelState", "")),
        ("ChannelStateDesc", get("ChannelStateDesc", "")),
        ("Application", get("Application", "")), ("ApplicationData", get("ApplicationData", "")),
        ("CallerIDnum", get("CallerIDNum", "")), ("CallerIDname", get("CallerIDName", "")),
        ("ConnectedLineNum", get("ConnectedLineNum", "")),
        ("ConnectedLineName", get("ConnectedLineName", "")), ("Duration", get("Duration", "")),
        ("AccountCode", get("AccountCode", "")), ("BridgedChannel", ""), ("BridgedUniqueID", ""),
    ])  # fmt: skip


def list_complete(profile: Profile, event: str, action_id: str | None, items: int) -> bytes:
    """``...Complete``: 11 puts ActionID last, 13+ right after Event (reference 1.5)."""
    aid: Pairs = [("ActionID", action_id)] if action_id is not None else []
    tail: Pairs = [("EventList", "Complete"), ("ListItems", str(items))]
    if profile.old_events:
        return serialize([("Event", event), *tail, *aid])
    return serialize([("Event", event), *aid, *tail])


# -- peers, registrations, queues ----------------------------------------------------------------


@dataclass(slots=True)
class SimPeer:
    tech: str  # SIP, IAX2, PJSIP
    name: str
    status: str  # PeerStatus spelling: Reachable, Unreachable, Lagged, Registered...
    rtt_ms: int | None = 10
    address: str = "203.0.113.10"


@dataclass(slots=True)
class SimQueue:
    members: list[tuple[str, int, bool]]  # (member name, device state number, paused)
    callers: list[float] = field(default_factory=list)  # join times
    completed: int = 0
    abandoned: int = 0


def _default_peers() -> list[SimPeer]:
    return [
        SimPeer("SIP", "carrier-sip", "Reachable", 12),
        SimPeer("SIP", "1001", "Reachable", None),  # no qualify: Unmonitored, has an address
        SimPeer("IAX2", "iax-peer", "Reachable", 20),
        SimPeer("PJSIP", "carrier-pjsip", "Reachable", 15),
        SimPeer("PJSIP", "2001", "Reachable", None),  # registered, not qualified
    ]


class SimulatedExtras:
    """Peers, registrations and queues of a simulated server; answers their list actions."""

    def __init__(
        self, profile: Profile, broadcast: Callable[[list[tuple[str, bytes]]], None]
    ) -> None:
        self.profile = profile
        self._broadcast = broadcast
        self.peers: dict[tuple[str, str], SimPeer] = {
            (p.tech, p.name): p for p in _default_peers() if self._has_tech(p.tech)
        }
        self.registrations: dict[tuple[str, str], str] = {}
        if profile.chan_sip:
            self.registrations[("SIP", "trunkuser@sip.carrier.example")] = "Registered"
        if profile.pjsip:
            self.registrations[("PJSIP", "carrier-pjsip-reg")] = "Registered"
        self.queues: dict[str, SimQueue] = {
            "support": SimQueue([("Agent500", 1, False), ("Agent501", 2, True)], completed=3,
                                abandoned=1),
        }  # fmt: skip
        self.actions: dict[str, Callable[[Message], bytes]] = {
            "iaxpeerlist": self._iax_peers,
            "queuestatus": self._queue_status,
            "queuesummary": self._queue_summary,
        }
        if profile.chan_sip:
            self.actions["sippeers"] = self._sip_peers
            self.actions["sipshowregistry"] = self._sip_registry
        if profile.pjsip:
            self.actions["pjsipshowcontacts"] = self._pjsip_contacts
            self.actions["pjsipshowregistrationsoutbound"] = self._pjsip_registrations

    def _has_tech(self, tech: str) -> bool:
        return {"SIP": self.profile.chan_sip, "PJSIP": self.profile.pjsip}.get(tech, True)

    # -- changes, as events ----------------------------------------------------------------

    def set_peer_status(self, tech: str, name: str, status: str, rtt_ms: int | None = 10) -> None:
        """Change a peer (``Reachable``, ``Unreachable``, ``Lagged``, ``Registered``...) and
        broadcast what this version sends: ``PeerStatus``, plus ``ContactStatus`` for PJSIP."""
        if not self._has_tech(tech):
            raise ValueError(f"Asterisk {self.profile.major} has no {tech}")
        peer = self.peers.get((tech, name))
        if peer is None:
            peer = self.peers[(tech, name)] = SimPeer(tech, name, status, rtt_ms)
        peer.status, peer.rtt_ms = status, rtt_ms
        pairs: Pairs = [("Event", "PeerStatus"), ("Privilege", "system,all"),
                        ("ChannelType", tech), ("Peer", f"{tech}/{name}"),
                        ("PeerStatus", status)]  # fmt: skip
        if tech != "PJSIP":
            pairs += [("Address", f"{peer.address}:5060")]
            if self.profile.old_events and rtt_ms is not None and status != "Unreachable":
                pairs.append(("Time", str(rtt_ms)))  # 1.8/11: ms; 12+ renders no Time
            elif status == "Unreachable":
                pairs.append(("Time", "-1"))
        chunks = [("system", serialize(pairs))]
        if tech == "PJSIP":
            contact_status = status if status in ("Reachable", "Unreachable") else "Unknown"
            chunks.append(("system", serialize([
                ("Event", "ContactStatus"), ("Privilege", "system,all"),
                ("URI", f"sip:{name}@{peer.address}:5060"), ("ContactStatus", contact_status),
                ("AOR", name), ("EndpointName", name),
                ("RoundtripUsec", str((rtt_ms or 0) * 1000)),
            ])))  # fmt: skip
        self._broadcast(chunks)

    def set_registration(self, tech: str, name: str, status: str) -> None:
        """Change an outbound registration (``Registered``, ``Rejected``...) with ``Registry``."""
        self.registrations[(tech, name)] = status
        if tech == "PJSIP":
            username, domain = f"sip:{name}@pjsip.carrier.example", "sip:pjsip.carrier.example"
        else:
            username, _, domain = name.partition("@")
        pairs: Pairs = [("Event", "Registry"), ("Privilege", "system,all"),
                        ("ChannelType", tech), ("Username", username), ("Domain", domain),
                        ("Status", status)]  # fmt: skip
        if status == "Rejected":
            pairs.append(("Cause", "AUTH_SECRET_FAILED" if tech == "SIP" else "403 Forbidden"))
        self._broadcast([("system", serialize(pairs))])

    def add_queue_caller(self, queue: str, waiting_since: float | None = None) -> None:
        self.queues[queue].callers.append(time.time() if waiting_since is None else waiting_since)

    def remove_queue_caller(self, queue: str, *, abandoned: bool = False) -> None:
        q = self.queues[queue]
        if q.callers:
            q.callers.pop(0)
            if abandoned:
                q.abandoned += 1
            else:
                q.completed += 1

    # -- list actions -----------------------------------------------------------------------

    def answer(self, name: str, message: Message) -> bytes | None:
        """Bytes for a list action this profile has, else None (unknown command)."""
        handler = self.actions.get(name)
        return handler(message) if handler is not None else None

    def _list(self, message: Message, what: str, items: list[Pairs], complete: str) -> bytes:
        aid = message.get("ActionID")
        head: Pairs = [("Response", "Success")]
        if aid is not None:
            head.append(("ActionID", aid))
        head += [("EventList", "start"), ("Message", f"{what} will follow")]
        parts = [serialize(head)]
        for item in items:
            parts.append(serialize([*item, *([("ActionID", aid)] if aid is not None else [])]))
        parts.append(list_complete(self.profile, complete, aid, len(items)))
        return b"".join(parts)

    def _peer_entries(self, tech: str) -> list[Pairs]:
        items: list[Pairs] = []
        for peer in self.peers.values():
            if peer.tech != tech:
                continue
            if peer.status in ("Unreachable", "Unregistered", "Rejected"):
                status = "UNREACHABLE"
            elif peer.rtt_ms is None:
                status = "Unmonitored"
            elif peer.status == "Lagged":
                status = f"LAGGED ({peer.rtt_ms} ms)"
            else:
                status = f"OK ({peer.rtt_ms} ms)"
            address = "-none-" if status == "UNREACHABLE" and peer.rtt_ms is None else peer.address
            channel_type = "SIP" if tech == "SIP" else "IAX"
            items.append([("Event", "PeerEntry"), ("Channeltype", channel_type),
                          ("ObjectName", peer.name), ("ChanObjectType", "peer"),
                          ("IPaddress", address), ("IPport", "5060"), ("Dynamic", "no"),
                          ("Status", status)])  # fmt: skip
        return items

    def _sip_peers(self, message: Message) -> bytes:
        return self._list(
            message, "Peer status list", self._peer_entries("SIP"), "PeerlistComplete"
        )

    def _iax_peers(self, message: Message) -> bytes:
        return self._list(message, "Peer status list", self._peer_entries("IAX2"),
                          "PeerlistComplete")  # fmt: skip

    def _sip_registry(self, message: Message) -> bytes:
        items: list[Pairs] = []
        for (tech, name), status in self.registrations.items():
            if tech == "SIP":
                user, _, host = name.partition("@")
                items.append([("Event", "RegistryEntry"), ("Host", host), ("Port", "5060"),
                              ("Username", user), ("Domain", host), ("DomainPort", "5060"),
                              ("Refresh", "105"), ("State", status),
                              ("RegistrationTime", str(int(time.time())))])  # fmt: skip
        return self._list(message, "Registrations", items, "RegistrationsComplete")

    def _pjsip_contacts(self, message: Message) -> bytes:
        items: list[Pairs] = []
        for peer in self.peers.values():
            if peer.tech != "PJSIP" or peer.status in ("Unregistered", "Removed"):
                continue
            if peer.status == "Unreachable":
                status = "Unreachable"
            elif peer.rtt_ms is None:
                status = "Created" if self.profile.contact_created else "NonQualified"
            else:
                status = "Reachable"
            rtt = (
                str(peer.rtt_ms * 1000)
                if peer.rtt_ms is not None and status == "Reachable"
                else "N/A"
            )
            items.append([("Event", "ContactList"), ("ObjectType", "contact"),
                          ("ObjectName", f"{peer.name};@abcdef0123456789"),
                          ("Endpoint", peer.name), ("Uri", f"sip:{peer.name}@{peer.address}:5060"),
                          ("Status", status), ("RoundtripUsec", rtt)])  # fmt: skip
        if not items:
            aid = message.get("ActionID")
            head: Pairs = [("Response", "Error")]
            if aid is not None:
                head.append(("ActionID", aid))
            return serialize([*head, ("Message", "No Contacts found")])
        return self._list(message, "A listing of Contacts", items, "ContactListComplete")

    def _pjsip_registrations(self, message: Message) -> bytes:
        items: list[Pairs] = []
        for (tech, name), status in self.registrations.items():
            if tech == "PJSIP":
                items.append([("Event", "OutboundRegistrationDetail"),
                              ("ObjectType", "registration"), ("ObjectName", name),
                              ("ServerUri", "sip:pjsip.carrier.example"),
                              ("ClientUri", f"sip:{name}@pjsip.carrier.example"),
                              ("Status", status), ("NextReg", "3590")])  # fmt: skip
        return self._list(message, "Following are Events for each Outbound registration",
                          items, "OutboundRegistrationDetailComplete")  # fmt: skip

    def _queue_status(self, message: Message) -> bytes:
        now = time.time()
        items: list[Pairs] = []
        for name, q in self.queues.items():
            items.append([("Event", "QueueParams"), ("Queue", name), ("Max", "0"),
                          ("Strategy", "ringall"), ("Calls", str(len(q.callers))),
                          ("Holdtime", "0"), ("TalkTime", "0"), ("Completed", str(q.completed)),
                          ("Abandoned", str(q.abandoned)), ("ServiceLevel", "0"),
                          ("ServicelevelPerf", "0.0"), ("Weight", "0")])  # fmt: skip
            for member, status, paused in q.members:
                items.append([("Event", "QueueMember"), ("Queue", name), ("Name", member),
                              ("Location", f"Local/{member}@agents"), ("Membership", "static"),
                              ("Penalty", "0"), ("CallsTaken", "0"), ("LastCall", "0"),
                              ("InCall", "0"), ("Status", str(status)),
                              ("Paused", "1" if paused else "0")])  # fmt: skip
            for position, joined in enumerate(q.callers, 1):
                items.append([("Event", "QueueEntry"), ("Queue", name),
                              ("Position", str(position)), ("Channel", f"PJSIP/caller-{position}"),
                              ("Wait", str(int(now - joined)))])  # fmt: skip
        return self._list(message, "Queue status", items, "QueueStatusComplete")

    def _queue_summary(self, message: Message) -> bytes:
        now = time.time()
        items: list[Pairs] = []
        for name, q in self.queues.items():
            available = sum(1 for _, status, paused in q.members if status == 1 and not paused)
            longest = int(now - min(q.callers)) if q.callers else 0
            items.append([("Event", "QueueSummary"), ("Queue", name),
                          ("LoggedIn", str(len(q.members))), ("Available", str(available)),
                          ("Callers", str(len(q.callers))), ("HoldTime", "0"),
                          ("TalkTime", "0"), ("LongestHoldTime", str(longest))])  # fmt: skip
        return self._list(message, "Queue summary", items, "QueueSummaryComplete")
