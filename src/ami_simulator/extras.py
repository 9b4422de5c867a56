"""Peers, registrations and queues of a simulated Asterisk, beyond the captures' calls.

:class:`SimulatedExtras` holds a few SIP, IAX2 and PJSIP peers, outbound registrations and a
queue, answers their list actions where the version profile has the module (``SIPpeers``,
``SIPshowregistry``, ``IAXpeerlist``, ``PJSIPShowContacts``,
``PJSIPShowRegistrationsOutbound``, ``QueueStatus``, ``QueueSummary``) and broadcasts
``PeerStatus``, ``ContactStatus`` and ``Registry`` when a test changes a peer. Answers are worded
by :func:`ami_simulator.profiles.list_answer`; their items carry the ActionID last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ServerSession
from ami_simulator.profiles import Pairs, Profile, list_answer

__all__ = ["SimPeer", "SimQueue", "SimulatedExtras"]

Broadcast = Callable[[list[tuple[str, bytes]]], None]
Item = tuple[str, Pairs]  # a list item: (event name, headers after Event)

_DOWN: Final = ("Unreachable", "Unregistered", "Rejected")


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

    def __init__(self, profile: Profile, broadcast: Broadcast) -> None:
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
        members = [("Agent500", 1, False), ("Agent501", 2, True)]
        self.queues = {"support": SimQueue(members, completed=3, abandoned=1)}
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
        chunks = [("system", ServerSession.event("PeerStatus", *self._peer_status(peer)))]
        if tech == "PJSIP":
            chunks.append(("system", ServerSession.event("ContactStatus", *_contact(peer))))
        self._broadcast(chunks)

    def _peer_status(self, peer: SimPeer) -> Pairs:
        tech, status, rtt_ms = peer.tech, peer.status, peer.rtt_ms
        pairs: Pairs = [
            ("Privilege", "system,all"),
            ("ChannelType", tech),
            ("Peer", f"{tech}/{peer.name}"),
            ("PeerStatus", status),
        ]
        if tech != "PJSIP":
            pairs.append(("Address", f"{peer.address}:5060"))
            if self.profile.old_events and rtt_ms is not None and status != "Unreachable":
                pairs.append(("Time", str(rtt_ms)))  # 1.8/11: ms; 12+ renders no Time
            elif status == "Unreachable":
                pairs.append(("Time", "-1"))
        return pairs

    def set_registration(self, tech: str, name: str, status: str) -> None:
        """Change an outbound registration (``Registered``, ``Rejected``...) with ``Registry``."""
        self.registrations[(tech, name)] = status
        if tech == "PJSIP":
            username, domain = f"sip:{name}@pjsip.carrier.example", "sip:pjsip.carrier.example"
        else:
            username, _, domain = name.partition("@")
        pairs: Pairs = [
            ("Privilege", "system,all"),
            ("ChannelType", tech),
            ("Username", username),
            ("Domain", domain),
            ("Status", status),
        ]
        if status == "Rejected":
            pairs.append(("Cause", "AUTH_SECRET_FAILED" if tech == "SIP" else "403 Forbidden"))
        self._broadcast([("system", ServerSession.event("Registry", *pairs))])

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

    def _list(self, message: Message, what: str, items: list[Item], complete: str) -> bytes:
        return list_answer(
            self.profile,
            message,
            items,
            complete,
            message=f"{what} will follow",
            item_action_id_first=False,
        )

    def _peer_entries(self, tech: str) -> list[Item]:
        channel_type = "SIP" if tech == "SIP" else "IAX"
        items: list[Item] = []
        for peer in self.peers.values():
            if peer.tech != tech:
                continue
            status = _peer_entry_status(peer)
            address = "-none-" if status == "UNREACHABLE" and peer.rtt_ms is None else peer.address
            entry = [
                ("Channeltype", channel_type),
                ("ObjectName", peer.name),
                ("ChanObjectType", "peer"),
                ("IPaddress", address),
                ("IPport", "5060"),
                ("Dynamic", "no"),
                ("Status", status),
            ]
            items.append(("PeerEntry", entry))
        return items

    def _sip_peers(self, message: Message) -> bytes:
        entries = self._peer_entries("SIP")
        return self._list(message, "Peer status list", entries, "PeerlistComplete")

    def _iax_peers(self, message: Message) -> bytes:
        entries = self._peer_entries("IAX2")
        return self._list(message, "Peer status list", entries, "PeerlistComplete")

    def _sip_registry(self, message: Message) -> bytes:
        items: list[Item] = []
        for (tech, name), status in self.registrations.items():
            if tech != "SIP":
                continue
            user, _, host = name.partition("@")
            entry = [
                ("Host", host),
                ("Port", "5060"),
                ("Username", user),
                ("Domain", host),
                ("DomainPort", "5060"),
                ("Refresh", "105"),
                ("State", status),
                ("RegistrationTime", str(int(time.time()))),
            ]
            items.append(("RegistryEntry", entry))
        return self._list(message, "Registrations", items, "RegistrationsComplete")

    def _pjsip_contacts(self, message: Message) -> bytes:
        items: list[Item] = []
        for peer in self.peers.values():
            if peer.tech != "PJSIP" or peer.status in ("Unregistered", "Removed"):
                continue
            items.append(("ContactList", self._contact_entry(peer)))
        if not items:
            # res_pjsip answers an empty list as an error.
            return ServerSession.error(message, "No Contacts found")
        return self._list(message, "A listing of Contacts", items, "ContactListComplete")

    def _contact_entry(self, peer: SimPeer) -> Pairs:
        if peer.status == "Unreachable":
            status = "Unreachable"
        elif peer.rtt_ms is None:
            status = "Created" if self.profile.contact_created else "NonQualified"
        else:
            status = "Reachable"
        reachable = peer.rtt_ms is not None and status == "Reachable"
        return [
            ("ObjectType", "contact"),
            ("ObjectName", f"{peer.name};@abcdef0123456789"),
            ("Endpoint", peer.name),
            ("Uri", f"sip:{peer.name}@{peer.address}:5060"),
            ("Status", status),
            ("RoundtripUsec", str((peer.rtt_ms or 0) * 1000) if reachable else "N/A"),
        ]

    def _pjsip_registrations(self, message: Message) -> bytes:
        items: list[Item] = []
        for (tech, name), status in self.registrations.items():
            if tech != "PJSIP":
                continue
            entry = [
                ("ObjectType", "registration"),
                ("ObjectName", name),
                ("ServerUri", "sip:pjsip.carrier.example"),
                ("ClientUri", f"sip:{name}@pjsip.carrier.example"),
                ("Status", status),
                ("NextReg", "3590"),
            ]
            items.append(("OutboundRegistrationDetail", entry))
        what = "Following are Events for each Outbound registration"
        return self._list(message, what, items, "OutboundRegistrationDetailComplete")

    def _queue_status(self, message: Message) -> bytes:
        now = time.time()
        items: list[Item] = []
        for name, q in self.queues.items():
            items.append(("QueueParams", _queue_params(name, q)))
            for member, status, paused in q.members:
                items.append(("QueueMember", _queue_member(name, member, status, paused)))
            for position, joined in enumerate(q.callers, 1):
                entry = [
                    ("Queue", name),
                    ("Position", str(position)),
                    ("Channel", f"PJSIP/caller-{position}"),
                    ("Wait", str(int(now - joined))),
                ]
                items.append(("QueueEntry", entry))
        return self._list(message, "Queue status", items, "QueueStatusComplete")

    def _queue_summary(self, message: Message) -> bytes:
        now = time.time()
        items: list[Item] = []
        for name, q in self.queues.items():
            available = sum(1 for _, status, paused in q.members if status == 1 and not paused)
            longest = int(now - min(q.callers)) if q.callers else 0
            summary = [
                ("Queue", name),
                ("LoggedIn", str(len(q.members))),
                ("Available", str(available)),
                ("Callers", str(len(q.callers))),
                ("HoldTime", "0"),
                ("TalkTime", "0"),
                ("LongestHoldTime", str(longest)),
            ]
            items.append(("QueueSummary", summary))
        return self._list(message, "Queue summary", items, "QueueSummaryComplete")


def _peer_entry_status(peer: SimPeer) -> str:
    """``PeerEntry``'s Status column: ``OK (12 ms)``, ``UNREACHABLE``, ``Unmonitored``..."""
    if peer.status in _DOWN:
        return "UNREACHABLE"
    if peer.rtt_ms is None:
        return "Unmonitored"
    if peer.status == "Lagged":
        return f"LAGGED ({peer.rtt_ms} ms)"
    return f"OK ({peer.rtt_ms} ms)"


