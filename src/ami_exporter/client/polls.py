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
from ami_exporter.state.server import ServerState

log = logging.getLogger("ami_exporter.polls")

Request = Callable[..., Awaitable[tuple[Message, list[Message]]]]

# (action, the event that completes its list, what to do with the items)
PEER_POLLS: Final = (
    ("SIPpeers", "PeerlistComplete", "peer_list"),
    ("IAXpeerlist", "PeerlistComplete", "peer_list"),
    ("PJSIPShowContacts", "ContactListComplete", "contact_list"),
    ("SIPshowregistry", "RegistrationsComplete", "registry_list"),
    ("PJSIPShowRegistrationsOutbound", "OutboundRegistrationDetailComplete", "outbound"),
)
QUEUE_POLLS: Final = (
    ("QueueStatus", "QueueStatusComplete", "queue_status"),
    ("QueueSummary", "QueueSummaryComplete", "queue_summary"),
)
# Every list item these polls produce: the client must parse and route them.
LIST_ITEM_NAMES: Final = frozenset(
    {
        "PeerEntry", "PeerlistComplete", "RegistryEntry", "RegistrationsComplete",
        "ContactList", "ContactListComplete", "OutboundRegistrationDetail",
        "OutboundRegistrationDetailComplete", "QueueParams", "QueueMember", "QueueEntry",
        "QueueStatusComplete", "QueueSummary", "QueueSummaryComplete",
    }
)  # fmt: skip

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
    for action, complete, kind in polls:
        if action in skip:
            continue
        try:
            response, items = await request(action, timeout=timeout, complete_event=complete)
        except TimeoutError:
            logger.warning("%s: no complete answer within %g s; skipped", action, timeout)
            continue
        if (response.get("Response") or "").lower() == "success":
            _apply(state, kind, items)
            continue
        message = (response.get("Message") or "").strip()
        lower = message.lower()
        if lower.startswith("no ") and "found" in lower:
            # "No Contacts found" (res_pjsip): an empty list, answered as an error.
            _apply(state, kind, [])
            continue
        if lower.startswith("invalid/unknown command"):
            why = "module not loaded"
        elif lower.startswith("permission denied"):
            why = "permission denied"
        else:
            logger.debug("%s failed: %s", action, message or "error")
            continue
        skip.add(action)
        key = (state.name, action)
        if key in _logged_absent:
            logger.debug("%s unavailable (%s); not polled this session", action, why)
        else:
            _logged_absent.add(key)
            logger.info("%s unavailable (%s); not polled this session", action, why)
