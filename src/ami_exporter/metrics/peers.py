"""Trunks and peers (SIP/IAX2 peers, PJSIP endpoints) and outbound registrations.

Cardinality by design: per-peer series only for the peers the operator selected (the
per-server filter; by default names that are not all digits), at most three each
(``asterisk_peer_up``, ``asterisk_peer_rtt_seconds``, ``asterisk_peer_status_changes_total``);
every tracked peer, selected or not, is counted in ``asterisk_peers{tech,status}`` and its
changes in ``asterisk_peers_status_changes_total{tech,status}`` (3 techs x 8 statuses at most).
The live-state families are not exported while the server's session is down.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import Samples, TableCollector, clean, counter, gauge, one
from ami_exporter.state.peers import MAX_CONTACTS, STATUSES
from ami_exporter.state.server import ServerState

PEER: Final = ("server", "tech", "peer")


def _peer_up(st: ServerState) -> Samples:
    if not st.peers.enabled:
        return ()
    return [
        ((tech, clean(name)), 1.0 if up else 0.0)
        for (tech, name), peer in list(st.peers.peers.items())
        if peer.selected and (up := peer.up) is not None
    ]


def _peer_rtt(st: ServerState) -> Samples:
    if not st.peers.enabled:
        return ()
    return [
        ((tech, clean(name)), peer.rtt)
        for (tech, name), peer in list(st.peers.peers.items())
        if peer.selected and peer.rtt is not None and peer.up
    ]


def _status_changes(st: ServerState) -> Samples:
    if not st.peers.enabled:
        return ()
    return [
        ((tech, clean(name)), peer.changes)
        for (tech, name), peer in list(st.peers.peers.items())
        if peer.selected and peer.known
    ]


def _peers(st: ServerState) -> Samples:
    return list(st.peers.counts.items()) if st.peers.enabled else ()


def _all_changes(st: ServerState) -> Samples:
    return list(st.peers.changes.items()) if st.peers.enabled else ()


def _registration_up(st: ServerState) -> Samples:
    if not st.peers.enabled:
        return ()
    peers = st.peers
    return [
        ((tech, clean(name)), 1.0 if peers.registration_up(registration) else 0.0)
        for (tech, name), registration in list(peers.registrations.items())
    ]


TABLE: Final = (
    gauge(
        "asterisk_peer_up",
        "1 while a selected SIP/IAX2 peer or PJSIP endpoint is reachable (qualify), or "
        "registered without qualify; 0 when unreachable or unregistered; absent while its "
        "reachability is unknown (qualify off, or no answer yet).",
        PEER,
        _peer_up,
        live=True,
    ),
    gauge(
        "asterisk_peer_rtt_seconds",
        "Qualify round trip of a selected reachable peer, where Asterisk reports one.",
        PEER,
        _peer_rtt,
        live=True,
    ),
    counter(
        "asterisk_peer_status_changes",
        "Status changes of a selected peer seen in events or polls (any new status).",
        PEER,
        _status_changes,
    ),
    gauge(
        "asterisk_peers",
        "Peers and endpoints tracked (selected or not), by tech and status: "
        + ", ".join(STATUSES)
        + ".",
        ("server", "tech", "status"),
        _peers,
        live=True,
    ),
    counter(
        "asterisk_peers_status_changes",
        "Status changes of every tracked peer (selected or not), by tech and new status.",
        ("server", "tech", "status"),
        _all_changes,
    ),
    gauge(
        "asterisk_registration_up",
        "1 while an outbound registration (SIP register => / PJSIP registration) is "
        "Registered, or refreshing before the registrar's expiry; else 0.",
        ("server", "tech", "registration"),
        _registration_up,
        live=True,
    ),
    counter(
        "asterisk_peers_dropped",
        "Peers not tracked (so not exported) because the per-server cap on peers was reached.",
        ("server",),
        lambda st: one(st.peers.dropped_peers if st.peers.enabled else None),
    ),
    counter(
        "asterisk_peer_contacts_dropped",
        "PJSIP contact updates (ContactStatus events, PJSIPShowContacts items) not tracked "
        f"because their endpoint already has {MAX_CONTACTS} contacts tracked (the cap).",
        ("server",),
        lambda st: one(st.peers.dropped_contacts if st.peers.enabled else None),
    ),
)


class PeersCollector(TableCollector):
    TABLE = TABLE
