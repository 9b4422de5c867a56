"""Trunks, peers and outbound registrations, from events and from polls.

Sources (AMI reference 3.10; what real Asterisk sends is in ``tests/fixtures/pjsip`` and
``tests/fixtures/sip18``):

* events, as they happen: ``PeerStatus`` (chan_sip, IAX2, PJSIP endpoints), ``ContactStatus``
  (PJSIP contacts, 13.5+) and ``Registry`` (outbound registrations of chan_sip and PJSIP);
* polls after every login and every resync, for the full picture (events missed while
  disconnected are not replayed), each only where ``ListCommands`` lists it for this user:
  ``SIPpeers`` and ``IAXpeerlist`` (``PeerEntry``), ``PJSIPShowAors`` (``AorList``) and
  ``PJSIPShowEndpoints`` (``EndpointList``: every endpoint with its contacts and its device
  state; write class ``system``), ``PJSIPShowContacts`` (``ContactList``: the contacts added
  by registration only), ``SIPshowregistry`` (``RegistryEntry``) and
  ``PJSIPShowRegistrationsOutbound`` (``OutboundRegistrationDetail``);
* targeted re-polls: ``SIPshowpeer`` for a chan_sip peer whose ``PeerStatus`` came without a
  round trip (12+ never sends ``Time``), ``PJSIPShowEndpoint`` (``ContactStatusDetail``) for
  a reachable PJSIP endpoint no event gave a round trip for, ``SIPshowregistry`` when a
  ``Registry`` event cannot be told apart (it names the registrar's host, not its port).
  See :meth:`PeerState.pop_wanted`.

A peer is ``(tech, name)``: ``SIP``/``IAX2`` peers by name, ``PJSIP`` endpoints by endpoint
name. Its status is one of :data:`STATUSES`; ``up`` is 1 for ``reachable``, ``lagged`` and
``registered``, 0 for ``unreachable`` and ``unregistered``, and unknown (not exported) for
``unmonitored`` (qualify off: Asterisk checks nothing) and ``unknown`` (no qualify answer yet).
A PJSIP endpoint's status comes from its contacts (at most :data:`MAX_CONTACTS`): a static AOR
contact is not listed by ``PJSIPShowContacts`` (it answers ``No Contacts found``), so that
answer only drops the contacts added by registration; the endpoint-level ``PeerStatus`` and
the polled device state correct the qualified contacts when they disagree.

Every peer is tracked (at most :data:`MAX_PEERS` selected and as many others) and counted by
tech and status; only the peers the operator selected (the per-server include/exclude regexes;
by default every name that is not all digits, as agent phones are numbers) get series of their
own. Every update is O(1) per event or list item.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
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
# Targeted re-polls: a peer at most once per this many seconds, and at most this many
# waiting (a flapping fleet must not turn into a flood of actions).
REFRESH_PEER_INTERVAL: Final = 30.0
MAX_REFRESH_WANTED: Final = 64
# PJSIPShowEndpoint (a 4 KB answer) for a reachable endpoint whose round trip no event gave:
# at most once per endpoint in this many seconds.
REFRESH_DETAIL_INTERVAL: Final = 600.0
# chan_sip re-registers EXPIRY_GUARD_SECS (15 s) before the registrar's expiry; a refresh that
# has not succeeded by then has let the registration lapse. Without a polled Refresh, a
# pending registration is down this long after its first "Request Sent" (registertimeout's
# default, 20 s: one full attempt went unanswered).
REGISTRATION_EXPIRY_GUARD: Final = 15.0
REGISTRATION_PENDING_GRACE: Final = 20.0

# The status vocabulary (label values of asterisk_peers and asterisk_peers_status_changes).
STATUSES: Final = (
    "reachable",
    "lagged",
    "registered",
    "unreachable",
    "unregistered",
    "unknown",
    "unmonitored",
    "other",
)
# status -> peer_up; None: reachability unknown, no asterisk_peer_up sample.
UP: Final[dict[str, bool | None]] = {
    "reachable": True,
    "lagged": True,
    "registered": True,
    "unreachable": False,
    "unregistered": False,
    "other": False,
    "unknown": None,
    "unmonitored": None,
}
# PeerStatus values (chan_sip, IAX2) -> status; None: not a change of the peer's state.
_PEER_STATUS: Final[dict[str, str | None]] = {
    "reachable": "reachable",
    "lagged": "lagged",
    "unreachable": "unreachable",
    "registered": "registered",
    "unregistered": "unregistered",
    "rejected": None,  # a refused REGISTER from the device: its registration is unchanged
    "unknown": "unknown",
}
# ContactStatus / ContactList / ContactStatusDetail values -> status.
_CONTACT_STATUS: Final[dict[str, str]] = {
    "reachable": "reachable",
    "avail": "reachable",
    "unreachable": "unreachable",
    "unavail": "unreachable",
    "unknown": "unknown",
    "nonqualified": "unmonitored",
    "unqualified": "unmonitored",
    "created": "registered",
}
# Qualify states of a contact: the ones an endpoint-level verdict may flip.
_QUALIFIED: Final = frozenset({"reachable", "lagged", "unreachable", "unknown"})
# Endpoint status from its contacts: the first present wins.
_CONTACT_ORDER: Final = ("reachable", "lagged", "registered", "unreachable", "unknown")
# Device states (EndpointList) of an endpoint that is offline; "Unknown" says nothing.
_OFFLINE: Final = frozenset({"unavailable", "invalid"})
_PENDING_REGISTRATION: Final = frozenset({"request sent", "auth. sent"})
_TECHS: Final = {"sip": "SIP", "iax2": "IAX2", "iax": "IAX2", "pjsip": "PJSIP"}
_NO_ADDRESS: Final = frozenset({"", "-none-", "(null)", "0.0.0.0", "(unspecified)"})
_POLL_RTT = re.compile(r"\((\d+) ms\)")
_ALL_DIGITS = re.compile(r"[0-9]+\Z")


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


def _usec(raw: str | None, status: str) -> float | None:
    """A contact's RoundtripUsec in seconds, for a reachable contact that gives one."""
    usec = _number(raw)
    return usec / 1e6 if status in ("reachable", "lagged") and usec else None


