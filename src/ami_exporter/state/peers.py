"""Trunks, peers and outbound registrations, from events and from polls.

Sources (AMI reference 3.10):

* events, as they happen: ``PeerStatus`` (chan_sip, IAX2, PJSIP endpoints), ``ContactStatus``
  (PJSIP contacts, 13.5+) and ``Registry`` (outbound registrations of chan_sip and PJSIP);
* polls after every login and every resync, for the full picture (events missed while
  disconnected are not replayed): ``SIPpeers`` (``PeerEntry``), ``IAXpeerlist`` (``PeerEntry``),
  ``PJSIPShowContacts`` (``ContactList``), ``SIPshowregistry`` (``RegistryEntry``) and
  ``PJSIPShowRegistrationsOutbound`` (``OutboundRegistrationDetail``).

A peer is ``(tech, name)``: ``SIP``/``IAX2`` peers by name, ``PJSIP`` endpoints by endpoint
name (a PJSIP endpoint is up while any of its contacts is). Every update is O(1) per event or
list item: an endpoint keeps at most :data:`MAX_CONTACTS` contacts (a ``ContactStatus`` for
one more is counted in ``dropped_contacts``, not tracked), so recomputing its state from its
contacts is bounded too. Peers can number in the thousands (every agent phone), so a
per-server include/exclude regex selects which are exported, and at most :data:`MAX_PEERS`
are tracked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.state.labels import MAX_LABEL_LENGTH, bounded

log = logging.getLogger("ami_exporter.peers")

MAX_PEERS: Final = 10_000
MAX_REGISTRATIONS: Final = 1_000
MAX_NAME_LENGTH: Final = MAX_LABEL_LENGTH
# Contacts of one PJSIP endpoint (max_contacts of its AOR: 1 for a phone, a few for a
# softphone on several devices). Without a cap, N contacts made each event O(N).
MAX_CONTACTS: Final = 32
MAX_URI_LENGTH: Final = 512  # contact and client URIs used as keys (never exported)

# Lower-case status -> (label, up). Events and poll items use these spellings (reference 3.10).
_STATUSES: Final[dict[str, tuple[str, bool]]] = {
    "registered": ("registered", True),
    "reachable": ("reachable", True),
    "lagged": ("lagged", True),
    "ok": ("reachable", True),
    "unregistered": ("unregistered", False),
    "rejected": ("rejected", False),
    "unreachable": ("unreachable", False),
    # PJSIP contacts: a contact that exists is registered even when it is not qualified.
    "nonqualified": ("nonqualified", True),
    "unqualified": ("nonqualified", True),
    "created": ("nonqualified", True),
    "unknown": ("unknown", True),
}
_TECHS: Final = {"sip": "SIP", "iax2": "IAX2", "iax": "IAX2", "pjsip": "PJSIP"}
_NO_ADDRESS: Final = frozenset({"", "-none-", "(null)", "0.0.0.0", "(Unspecified)"})
_POLL_RTT = re.compile(r"\((\d+) ms\)")


def _tech(raw: str | None) -> str | None:
    return _TECHS.get((raw or "").strip().lower())


def _name(raw: str | None) -> str:
    """A label-safe peer or registration name (:func:`~.labels.bounded`)."""
    return bounded((raw or "").strip())


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


@dataclass(slots=True)
class Peer:
    up: bool = False
    status: str = "unknown"
    rtt: float | None = None  # seconds, where qualify gives a time
    # PJSIP only: contact URI -> (up, rtt); the endpoint is up while any contact is.
    contacts: dict[str, tuple[bool, float | None]] = field(default_factory=dict)


class PeerState:
    """Peers and registrations of one server; fed by :class:`.server.ServerState`."""

    def __init__(self) -> None:
        self.peers: dict[tuple[str, str], Peer] = {}
        self.changes: dict[tuple[str, str, str], int] = {}
        self.registrations: dict[tuple[str, str], bool] = {}
        self.dropped_peers = 0  # peers not tracked because MAX_PEERS was reached
        self.dropped_contacts = 0  # contact updates not tracked: the endpoint has MAX_CONTACTS
        self._include: re.Pattern[str] | None = None
        self._exclude: re.Pattern[str] | None = None
        self._registration_names: dict[str, str] = {}  # PJSIP client URI -> object name
        self._known: set[tuple[str, str]] = set()  # peers whose status is known

    def set_filter(self, include: str | None, exclude: str | None) -> None:
        """Export only peers whose name matches ``include`` and not ``exclude`` (re.search)."""
        self._include = re.compile(include) if include else None
        self._exclude = re.compile(exclude) if exclude else None

    def wanted(self, name: str) -> bool:
        if self._include is not None and self._include.search(name) is None:
            return False
        return self._exclude is None or self._exclude.search(name) is None

    # ------------------------------------------------------------------ peers

    def _peer(self, tech: str, name: str) -> Peer | None:
        key = (tech, name)
        peer = self.peers.get(key)
        if peer is None:
            if not name or not self.wanted(name):
                return None
            if len(self.peers) >= MAX_PEERS:
                if not self.dropped_peers:
                    log.warning("more than %d peers: the rest are not exported", MAX_PEERS)
                self.dropped_peers += 1
                return None
            peer = self.peers[key] = Peer()
        return peer

    def _record(self, tech: str, name: str, peer: Peer, status: str, *, event: bool) -> None:
        """Set a peer's status and count a change: an event that alters the known status or
        names a peer not known yet, or a poll that finds a known peer's status altered (an
        event missed while disconnected). A repeated status is no change (13-16 repeat
        ContactStatus on every registration refresh)."""
        key = (tech, name)
        known = key in self._known
        if (known and peer.status != status) or (event and not known):
            change = (tech, name, status)
            self.changes[change] = self.changes.get(change, 0) + 1
        self._known.add(key)
        peer.status = status

    def on_peer_status(self, msg: Message) -> None:
        """``PeerStatus``: ``ChannelType``, ``Peer`` (``SIP/name``), ``PeerStatus``, ``Time``."""
        raw_peer = msg.get("Peer") or ""
        slash = raw_peer.find("/")
        tech = _tech(msg.get("ChannelType")) or _tech(raw_peer[:slash] if slash > 0 else "")
        if tech is None:
            return
        name = _name(raw_peer[slash + 1 :] if slash >= 0 else raw_peer)
        peer = self._peer(tech, name)
        if peer is None:
            return
        label, up = _STATUSES.get((msg.get("PeerStatus") or "").strip().lower(), ("other", False))
        peer.up = up
        if not up:
            peer.rtt = None
        else:
            # 1.8/11 chan_sip: Time in ms; 12+ Reachable/Lagged carry none; Unreachable -1.
            ms = _number(msg.get("Time"))
            if ms is not None and ms >= 0:
                peer.rtt = ms / 1000.0
        self._record(tech, name, peer, label, event=True)

    def on_contact_status(self, msg: Message) -> None:
        """``ContactStatus`` (PJSIP): ``URI``, ``ContactStatus``, ``AOR``, ``EndpointName``."""
        name = _name(msg.get("EndpointName") or msg.get("AOR"))
        peer = self._peer("PJSIP", name)
        if peer is None:
            return
        uri = (msg.get("URI") or "")[:MAX_URI_LENGTH]
        contacts = peer.contacts
        raw = (msg.get("ContactStatus") or "").strip().lower()
        if raw == "removed":
            contacts.pop(uri, None)
            label = "removed"
        else:
            if uri not in contacts and len(contacts) >= MAX_CONTACTS:
                self._drop_contact()
                return
            label, up = _STATUSES.get(raw, ("other", False))
            if raw == "updated":  # a refreshed registration: the contact keeps its state
                up = contacts.get(uri, (True, None))[0]
                label = peer.status
            usec = _number(msg.get("RoundtripUsec"))
            contacts[uri] = (up, usec / 1e6 if up and usec else None)
        self._update_from_contacts(peer)
        self._record("PJSIP", name, peer, label, event=True)

    def _drop_contact(self) -> None:
        if not self.dropped_contacts:
            log.warning(
                "an endpoint has more than %d contacts: the rest are not tracked", MAX_CONTACTS
            )
        self.dropped_contacts += 1

    @staticmethod
    def _update_from_contacts(peer: Peer) -> None:
        # At most MAX_CONTACTS contacts: a bounded walk, O(1) per event.
        up = False
        rtt: float | None = None
        for contact_up, contact_rtt in peer.contacts.values():
            if contact_up:
                up = True
                if contact_rtt is not None and (rtt is None or contact_rtt < rtt):
                    rtt = contact_rtt
        peer.up = up
        peer.rtt = rtt

    def apply_peer_list(self, items: Iterable[Message]) -> None:
        """A ``SIPpeers`` or ``IAXpeerlist`` snapshot (``PeerEntry`` items): replaces that tech."""
        listed: set[tuple[str, str]] = set()
        techs: set[str] = set()
        for item in items:
            if item.name != "PeerEntry":
                continue
            tech = _tech(item.get("Channeltype"))
            if tech is None:
                continue
            techs.add(tech)
            name = _name(item.get("ObjectName"))
            peer = self._peer(tech, name)
            if peer is None:
                continue
            listed.add((tech, name))
            status = (item.get("Status") or "").strip()
            lower = status.lower()
            rtt_match = _POLL_RTT.search(status)
            has_address = (item.get("IPaddress") or "").strip() not in _NO_ADDRESS
            if lower.startswith("ok"):
                label, up = "reachable", True
            elif lower.startswith("lagged"):
                label, up = "lagged", True
            elif lower.startswith("unreachable"):
                label, up = "unreachable", False
            elif lower.startswith("unmonitored"):
                label, up = "unmonitored", has_address  # no qualify: known address = usable
            elif lower.startswith("unknown"):
                label, up = "unknown", has_address
            else:
                label, up = "other", False
            peer.up = up
            peer.rtt = int(rtt_match[1]) / 1000.0 if up and rtt_match else None
            self._record(tech, name, peer, label, event=False)
        for key in [k for k in self.peers if k[0] in techs and k not in listed]:
            del self.peers[key]  # deleted from the configuration
            self._known.discard(key)

    def apply_contact_list(self, items: Iterable[Message]) -> None:
        """A ``PJSIPShowContacts`` snapshot (``ContactList`` items): rebuilds PJSIP contacts."""
        contacts: dict[str, dict[str, tuple[bool, float | None]]] = {}
        statuses: dict[str, str] = {}
        for item in items:
            if item.name != "ContactList":
                continue
            object_name = item.get("ObjectName") or ""
            name = _name(item.get("Endpoint") or object_name.split(";@", 1)[0])
            if not name:
                continue
            raw = (item.get("Status") or "").strip().lower()
            label, up = _STATUSES.get(raw, ("other", False))
            usec = _number(item.get("RoundtripUsec"))
            uri = (item.get("Uri") or object_name)[:MAX_URI_LENGTH]
            endpoint_contacts = contacts.setdefault(name, {})
            if uri not in endpoint_contacts and len(endpoint_contacts) >= MAX_CONTACTS:
                self._drop_contact()
                continue
            endpoint_contacts[uri] = (up, usec / 1e6 if up and usec else None)
            if up or name not in statuses:
                statuses[name] = label
        for name, endpoint_contacts in contacts.items():
            peer = self._peer("PJSIP", name)
            if peer is None:
                continue
            peer.contacts = endpoint_contacts
            self._update_from_contacts(peer)
            label = statuses[name]
            self._record("PJSIP", name, peer, label, event=False)
        for (tech, name), peer in self.peers.items():
            if tech == "PJSIP" and name not in contacts and peer.contacts:
                # Known endpoint without any contact now: unregistered, kept at 0.
                peer.contacts = {}
                self._update_from_contacts(peer)

    # ------------------------------------------------------------------ registrations

    def _set_registration(self, tech: str, name: str, status: str | None) -> None:
        if not name:
            return
        key = (tech, name)
        if key not in self.registrations and len(self.registrations) >= MAX_REGISTRATIONS:
            return
        self.registrations[key] = (status or "").strip().lower() == "registered"

    def on_registry(self, msg: Message) -> None:
        """``Registry``: ``ChannelType``, ``Username``, ``Domain``, ``Status``."""
        tech = _tech(msg.get("ChannelType"))
        if tech is None:
            return
        username = msg.get("Username") or ""
        if tech == "PJSIP":
            # Username is the client URI; the poll taught us the registration's name.
            name = self._registration_names.get(username) or _name(username)
        else:
            name = _name(f"{username}@{msg.get('Domain') or ''}")
        self._set_registration(tech, name, msg.get("Status"))

    def apply_registry_list(self, items: Iterable[Message]) -> None:
        """A ``SIPshowregistry`` snapshot (``RegistryEntry`` items: Host, Username, State)."""
        listed: set[tuple[str, str]] = set()
        for item in items:
            if item.name != "RegistryEntry":
                continue
            name = _name(f"{item.get('Username') or ''}@{item.get('Host') or ''}")
            self._set_registration("SIP", name, item.get("State"))
            listed.add(("SIP", name))
        self._drop_unlisted("SIP", listed)

    def apply_outbound_registrations(self, items: Iterable[Message]) -> None:
        """``PJSIPShowRegistrationsOutbound`` (``OutboundRegistrationDetail`` items)."""
        listed: set[tuple[str, str]] = set()
        names: dict[str, str] = {}  # rebuilt at every poll: old client URIs must not pile up
        for item in items:
            if item.name != "OutboundRegistrationDetail":
                continue
            name = _name(item.get("ObjectName"))
            client_uri = item.get("ClientUri")
            if (
                client_uri
                and name
                and len(names) < MAX_REGISTRATIONS
                and len(client_uri) <= MAX_URI_LENGTH
            ):
                names[client_uri] = name
            self._set_registration("PJSIP", name, item.get("Status"))
            listed.add(("PJSIP", name))
        self._registration_names = names
        self._drop_unlisted("PJSIP", listed)

    def _drop_unlisted(self, tech: str, listed: set[tuple[str, str]]) -> None:
        for key in [k for k in self.registrations if k[0] == tech and k not in listed]:
            del self.registrations[key]
