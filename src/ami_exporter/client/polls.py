"""Optional polls after every login and every resync: peers, registrations and queues.

Each poll is a read-only list action answered only where its module is loaded: ``SIPpeers``
and ``SIPshowregistry`` need chan_sip (gone in Asterisk 21), ``PJSIPShow*`` need res_pjsip
(12+), ``IAXpeerlist`` chan_iax2, ``QueueStatus``/``QueueSummary`` app_queue. A server
without the module answers ``Invalid/unknown command``; the action is then skipped for the
rest of the session (a module is not loaded while connected often enough to be worth a
request per resync), logged once at info level per process and at debug level after that.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ActionResult, failure_kind
from ami_exporter.state.server import ServerState

log = logging.getLogger("ami_exporter.polls")

Request = Callable[..., Awaitable[ActionResult]]

# (action, the event that completes its list, its item events, what to do with the items)
PEER_POLLS: Final = (
    ("SIPpeers", "PeerlistComplete", ("PeerEntry",), "peer_list"),
    ("IAXpeerlist", "PeerlistComplete", ("PeerEntry",), "peer_list"),
    ("PJSIPShowContacts", "ContactListComplete", ("ContactList",), "contact_list"),
    ("SIPshowregistry", "RegistrationsComplete", ("RegistryEntry",), "registry_list"),
    (
        "PJSIPShowRegistrationsOutbound",
        "OutboundRegistrationDetailComplete",
        ("OutboundRegistrationDetail",),
        "outbound",
    ),
)
QUEUE_POLLS: Final = (
    (
        "QueueStatus",
        "QueueStatusComplete",
        ("QueueParams", "QueueMember", "QueueEntry"),
        "queue_status",
    ),
    ("QueueSummary", "QueueSummaryComplete", ("QueueSummary",), "queue_summary"),
)

_logged_absent: set[tuple[str, str]] = set()  # (server, action) already logged at info


def _apply(state: ServerState, kind: str, items: Iterable[Message]) -> None:
    if kind == "peer_list":
        state.peers.apply_peer_list(items)
    elif kind == "contact_list":
        state.peers.apply_contact_list(items)
    elif kind == "registry_list":
        state.peers.apply_registry_list(items)
    elif kind == "outbound":
        state.peers.apply_outbound_registrations(items)
    elif kind == "queue_status":
        state.queues.apply_status(items)
    elif kind == "queue_summary":
        state.queues.apply_summary(items)


async def poll_optional(
    request: Request,
    state: ServerState,
    *,
    queues: bool,
    skip: set[str],
    timeout: float,
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> None:
    """Run every optional poll not in ``skip``; add to ``skip`` what the server lacks.

    ``skip`` belongs to the session: the caller gives a fresh set after each login. A poll
    that times out is skipped this round only; it never ends the session (Ping does that).
    """
    polls = PEER_POLLS + QUEUE_POLLS if queues else PEER_POLLS
    for action, complete, items, kind in polls:
        if action in skip:
            continue
        try:
            result = await request(
                action, timeout=timeout, complete_event=complete, list_items=items
            )
        except TimeoutError:
            logger.warning("%s: no complete answer within %g s; skipped", action, timeout)
            continue
        if result.truncated:  # a partial list is no snapshot: applying it would drop the rest
            logger.warning("%s: more items than the list cap; not applied", action)
            continue
        if result.ok:
            _apply(state, kind, result.items)
            continue
        failure = failure_kind(result.response)
        if failure == "empty_list":
            # "No Contacts found" (res_pjsip): an empty list, answered as an error.
            _apply(state, kind, [])
            continue
        if failure == "other":
            logger.debug("%s failed: %s", action, result.response.get("Message") or "error")
            continue
        why = "module not loaded" if failure == "unknown_action" else "permission denied"
        skip.add(action)
        key = (state.name, action)
        if key in _logged_absent:
            logger.debug("%s unavailable (%s); not polled this session", action, why)
        else:
            _logged_absent.add(key)
            logger.info("%s unavailable (%s); not polled this session", action, why)