def sip_status(raw: str | None, *, dynamic: bool, has_address: bool) -> tuple[str, float | None]:
    """A ``SIPpeers``/``SIPshowpeer``/``IAXpeerlist`` ``Status`` as (status, rtt seconds).

    chan_sip's ``peer_status()``: ``OK (n ms)``, ``LAGGED (n ms)``, ``UNREACHABLE``,
    ``UNKNOWN`` (qualify on, no answer yet), ``Unmonitored`` (qualify off). A dynamic peer
    (a phone) without qualify is registered while it has an address, else unregistered.
    """
    status = (raw or "").strip()
    lower = status.lower()
    rtt_match = _POLL_RTT.search(status)
    rtt = int(rtt_match[1]) / 1000.0 if rtt_match else None
    if lower.startswith("ok"):
        return "reachable", rtt
    if lower.startswith("lagged"):
        return "lagged", rtt
    if lower.startswith("unreachable"):
        return "unreachable", None
    if dynamic and not has_address:
        return "unregistered", None
    if lower.startswith("unmonitored"):
        return ("registered" if dynamic else "unmonitored"), None
    if lower.startswith("unknown"):
        return "unknown", None
    return "other", None


@dataclass(slots=True)
class Contact:
    """One PJSIP contact: its status, round trip, and whether a registration added it."""

    status: str
    rtt: float | None = None
    dynamic: bool = False


@dataclass(slots=True)
class Peer:
    status: str = "unknown"
    rtt: float | None = None  # seconds, where qualify gives a time
    selected: bool = False  # the operator's filter: series of its own
    changes: int = 0  # status changes seen (asterisk_peer_status_changes_total)
    known: bool = False  # a status was seen (an event, or a poll)
    # PJSIP only: contact URI -> contact; the endpoint's status follows them.
    contacts: dict[str, Contact] = field(default_factory=dict)

    @property
    def up(self) -> bool | None:
        return UP.get(self.status, False)


