"""The AMI session state machine, sans-IO: both ends of one connection.

As h11 does for HTTP, everything that is protocol lives here and nothing touches a socket:

* :class:`ClientSession` is the side that logs in (the exporter, ``check``). It frames and
  parses what arrives (lazily for the events its consumer wants, by name only for the rest),
  numbers the actions it sends, matches every answer to its action by ``ActionID``, collects
  the items of list actions up to their ``...Complete`` event and hands back one
  :class:`ActionResult` per finished action. Its own list items are answers, not events.
  A list answer holds at most ``max_list_items`` items and ``max_list_bytes`` bytes of them:
  the rest is dropped and the result says ``truncated``. ``Response: Follows`` framing (the
  CLI text of ``Command`` on Asterisk <= 13) is on only while a ``Command`` is in flight.
* :class:`ServerSession` is the Asterisk side (the simulator, the test server): it parses
  actions and writes answers the way Asterisk does (the banner, ``ActionID`` echoed right
  after ``Response:``, list answers).
* :func:`is_success`, :func:`failure_kind` and :func:`login_failure` classify answers, so every
  consumer reads "did it work" the same way.

Time is the caller's business: a caller that gives up on an action calls
:meth:`ClientSession.abandon`; at end of stream it calls :meth:`ClientSession.receive_eof`.
Both drop what the action had collected.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ami_exporter.ami.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AMIParser,
    Message,
    parse_block,
    parse_event,
    serialize,
)

__all__ = [
    "BANNER_PREFIX",
    "ActionResult",
    "ClientSession",
    "FailureKind",
    "Received",
    "ServerSession",
    "failure_kind",
    "is_success",
    "login_failure",
]

BANNER_PREFIX: Final = "Asterisk Call Manager/"
# A list action whose answer never completes, or never ends, must not hold memory without
# bound: items past either cap are dropped and the result is marked truncated. 100,000 items
# are twice the live channels a server may have tracked (state.channels.MAX_LIVE_CHANNELS);
# 64 MiB of item bytes is about 90,000 CoreShowChannel items of Asterisk 22 (~700 bytes each),
# and bounds what 100,000 items of up to max_message_size each would not.
DEFAULT_MAX_LIST_ITEMS: Final = 100_000
DEFAULT_MAX_LIST_BYTES: Final = 64 << 20

FailureKind = Literal["unknown_action", "permission", "empty_list", "other"]
LoginFailure = Literal["auth", "in_use", "error"]


def is_success(msg: Message) -> bool:
    """``Response: Success`` (any case): the action was accepted."""
    return (msg.get("Response") or "").strip().lower() == "success"


def failure_kind(msg: Message) -> FailureKind:
    """Why an action was refused, from the answer's ``Message``.

    ``unknown_action``: the module is not loaded (``Invalid/unknown command``);
    ``permission``: the user lacks the write class; ``empty_list``: res_pjsip's way of saying
    a list is empty (``No Contacts found``, answered as an error); ``other``: anything else.
    """
    text = (msg.get("Message") or "").strip().lower()
    if text.startswith("invalid/unknown command"):
        return "unknown_action"
    if text.startswith("permission denied"):
        return "permission"
    if text.startswith("no ") and "found" in text:
        return "empty_list"
    return "other"


def login_failure(msg: Message) -> LoginFailure | None:
    """``None`` if a Login answer accepted us; else ``auth``, ``in_use`` or ``error``."""
    if is_success(msg):
        return None
    text = (msg.get("Message") or "").strip().lower()
    if text == "authentication failed":
        return "auth"
    if text == "login already in use":
        return "in_use"
    return "error"


@dataclass(slots=True)
class ActionResult:
    """The whole answer to one action: its response and, for a list action, its items."""

    action_id: str
    action: str
    response: Message
    items: list[Message] = field(default_factory=list)
    complete: Message | None = None  # the closing ``...Complete`` event of a list action
    # More items came than the session keeps (max_list_items / max_list_bytes): ``items`` is
    # only the first of them, not the whole list; never apply it as a complete snapshot.
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return is_success(self.response)


@dataclass(slots=True)
class Received:
    """What one :meth:`ClientSession.receive` call completed, each list in wire order.

    ``names`` holds the raw name of every event received, parsed or not (most events feed
    nothing but their count, and are never parsed); ``events`` the parsed ones, for the names
    the consumer asked for; ``results`` the actions answered in full. List items of our own
    actions are answers, not events: they are in their result only. ``messages`` counts every
    message framed, answers included.
    """

    names: list[bytes] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)
    results: list[ActionResult] = field(default_factory=list)
    messages: int = 0
    malformed: int = 0
    banner: str | None = None  # set by the read that completed the banner line


@dataclass(slots=True)
class _Pending:
    action: str
    complete_event: str | None
    command: bool = False  # a ``Command``: may be answered with ``Response: Follows``
    response: Message | None = None
    items: list[Message] = field(default_factory=list)
    size: int = 0  # bytes of the items kept
    truncated: bool = False


class ClientSession:
    """The logging-in end of an AMI connection: bytes in, events and action results out."""

    __slots__ = (
        "_ids",
        "_list_names",
        "_parse",
        "_parse_all",
        "_parser",
        "_pending",
        "action_id_prefix",
        "banner",
        "max_list_bytes",
        "max_list_items",
        "overflowed_lists",
    )

    def __init__(
        self,
        *,
        parse: Collection[str] | None = (),
        action_id_prefix: str = "amiexp-",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_list_items: int = DEFAULT_MAX_LIST_ITEMS,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
    ) -> None:
        """``parse``: the event names whose fields the consumer reads (``None``: every event);
        the others are only counted by name."""
        # Asterisk answers `Response: Follows` to `Command` only (reference 1.6): with no
        # Command in flight one is junk, framed like any message, so a Follows that never
        # ends cannot swallow the stream. send() turns Follows framing on for a Command.
        self._parser = AMIParser(max_message_size=max_message_size, follows=False)
        self._parse_all = parse is None
        # raw name -> decoded name, for the events parsed (lazily) rather than only counted
        self._parse: dict[bytes, str] = {name.encode(): name for name in parse or ()}
        self._list_names: dict[bytes, str] = {}  # item names of list actions in flight
        self._pending: dict[str, _Pending] = {}
        self._ids = 0
        self.action_id_prefix = action_id_prefix
        self.max_list_items = max_list_items
        self.max_list_bytes = max_list_bytes
        self.overflowed_lists = 0  # list answers cut short at max_list_items/max_list_bytes
        self.banner: str | None = None

    # ------------------------------------------------------------------ sending

    def send(
        self,
        name: str,
        *,
        complete_event: str | None = None,
        list_items: Iterable[str] = (),
        **fields: str,
    ) -> tuple[str, bytes]:
        """Start an action: return its ActionID and the bytes to write.

        A list action names the event that closes its list (``complete_event``) and the
        names of its items (``list_items``), so that they are parsed and routed back to it.
        """
        self._ids += 1
        action_id = f"{self.action_id_prefix}{self._ids}"
        command = name.lower() == "command"
        if command:
            self._parser.follows = True
        self._pending[action_id] = _Pending(name, complete_event, command)
        if complete_event is not None:
            for item in (*list_items, complete_event):
                self._list_names[item.encode()] = item
        headers = [("Action", name), ("ActionID", action_id), *fields.items()]
        return action_id, serialize(headers)

    def abandon(self, action_id: str) -> None:
        """Forget an action the caller no longer waits for (a timeout); late answers drop, and
        so do the list items it had collected."""
        self._pending.pop(action_id, None)
        self._pending_changed()

    @property
    def pending(self) -> int:
        """Actions sent and not yet answered in full."""
        return len(self._pending)

    # ------------------------------------------------------------------ receiving

    @property
    def malformed(self) -> int:
        """Messages skipped since the start: framing and parsing under one contract."""
        return self._parser.malformed

    @property
    def buffered(self) -> int:
        return self._parser.buffered

    def receive(self, data: bytes) -> Received:
        """Feed received bytes; return the events and action results they complete."""
        parser = self._parser
        before = parser.malformed
        blocks = parser.feed_frames(data)
        out = Received()
        if self.banner is None and parser.banner is not None:
            self.banner = out.banner = parser.banner
        if blocks:
            self._receive_blocks(blocks, out)
        out.malformed = parser.malformed - before
        return out

    def _receive_blocks(self, blocks: list[bytes], out: Received) -> None:
        parse = self._parse
        list_names = self._list_names
        names = out.names
        events = out.events
        out.messages = len(blocks)
        for block in blocks:
            raw: bytes | None = None
            if block.startswith(b"Event: ") and not self._parse_all:
                # Most events (Newexten, VarSet, Cdr...) feed nothing but their own count:
                # look at the first line only and never parse the rest.
                nl = block.find(b"\n")
                if nl < 0:
                    raw = block[7:]
                else:
                    raw = block[7 : nl - 1] if block[nl - 1] == 13 else block[7:nl]
                name = parse.get(raw)
                if name is None and list_names:
                    name = list_names.get(raw)
                if name is None:
                    names.append(raw)
                    continue
                msg = parse_event(name, block) if nl > 0 else parse_block(block)
            else:
                msg = parse_block(block)
            if msg is None:
                self._parser.malformed += 1
            elif msg.kind == "event":
                if not (self._pending and self._route_item(msg, len(block), out)):
                    names.append(raw or msg.name.encode("utf-8", "surrogateescape"))
                    events.append(msg)
            elif msg.kind == "response":
                self._route_response(msg, out)

    def _route_response(self, msg: Message, out: Received) -> None:
        action_id = msg.get("ActionID")
        entry = self._pending.get(action_id) if action_id else None
        if entry is None or action_id is None:
            return
        if entry.complete_event is None or not is_success(msg):
            del self._pending[action_id]
            self._pending_changed()
            out.results.append(ActionResult(action_id, entry.action, msg))
        else:
            entry.response = msg

    def _route_item(self, msg: Message, size: int, out: Received) -> bool:
        """Route a list item or closing event to its action; False if it is a plain event.

        ``size`` is the item's length on the wire. Items past ``max_list_items`` or
        ``max_list_bytes`` are dropped (only counted): the result is then ``truncated``.
        """
        if msg.name.encode() not in self._list_names:
            return False  # broadcast events carry no ActionID of ours: don't look it up
        action_id = msg.get("ActionID")
        entry = self._pending.get(action_id) if action_id else None
        if entry is None or action_id is None or entry.response is None:
            return False
        if msg.name == entry.complete_event:
            del self._pending[action_id]
            self._pending_changed()
            out.results.append(
                ActionResult(
                    action_id, entry.action, entry.response, entry.items, msg, entry.truncated
                )
            )
        elif not entry.truncated:
            total = entry.size + size
            if len(entry.items) < self.max_list_items and total <= self.max_list_bytes:
                entry.items.append(msg)
                entry.size = total
            else:
                entry.truncated = True
                self.overflowed_lists += 1
        return True

    def _pending_changed(self) -> None:
        """An action left ``_pending``: stop routing list names and framing Follows blocks
        that no action in flight can be waiting for."""
        pending = self._pending.values()
        if self._list_names and not any(p.complete_event for p in pending):
            self._list_names.clear()
        if self._parser.follows and not any(p.command for p in pending):
            self._parser.follows = False

    def receive_eof(self) -> list[str]:
        """End of stream: drop a partial message; return the ActionIDs left unanswered."""
        self._parser.feed_eof()
        lost = list(self._pending)
        self._pending.clear()
        self._list_names.clear()
        self._parser.follows = False
        return lost


class ServerSession:
    """The Asterisk end of an AMI connection: actions in, answers out, as Asterisk words them."""

    __slots__ = ("_parser", "banner")

    def __init__(
        self,
        banner: str = f"{BANNER_PREFIX}11.0.0",
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        # Actions never come as `Response: Follows`: one is junk, framed like any message.
        self._parser = AMIParser(
            expect_banner=False, max_message_size=max_message_size, follows=False
        )
        self.banner = banner

    def greeting(self) -> bytes:
        """The banner line Asterisk sends first (no blank line after it)."""
        return f"{self.banner}\r\n".encode()

    @property
    def malformed(self) -> int:
        return self._parser.malformed

    def receive(self, data: bytes) -> list[Message]:
        """Feed received bytes; return the complete messages (actions, normally)."""
        return self._parser.feed(data)

    def receive_eof(self) -> int:
        return self._parser.feed_eof()

    @staticmethod
    def response(request: Message, kind: str, *pairs: tuple[str, str]) -> bytes:
        """``Response: <kind>``, echoing the request's ActionID right after it (never invented)."""
        headers = [("Response", kind)]
        action_id = request.get("ActionID")
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers.extend(pairs)
        return serialize(headers)

    @staticmethod
    def event(name: str, *pairs: tuple[str, str], action_id: str | None = None) -> bytes:
        """``Event: <name>``; a list item carries its action's ActionID right after the name."""
        headers = [("Event", name)]
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers.extend(pairs)
        return serialize(headers)

    @classmethod
    def list_answer(
        cls,
        request: Message,
        items: Iterable[tuple[str, Sequence[tuple[str, str]]]],
        complete_event: str,
        *,
        message: str = "Events will follow",
    ) -> bytes:
        """A list action's whole answer: Success, each ``(event, pairs)`` item, the Complete."""
        action_id = request.get("ActionID")
        parts = [cls.response(request, "Success", ("EventList", "start"), ("Message", message))]
        count = 0
        for name, pairs in items:
            parts.append(cls.event(name, *pairs, action_id=action_id))
            count += 1
        parts.append(
            cls.event(
                complete_event,
                ("EventList", "Complete"),
                ("ListItems", str(count)),
                action_id=action_id,
            )
        )
        return b"".join(parts)

    @classmethod
    def error(cls, request: Message, text: str) -> bytes:
        return cls.response(request, "Error", ("Message", text))

    @classmethod
    def unknown_action(cls, request: Message) -> bytes:
        """What Asterisk answers for an action no loaded module provides."""
        return cls.error(
            request,
            f"Invalid/unknown command: {request.name}. "
            "Use Action: ListCommands to show available commands.",
        )
