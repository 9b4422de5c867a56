"""Trunks and peers (SIP/IAX2 peers, PJSIP endpoints) and outbound registrations."""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import Samples, TableCollector, clean, counter, gauge, one
from ami_exporter.state.peers import MAX_CONTACTS
from ami_exporter.state.server import ServerState

PEER: Final = ("server", "tech", "peer")


def _peer_up(st: ServerState) -> Samples:
    return [
        ((tech, clean(name)), 1.0 if peer.up else 0.0)
        for (tech, name), peer in list(st.peers.peers.items())
    ]


def _peer_rtt(st: ServerState) -> Samples:
    return [
        ((tech, clean(name)), peer.rtt)
        for (tech, name), peer in list(st.peers.peers.items())
        if peer.up and peer.rtt is not None
    ]


def _status_changes(st: ServerState) -> Samples:
    return [
        ((tech, clean(name), status), n)
        for (tech, name, status), n in list(st.peers.changes.items())
    ]


def _registration_up(st: ServerState) -> Samples:
    return [
        ((tech, clean(name)), 1.0 if up else 0.0)
        for (tech, name), up in list(st.peers.registrations.items())
    ]


TABLE: Final = (
    gauge(
        "asterisk_peer_up",
        "1 while a SIP/IAX2 peer or PJSIP endpoint is reachable or registered, else 0 "
        "(PeerStatus, ContactStatus and the SIPpeers/IAXpeerlist/PJSIPShowContacts polls).",
        PEER,
        _peer_up,
    ),
    gauge(
        "asterisk_peer_rtt_seconds",
        "Qualify round trip of a reachable peer, where Asterisk reports one.",
        PEER,
        _peer_rtt,
    ),
    counter(
        "asterisk_peer_status_changes",
        "Peer status changes seen in events or polls, by new lower-case status.",
        (*PEER, "status"),
        _status_changes,
    ),
    gauge(
        "asterisk_registration_up",
        "1 while an outbound registration (SIP register => / PJSIP registration) is "
        "Registered, else 0.",
        ("server", "tech", "registration"),
        _registration_up,
    ),
    counter(
        "asterisk_peers_dropped",
        "Peers not tracked (so not exported) because the per-server cap on peers was reached.",
        ("server",),
        lambda st: one(st.peers.dropped_peers),
    ),
    counter(
        "asterisk_peer_contacts_dropped",
        "PJSIP contact updates (ContactStatus events, PJSIPShowContacts items) not tracked "
        f"because their endpoint already has {MAX_CONTACTS} contacts tracked (the cap).",
        ("server",),
        lambda st: one(st.peers.dropped_contacts),
    ),
)


class PeersCollector(TableCollector):
    TABLE = TABLE