def _contact(peer: SimPeer) -> Pairs:
    """``ContactStatus``'s headers after Event, for a PJSIP peer's change."""
    status = peer.status if peer.status in ("Reachable", "Unreachable") else "Unknown"
    return [
        ("Privilege", "system,all"),
        ("URI", f"sip:{peer.name}@{peer.address}:5060"),
        ("ContactStatus", status),
        ("AOR", peer.name),
        ("EndpointName", peer.name),
        ("RoundtripUsec", str((peer.rtt_ms or 0) * 1000)),
    ]


def _queue_params(name: str, q: SimQueue) -> Pairs:
    return [
        ("Queue", name),
        ("Max", "0"),
        ("Strategy", "ringall"),
        ("Calls", str(len(q.callers))),
        ("Holdtime", "0"),
        ("TalkTime", "0"),
        ("Completed", str(q.completed)),
        ("Abandoned", str(q.abandoned)),
        ("ServiceLevel", "0"),
        ("ServicelevelPerf", "0.0"),
        ("Weight", "0"),
    ]


def _queue_member(queue: str, member: str, status: int, paused: bool) -> Pairs:
    return [
        ("Queue", queue),
        ("Name", member),
        ("Location", f"Local/{member}@agents"),
        ("Membership", "static"),
        ("Penalty", "0"),
        ("CallsTaken", "0"),
        ("LastCall", "0"),
        ("InCall", "0"),
        ("Status", str(status)),
        ("Paused", "1" if paused else "0"),
    ]
