"""Metric families for trunks/peers, registrations, queues and VICIdial call types.

Built at scrape time from :class:`~ami_exporter.state.server.ServerState` like the core families in
:mod:`ami_exporter.metrics.collector`, which yields these after its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ami_exporter.state.server import ServerState


def _clean(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def feature_families(states: Sequence[ServerState]) -> Iterator[Metric]:
    peer = ["server", "tech", "peer"]
    peer_up = GaugeMetricFamily(
        "asterisk_peer_up",
        "1 while a SIP/IAX2 peer or PJSIP endpoint is reachable or registered, else 0 "
        "(PeerStatus, ContactStatus and the SIPpeers/IAXpeerlist/PJSIPShowContacts polls).",
        labels=peer,
    )
    peer_rtt = GaugeMetricFamily(
        "asterisk_peer_rtt_seconds",
        "Qualify round trip of a reachable peer, where Asterisk reports one.",
        labels=peer,
    )
    peer_changes = CounterMetricFamily(
        "asterisk_peer_status_changes",
        "Peer status changes seen in events or polls, by new lower-case status.",
        labels=[*peer, "status"],
    )
    registration_up = GaugeMetricFamily(
        "asterisk_registration_up",
        "1 while an outbound registration (SIP register => / PJSIP registration) is "
        "Registered, else 0.",
        labels=["server", "tech", "registration"],
    )
    queue_callers = GaugeMetricFamily(
        "asterisk_queue_callers",
        "Callers waiting in an app_queue queue (QueueStatus, opt-in).",
        labels=["server", "queue"],
    )
    queue_members = GaugeMetricFamily(
        "asterisk_queue_members",
        "Queue members by device status and paused (true/false).",
        labels=["server", "queue", "status", "paused"],
    )
    queue_longest = GaugeMetricFamily(
        "asterisk_queue_longest_hold_seconds",
        "Wait of the caller waiting longest in a queue (0 when none).",
        labels=["server", "queue"],
    )
    queue_completed = CounterMetricFamily(
        "asterisk_queue_completed",
        "Calls a queue completed, as app_queue counts them (reset by a queue reset/reload).",
        labels=["server", "queue"],
    )
    queue_abandoned = CounterMetricFamily(
        "asterisk_queue_abandoned",
        "Callers who hung up while waiting in a queue, as app_queue counts them.",
        labels=["server", "queue"],
    )
    vicidial_calls = CounterMetricFamily(
        "asterisk_vicidial_calls",
        "VICIdial calls by type, from the call ID in CallerIDName, once per call ID "
        "(auto_dial V, manual_dial M, inbound Y, three_way DC, ring_agent).",
        labels=["server", "type"],
    )
    vicidial_hangups = CounterMetricFamily(
        "asterisk_vicidial_hangups",
        "Hangups of non-Local channels carrying a VICIdial call ID, by call type and cause.",
        labels=["server", "type", "cause"],
    )
    for st in states:
        s = st.name
        peers = st.peers
        for (tech, name), p in list(peers.peers.items()):
            labels = [s, tech, _clean(name)]
            peer_up.add_metric(labels, 1.0 if p.up else 0.0)
            if p.up and p.rtt is not None:
                peer_rtt.add_metric(labels, p.rtt)
        for (tech, name, status), n in list(peers.changes.items()):
            peer_changes.add_metric([s, tech, _clean(name), status], n)
        for (tech, name), up in list(peers.registrations.items()):
            registration_up.add_metric([s, tech, _clean(name)], 1.0 if up else 0.0)
        for qname, q in list(st.queues.queues.items()):
            labels = [s, _clean(qname)]
            queue_callers.add_metric(labels, q.callers)
            queue_longest.add_metric(labels, q.longest_hold)
            queue_completed.add_metric(labels, q.completed)
            queue_abandoned.add_metric(labels, q.abandoned)
            for (status, paused), n in list(q.members.items()):
                queue_members.add_metric([*labels, status, paused], n)
        vicidial = st.vicidial
        if vicidial.enabled:
            for kind, n in list(vicidial.calls.items()):
                vicidial_calls.add_metric([s, kind], n)
            for (kind, cause), n in list(vicidial.hangups.items()):
                vicidial_hangups.add_metric([s, kind, cause], n)
    yield from (
        peer_up, peer_rtt, peer_changes, registration_up, queue_callers, queue_members,
        queue_longest, queue_completed, queue_abandoned, vicidial_calls, vicidial_hangups,
    )  # fmt: skip
