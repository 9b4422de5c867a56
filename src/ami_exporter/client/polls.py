"""What a session may ask (``ListCommands``), and the optional polls after every login and
resync: peers, endpoints, registrations and queues.

``ListCommands`` needs no privilege and lists exactly the actions this user may call: the
ones of the modules loaded, and of those only the ones whose write class the user has
(``PJSIPShowEndpoints``/``Aors``/``Contacts`` need ``system``; ``SIPpeers``,
``SIPshowregistry``, ``PJSIPShowRegistrationsOutbound`` take ``reporting`` too; ``Queue*``
none). It is asked once per session, and no action it does not list is ever sent: an action
of a module that is not loaded costs the site a ``RequestBadFormat`` security event (severity
Error) each time. Where ``ListCommands`` itself fails (a very old Asterisk), the polls are
tried instead, and one answered ``Invalid/unknown command`` or ``Permission denied`` is
skipped for the rest of the session. Either way each unavailable action is logged once at
info level per process, at debug level after that.
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
Logger = logging.Logger | logging.LoggerAdapter[Any]
Allowed = frozenset[str] | None  # lower-case action names; None: ListCommands failed
Poll = tuple[str, str, tuple[str, ...], str]

# (action, the event that completes its list, its item events, what to do with the items).
# PJSIPShowAors before PJSIPShowEndpoints (which AORs are qualified), and PJSIPShowContacts
# after it (which of the endpoints' contacts were added by registration).
PEER_POLLS: Final[tuple[Poll, ...]] = (
    ("SIPpeers", "PeerlistComplete", ("PeerEntry",), "peer_list"),
    ("IAXpeerlist", "PeerlistComplete", ("PeerEntry",), "peer_list"),
    ("PJSIPShowAors", "AorListComplete", ("AorList",), "aor_list"),
    ("PJSIPShowEndpoints", "EndpointListComplete", ("EndpointList",), "endpoint_list"),
    ("PJSIPShowContacts", "ContactListComplete", ("ContactList",), "contact_list"),
    ("SIPshowregistry", "RegistrationsComplete", ("RegistryEntry",), "registry_list"),
    (
        "PJSIPShowRegistrationsOutbound",
        "OutboundRegistrationDetailComplete",
        ("OutboundRegistrationDetail",),
        "outbound",
    ),
)
QUEUE_POLLS: Final[tuple[Poll, ...]] = (
    (
        "QueueStatus",
        "QueueStatusComplete",
        ("QueueParams", "QueueMember", "QueueEntry"),
        "queue_status",
    ),
    ("QueueSummary", "QueueSummaryComplete", ("QueueSummary",), "queue_summary"),
)
_POLL_OF: Final = {poll[0]: poll for poll in PEER_POLLS}
# Every action the exporter may send, with what it is for (``check`` reports these).
CORE_ACTIONS: Final = ("CoreSettings", "CoreStatus", "CoreShowChannels", "Ping")
REFRESH_ACTIONS: Final = ("SIPshowpeer", "PJSIPShowEndpoint")
# PJSIPShowEndpoint answers one item per endpoint formatter (res_pjsip's
# ast_sip_register_endpoint_formatter): all are the action's own, none is an event; only
# ContactStatusDetail is used.
ENDPOINT_DETAIL_ITEMS: Final = (
    "EndpointDetail",
    "AuthDetail",
    "TransportDetail",
    "AorDetail",
    "ContactStatusDetail",
    "IdentifyDetail",
)
# Headers of the ListCommands answer that are not action names.
_NOT_ACTIONS: Final = frozenset({"response", "actionid", "message", "eventlist"})

_logged_absent: set[tuple[str, str]] = set()  # (server, action) already logged at info


def parse_commands(response: Message) -> frozenset[str]:
    """The actions of a ``ListCommands`` answer (``Name: synopsis (Priv: classes)``), lower
    case (Asterisk matches action names without regard to case)."""
    return frozenset(
        key.lower() for key, _ in response.headers[1:] if key.lower() not in _NOT_ACTIONS
    )


async def learn_commands(request: Request, *, timeout: float, logger: Logger = log) -> Allowed:
    """``ListCommands``: the actions this user may call, or None where it is not answered."""
    try:
        result = await request("ListCommands", timeout=timeout)
    except TimeoutError:
        logger.warning("ListCommands: no answer within %g s; actions are tried instead", timeout)
        return None
    if not result.ok:
        why = result.response.get("Message") or "error"
        logger.info("ListCommands refused (%s); actions are tried instead", why)
        return None
    commands = parse_commands(result.response)
    if not commands:  # an answer without a single action is no list
        return None
    return commands


def allows(allowed: Allowed, action: str) -> bool:
    """Whether ``action`` may be sent (unknown, where ListCommands failed: try it)."""
    return allowed is None or action.lower() in allowed


def log_absent(state: ServerState, action: str, why: str, logger: Logger = log) -> None:
    """Say once per process (then at debug level) that ``action`` is not used."""
    key = (state.name, action)
    if key in _logged_absent:
        logger.debug("%s unavailable (%s); not sent this session", action, why)
    else:
        _logged_absent.add(key)
        logger.info("%s unavailable (%s); not sent this session", action, why)


def _apply(state: ServerState, kind: str, items: Iterable[Message]) -> None:
    peers = state.peers
    if kind == "peer_list":
        peers.apply_peer_list(items)
    elif kind == "aor_list":
        peers.apply_aor_list(items)
    elif kind == "endpoint_list":
        peers.apply_endpoint_list(items)
    elif kind == "contact_list":
        peers.apply_contact_list(items)
    elif kind == "registry_list":
        peers.apply_registry_list(items)
    elif kind == "outbound":
        peers.apply_outbound_registrations(items)
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
    logger: Logger = log,
    allowed: Allowed = None,
) -> None:
    """Run every optional poll that ``allowed`` lists and not in ``skip``; add to ``skip``
    what the server refuses (where ``allowed`` is None: tried, as on a very old Asterisk).

    ``skip`` belongs to the session: the caller gives a fresh set after each login. A poll
    that times out is skipped this round only; it never ends the session (Ping does that).
    """
    polls: tuple[Poll, ...] = PEER_POLLS if state.peers.enabled else ()
    if queues:
        polls += QUEUE_POLLS
    for action, complete, items, kind in polls:
        if action in skip:
            continue
        if not allows(allowed, action):
            skip.add(action)
            log_absent(state, action, "not in ListCommands for this user", logger)
            continue
        await _poll(request, state, (action, complete, items, kind), skip, timeout, logger)


async def _poll(
    request: Request,
    state: ServerState,
    poll: Poll,
    skip: set[str],
    timeout: float,
    logger: Logger,
) -> None:
    action, complete, items, kind = poll
    try:
        result = await request(action, timeout=timeout, complete_event=complete, list_items=items)
    except TimeoutError:
        logger.warning("%s: no complete answer within %g s; skipped", action, timeout)
        return
    if result.truncated:  # a partial list is no snapshot: applying it would drop the rest
        logger.warning("%s: more items than the list cap; not applied", action)
        return
    if result.ok:
        _apply(state, kind, result.items)
        return
    failure = failure_kind(result.response)
    if failure == "empty_list":
        # "No Contacts found" (res_pjsip): an empty list, answered as an error.
        _apply(state, kind, [])
    elif failure == "other":
        logger.debug("%s failed: %s", action, result.response.get("Message") or "error")
    else:
        skip.add(action)
        why = "module not loaded" if failure == "unknown_action" else "permission denied"
        log_absent(state, action, why, logger)


async def refresh_one(
    request: Request,
    state: ServerState,
    *,
    allowed: Allowed,
    skip: set[str],
    timeout: float,
) -> bool:
    """Send the oldest targeted re-poll the state asked for (:meth:`PeerState.pop_wanted`):
    ``SIPshowpeer`` for a chan_sip peer's round trip after a change, ``PJSIPShowEndpoint``
    for a reachable PJSIP endpoint's, ``SIPshowregistry`` where a ``Registry`` event named no
    single registration. False when none was sent."""
    while (wanted := state.peers.pop_wanted()) is not None:
        action, name = wanted
        if action in skip or not allows(allowed, action) or not state.peers.enabled:
            continue
        if action == "SIPshowregistry":
            await _poll(request, state, _POLL_OF[action], skip, timeout, log)
            return True
        detail = action == "PJSIPShowEndpoint"
        try:
            if detail:
                result = await request(
                    action,
                    timeout=timeout,
                    complete_event="EndpointDetailComplete",
                    list_items=ENDPOINT_DETAIL_ITEMS,
                    Endpoint=name,
                )
            else:
                result = await request(action, timeout=timeout, Peer=name)
        except TimeoutError:
            return True
        if result.ok and not result.truncated:
            if detail:
                state.peers.apply_endpoint_detail(result.items)
            else:
                state.peers.apply_sip_peer(result.response)
        elif failure_kind(result.response) in ("unknown_action", "permission"):
            skip.add(action)
        return True
    return False