@dataclass(slots=True)
class Registration:
    """An outbound registration. ``Request Sent``/``Auth. Sent`` is a refresh in progress:
    the registration stays up until the registrar's expiry has passed without a success."""

    status: str = "unknown"  # lower-case, as Asterisk spells it
    registered_at: float | None = None  # monotonic time of the last success seen
    pending_since: float | None = None  # first Request Sent after it
    refresh: float | None = None  # SIPshowregistry Refresh: seconds between refreshes
    host: str = ""  # chan_sip: (username, host) as the Registry event names it
    username: str = ""

    def up(self, now: float) -> bool:
        if self.status == "registered":
            return True
        if self.status not in _PENDING_REGISTRATION or self.registered_at is None:
            return False
        if self.refresh is not None:
            deadline = self.registered_at + self.refresh + REGISTRATION_EXPIRY_GUARD
        else:
            since = self.pending_since if self.pending_since is not None else self.registered_at
            deadline = since + REGISTRATION_PENDING_GRACE
        return now < deadline

    def set_status(self, raw: str | None, now: float) -> None:
        status = (raw or "").strip().lower() or "unknown"
        if status == "registered":
            self.registered_at = now
            self.pending_since = None
        elif status in _PENDING_REGISTRATION:
            if self.pending_since is None:
                self.pending_since = now
        else:
            self.pending_since = None
        self.status = status


class PeerState:
    """Peers and registrations of one server; fed by :class:`.server.ServerState`."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self.enabled = True  # --collector.peers: no polls and no series when False
        self.peers: dict[tuple[str, str], Peer] = {}
        self.counts: dict[tuple[str, str], int] = {}  # (tech, status) -> peers now
        self.changes: dict[tuple[str, str], int] = {}  # (tech, new status) -> changes
        self.registrations: dict[tuple[str, str], Registration] = {}
        self.dropped_peers = 0  # peers not tracked because MAX_PEERS was reached
        self._tracked = {False: 0, True: 0}  # peers tracked, by selected
        self.dropped_contacts = 0  # contact updates not tracked: the endpoint has MAX_CONTACTS
        # Targeted re-polls the client should send: ("SIPshowpeer", name) or
        # ("SIPshowregistry", ""), in arrival order; ``on_wanted`` wakes the client.
        self.wanted: dict[tuple[str, str], None] = {}
        self.on_wanted: Callable[[], None] | None = None
        self._refreshed: dict[tuple[str, str], float] = {}  # (action, peer) -> last asked
        self._now = now or (lambda: 0.0)
        self._include: re.Pattern[str] | None = None
        self._exclude: re.Pattern[str] | None = _ALL_DIGITS
        self._registration_names: dict[str, str] = {}  # PJSIP client URI -> object name
        self._aor_qualified: dict[str, bool] = {}  # PJSIP AOR -> qualify_frequency > 0

    def set_filter(self, include: str | None, exclude: str | None) -> None:
        """Series of their own only for peers whose name matches ``include`` and not
        ``exclude`` (re.search); with neither, every name that is not all digits."""
        self._include = re.compile(include) if include else None
        if include or exclude:
            self._exclude = re.compile(exclude) if exclude else None
        else:
            self._exclude = _ALL_DIGITS
        self._tracked = {False: 0, True: 0}
        for (_, name), peer in self.peers.items():
            peer.selected = self.selected(name)
            self._tracked[peer.selected] += 1

    def selected(self, name: str) -> bool:
        if self._include is not None and self._include.search(name) is None:
            return False
        exclude = self._exclude
        if exclude is _ALL_DIGITS:
            return exclude.match(name) is None
        return exclude is None or exclude.search(name) is None

    # ------------------------------------------------------------------ peers

    def _peer(self, tech: str, name: str) -> Peer | None:
        key = (tech, name)
        peer = self.peers.get(key)
        if peer is None:
            if not name:
                return None
            selected = self.selected(name)
            # The cap holds for selected and other peers each: 10,000 phones first must not
            # leave the trunks untracked.
            if self._tracked[selected] >= MAX_PEERS:
                if not self.dropped_peers:
                    log.warning("more than %d peers: the rest are not tracked", MAX_PEERS)
                self.dropped_peers += 1
                return None
            peer = self.peers[key] = Peer(selected=selected)
            self._tracked[selected] += 1
            self._count(tech, peer.status, 1)
        return peer

    def _count(self, tech: str, status: str, delta: int) -> None:
        key = (tech, status)
        n = self.counts.get(key, 0) + delta
        if n:
            self.counts[key] = n
        else:
            self.counts.pop(key, None)

    def _set(self, tech: str, peer: Peer, status: str, *, event: bool) -> None:
        """Set a peer's status and count a change: an event that alters the known status or
        names a peer not known yet, or a poll that finds a known peer's status altered (an
        event missed while disconnected). A repeated status is no change (13-16 repeat
        ContactStatus on every registration refresh)."""
        old = peer.status
        if (peer.known and old != status) or (event and not peer.known):
            peer.changes += 1
            key = (tech, status)
            self.changes[key] = self.changes.get(key, 0) + 1
        peer.known = True
        if old != status:
            self._count(tech, old, -1)
            self._count(tech, status, 1)
            peer.status = status

    def _forget(self, key: tuple[str, str]) -> None:
        peer = self.peers.pop(key, None)
        if peer is not None:
            self._count(key[0], peer.status, -1)
            self._tracked[peer.selected] -= 1

    def on_peer_status(self, msg: Message) -> None:
        """``PeerStatus``: ``ChannelType``, ``Peer`` (``SIP/name``), ``PeerStatus``, ``Time``."""
        raw_peer = msg.get("Peer") or ""
        slash = raw_peer.find("/")
        tech = _tech(msg.get("ChannelType")) or _tech(raw_peer[:slash] if slash > 0 else "")
        if tech is None:
            return
        name = _name(raw_peer[slash + 1 :] if slash >= 0 else raw_peer)
        raw = (msg.get("PeerStatus") or "").strip().lower()
        status = _PEER_STATUS.get(raw, "other")
        if status is None:
            return
        peer = self._peer(tech, name)
        if peer is None:
            return
        if tech == "PJSIP":
            self._endpoint_online(peer, UP.get(status), event=True)
            return
        if status == "registered" and peer.status in ("reachable", "lagged"):
            return  # a qualified phone re-registering: still reachable
        if UP.get(status):
            # 1.8/11 chan_sip: Time in ms; 12+ Reachable/Lagged carry none: ask SIPshowpeer.
            ms = _number(msg.get("Time"))
            if ms is not None and ms >= 0:
                peer.rtt = ms / 1000.0
            elif tech == "SIP" and status != "registered":
                self._want_peer(name, peer)
        else:
            peer.rtt = None
        self._set(tech, peer, status, event=True)

    def _want_peer(
        self,
        name: str,
        peer: Peer,
        action: str = "SIPshowpeer",
        every: float = REFRESH_PEER_INTERVAL,
    ) -> None:
        """Ask the client for ``action`` about a selected peer, at most once per ``every``."""
        if not peer.selected or len(self.wanted) >= MAX_REFRESH_WANTED:
            return
        now = self._now()
        key = (action, name)
        last = self._refreshed.get(key)
        if last is not None and now - last < every:
            return
        self._refreshed[key] = now
        if len(self._refreshed) > MAX_PEERS:
            self._refreshed.clear()  # bounded: at worst one extra re-poll per peer
        self._want(key)

    def _want(self, what: tuple[str, str]) -> None:
        if what not in self.wanted:
            self.wanted[what] = None
            if self.on_wanted is not None:
                self.on_wanted()

    def pop_wanted(self) -> tuple[str, str] | None:
        """The oldest targeted re-poll asked for and not sent yet (the client sends it)."""
        if not self.wanted:
            return None
        what = next(iter(self.wanted))
        del self.wanted[what]
        return what

    def on_contact_status(self, msg: Message) -> None:
        """``ContactStatus`` (PJSIP): ``URI``, ``ContactStatus``, ``AOR``, ``EndpointName``."""
        name = _name(msg.get("EndpointName") or msg.get("AOR"))
        peer = self._peer("PJSIP", name)
        if peer is None:
            return
        uri = (msg.get("URI") or "")[:MAX_URI_LENGTH]
        contacts = peer.contacts
        raw = (msg.get("ContactStatus") or "").strip().lower()
        contact = contacts.get(uri)
        if raw == "removed":
            contacts.pop(uri, None)
        else:
            if contact is None:
                if len(contacts) >= MAX_CONTACTS:
                    self._drop_contact()
                    return
                contact = contacts[uri] = Contact("unknown")
            if raw in ("created", "updated"):
                contact.dynamic = True  # added (refreshed) by a registration
                if raw == "created" or contact.status in ("unknown", "unmonitored"):
                    contact.status = "registered"
            else:
                contact.status = _CONTACT_STATUS.get(raw, "other")
                if contact.dynamic and contact.status == "unmonitored":
                    contact.status = "registered"
            rtt = _usec(msg.get("RoundtripUsec"), contact.status)
            if rtt is not None or not UP.get(contact.status):
                contact.rtt = rtt  # else an Updated (a refresh) keeps the one it had
        self._set("PJSIP", peer, self._from_contacts(peer), event=True)

    def _drop_contact(self) -> None:
        if not self.dropped_contacts:
            log.warning(
                "an endpoint has more than %d contacts: the rest are not tracked", MAX_CONTACTS
            )
        self.dropped_contacts += 1

    @staticmethod
    def _from_contacts(peer: Peer) -> str:
        """An endpoint's status from its contacts (at most MAX_CONTACTS: O(1) per event);
        sets its round trip, the smallest of its reachable contacts'."""
        seen: set[str] = set()
        rtt: float | None = None
        for contact in peer.contacts.values():
            seen.add(contact.status)
            if UP.get(contact.status) and contact.rtt is not None:
                rtt = contact.rtt if rtt is None else min(rtt, contact.rtt)
        peer.rtt = rtt
        for status in _CONTACT_ORDER:
            if status in seen:
                return status
        if "unmonitored" in seen:
            return "unmonitored"
        return "other" if seen else "unregistered"

    def _endpoint_online(self, peer: Peer, online: bool | None, *, event: bool) -> None:
        """An endpoint-level verdict (PJSIP ``PeerStatus``, polled device state): where its
        qualified contacts disagree (an event missed), they take the verdict."""
        if online is None:
            return
        status = self._from_contacts(peer) if peer.contacts else peer.status
        if UP.get(status) is not online:
            flipped = False
            for contact in peer.contacts.values():
                if contact.status in _QUALIFIED:
                    contact.status = "reachable" if online else "unreachable"
                    contact.rtt = None
                    flipped = True
            if flipped:
                status = self._from_contacts(peer)
            elif not peer.contacts:
                status, peer.rtt = ("reachable" if online else "unreachable"), None
        self._set("PJSIP", peer, status, event=event)

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
            address = (item.get("IPaddress") or "").strip().lower()
            status, rtt = sip_status(
                item.get("Status"),
                dynamic=(item.get("Dynamic") or "").strip().lower() in ("yes", "y"),
                has_address=address not in _NO_ADDRESS,
            )
            peer.rtt = rtt
            self._set(tech, peer, status, event=False)
        for key in [k for k in self.peers if k[0] in techs and k not in listed]:
            self._forget(key)  # deleted from the configuration

    def apply_sip_peer(self, response: Message) -> None:
        """A ``SIPshowpeer`` answer (one peer's fields in the response itself)."""
        name = _name(response.get("ObjectName"))
        peer = self.peers.get(("SIP", name))
        if peer is None:
            return
        address = (response.get("Address-IP") or "").strip().lower()
        status, rtt = sip_status(
            response.get("Status"),
            dynamic=(response.get("Dynamic") or "").strip().upper() == "Y",
            has_address=address not in _NO_ADDRESS,
        )
        peer.rtt = rtt
        self._set("SIP", peer, status, event=False)

    # ------------------------------------------------------------------ PJSIP polls

    def apply_aor_list(self, items: Iterable[Message]) -> None:
        """``PJSIPShowAors`` (``AorList``): which AORs are qualified (QualifyFrequency > 0)."""
        qualified: dict[str, bool] = {}
        for item in items:
            if item.name == "AorList" and len(qualified) < MAX_PEERS:
                frequency = _number(item.get("QualifyFrequency"))
                qualified[_name(item.get("ObjectName"))] = bool(frequency and frequency > 0)
        self._aor_qualified = qualified

    def apply_endpoint_list(self, items: Iterable[Message]) -> None:
        """``PJSIPShowEndpoints`` (``EndpointList``): every endpoint, with its contacts
        (``aor/uri,`` static and registered) and device state; replaces the PJSIP peers."""
        listed: set[str] = set()
        for item in items:
            if item.name != "EndpointList":
                continue
            name = _name(item.get("ObjectName"))
            peer = self._peer("PJSIP", name)
            if peer is None:
                continue
            listed.add(name)
            self._apply_endpoint(peer, item)
        for key in [k for k in self.peers if k[0] == "PJSIP" and k[1] not in listed]:
            self._forget(key)

    def _apply_endpoint(self, peer: Peer, item: Message) -> None:
        old = peer.contacts
        contacts: dict[str, Contact] = {}
        for entry in (item.get("Contacts") or "").split(","):
            aor, slash, uri = entry.strip().partition("/")
            if not slash or not uri:
                continue
            uri = uri[:MAX_URI_LENGTH]
            if uri not in contacts and len(contacts) >= MAX_CONTACTS:
                self._drop_contact()
                continue
            contact = old.get(uri)
            if contact is None:
                qualified = self._aor_qualified.get(_name(aor), True)
                contact = Contact("unknown" if qualified else "unmonitored")
            contacts[uri] = contact
        peer.contacts = contacts
        if not contacts:
            # No AOR: an inbound-only endpoint (identify by IP), nothing to reach or check.
            has_aor = bool((item.get("Aor") or "").strip())
            peer.rtt = None
            self._set("PJSIP", peer, "unregistered" if has_aor else "unmonitored", event=False)
            return
        device = (item.get("DeviceState") or "").strip().lower()
        online = None if device in ("", "unknown") else device not in _OFFLINE
        if online is None:
            self._set("PJSIP", peer, self._from_contacts(peer), event=False)
        else:
            self._endpoint_online(peer, online, event=False)
        if peer.status == "reachable" and peer.rtt is None:
            # Qualified and reachable, but no event since we connected gave its round trip.
            name = _name(item.get("ObjectName"))
            self._want_peer(name, peer, "PJSIPShowEndpoint", REFRESH_DETAIL_INTERVAL)

    def apply_endpoint_detail(self, items: Iterable[Message]) -> None:
        """``PJSIPShowEndpoint`` (``ContactStatusDetail`` items: AOR, URI, Status,
        RoundtripUsec, EndpointName): the status and round trip of one endpoint's contacts."""
        touched: dict[str, Peer] = {}
        for item in items:
            if item.name != "ContactStatusDetail":
                continue
            name = _name(item.get("EndpointName") or item.get("AOR"))
            peer = self.peers.get(("PJSIP", name))
            uri = (item.get("URI") or "")[:MAX_URI_LENGTH]
            if peer is None or not uri:
                continue
            contact = peer.contacts.get(uri)
            if contact is None:
                if len(peer.contacts) >= MAX_CONTACTS:
                    self._drop_contact()
                    continue
                contact = peer.contacts[uri] = Contact("unknown")
            status = _CONTACT_STATUS.get((item.get("Status") or "").strip().lower(), "other")
            contact.status = "registered" if contact.dynamic and status == "unmonitored" else status
            contact.rtt = _usec(item.get("RoundtripUsec"), contact.status)
            touched[name] = peer
        for peer in touched.values():
            self._set("PJSIP", peer, self._from_contacts(peer), event=False)

    def apply_contact_list(self, items: Iterable[Message]) -> None:
        """A ``PJSIPShowContacts`` snapshot (``ContactList``): the contacts added by
        registration. Static AOR contacts are never listed (an empty answer is ``No Contacts
        found``): they are left alone; a registered contact not listed any more is gone."""
        listed: dict[str, dict[str, Contact]] = {}
        for item in items:
            if item.name != "ContactList":
                continue
            object_name = item.get("ObjectName") or ""
            name = _name(item.get("Endpoint") or object_name.split(";@", 1)[0])
            if not name:
                continue
            status = _CONTACT_STATUS.get((item.get("Status") or "").strip().lower(), "other")
            if status == "unmonitored":
                status = "registered"  # a live registration, not qualified
            uri = (item.get("Uri") or object_name)[:MAX_URI_LENGTH]
            contacts = listed.setdefault(name, {})
            if uri not in contacts and len(contacts) >= MAX_CONTACTS:
                self._drop_contact()
                continue
            contacts[uri] = Contact(status, _usec(item.get("RoundtripUsec"), status), True)
        for name, contacts in listed.items():
            peer = self._peer("PJSIP", name)
            if peer is not None:
                self._merge_registered(peer, contacts)
        for (tech, name), peer in self.peers.items():
            if tech == "PJSIP" and name not in listed and peer.contacts:
                self._merge_registered(peer, {})

    def _merge_registered(self, peer: Peer, registered: dict[str, Contact]) -> None:
        kept = {uri: c for uri, c in peer.contacts.items() if not c.dynamic}
        if len(kept) == len(peer.contacts) and not registered:
            return  # nothing registered before or now: static contacts only
        for uri, contact in registered.items():
            if uri in kept or len(kept) < MAX_CONTACTS:
                kept[uri] = contact
            else:
                self._drop_contact()
        peer.contacts = kept
        self._set("PJSIP", peer, self._from_contacts(peer), event=False)

    # ------------------------------------------------------------------ registrations

    def registration_up(self, registration: Registration) -> bool:
        return registration.up(self._now())

    def _registration(self, tech: str, name: str) -> Registration | None:
        if not name:
            return None
        key = (tech, name)
        registration = self.registrations.get(key)
        if registration is None:
            if len(self.registrations) >= MAX_REGISTRATIONS:
                return None
            registration = self.registrations[key] = Registration()
        return registration

    def on_registry(self, msg: Message) -> None:
        """``Registry``: ``ChannelType``, ``Username``, ``Domain``, ``Status``."""
        tech = _tech(msg.get("ChannelType"))
        if tech is None:
            return
        username = msg.get("Username") or ""
        if tech == "PJSIP":
            # Username is the client URI; the poll taught us the registration's name.
            name = self._registration_names.get(username) or _name(username)
            registration = self._registration(tech, name)
        else:
            registration = self._sip_registration(username, msg.get("Domain") or "")
        if registration is not None:
            registration.set_status(msg.get("Status"), self._now())

    def _sip_registration(self, username: str, host: str) -> Registration | None:
        """The chan_sip registration a Registry event names: it gives the registrar's host
        and not its port, so two registrations to one host are told apart by a re-poll."""
        found = [
            r
            for (tech, _), r in self.registrations.items()
            if tech == "SIP" and r.username == username and r.host == host
        ]
        if len(found) == 1:
            return found[0]
        self._want(("SIPshowregistry", ""))
        if found:
            return None  # which one: the re-poll will say
        registration = self._registration("SIP", _name(f"{username}@{host}"))
        if registration is not None:
            registration.username, registration.host = username, host
        return registration

    def apply_registry_list(self, items: Iterable[Message]) -> None:
        """A ``SIPshowregistry`` snapshot (``RegistryEntry``: Host, Port, Username, State,
        Refresh). The label keeps the registrar's port: ``user@host:port``."""
        listed: set[tuple[str, str]] = set()
        now = self._now()
        for item in items:
            if item.name != "RegistryEntry":
                continue
            username, host = item.get("Username") or "", item.get("Host") or ""
            port = (item.get("Port") or "").strip()
            name = _name(f"{username}@{host}:{port}" if port else f"{username}@{host}")
            key = ("SIP", name)
            if key not in self.registrations:
                unported = self.registrations.pop(("SIP", _name(f"{username}@{host}")), None)
                if unported is not None:  # learnt from an event before the first poll
                    self.registrations[key] = unported
            registration = self._registration("SIP", name)
            if registration is None:
                continue
            listed.add(key)
            registration.username, registration.host = username, host
            refresh = registration.refresh = _number(item.get("Refresh"))
            state = (item.get("State") or "").strip().lower()
            if state == "registered" == registration.status and registration.registered_at:
                # Still registered: it succeeded at most one refresh interval ago (events
                # give the exact time; RegistrationTime is Asterisk's clock, maybe skewed).
                if refresh is not None:
                    latest = max(registration.registered_at, now - refresh)
                    registration.registered_at = latest
            else:
                registration.set_status(state, now)
        self._drop_unlisted("SIP", listed)

    def apply_outbound_registrations(self, items: Iterable[Message]) -> None:
        """``PJSIPShowRegistrationsOutbound`` (``OutboundRegistrationDetail`` items)."""
        listed: set[tuple[str, str]] = set()
        names: dict[str, str] = {}  # rebuilt at every poll: old client URIs must not pile up
        now = self._now()
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
            registration = self._registration("PJSIP", name)
            if registration is not None:
                registration.set_status(item.get("Status"), now)
                listed.add(("PJSIP", name))
        self._registration_names = names
        self._drop_unlisted("PJSIP", listed)

    def _drop_unlisted(self, tech: str, listed: set[tuple[str, str]]) -> None:
        for key in [k for k in self.registrations if k[0] == tech and k not in listed]:
            del self.registrations[key]
