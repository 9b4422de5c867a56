"""Sans-IO Asterisk Manager Interface protocol core.

The parser is fed raw bytes in chunks of any size and returns complete messages. It knows
nothing about sockets or asyncio, so the client, the simulator, the tests and the benchmarks
all drive the exact same code.

Wire rules handled here (see the AMI reference, section 1 and 6):

* the first line of a connection is a banner (``Asterisk Call Manager/11.0.0``) with no blank
  line after it;
* lines end in CRLF, but bare LF is accepted; a bare CR inside a line is kept as data;
* a message is ``Key: Value`` lines closed by one blank line; stray blank lines are skipped;
* keys are case-insensitive and may repeat (``Output``, ``ChanVariable``); values may contain
  ``": "``; ``Key:`` with nothing after it is an empty value;
* ``Response: Follows`` (``Action: Command`` on Asterisk <= 13) carries raw CLI text that may
  contain blank lines, closed by ``--END COMMAND--``; its body becomes ``Output`` headers, the
  same shape as the 14+ format, so callers never see the difference;
* bytes are decoded as UTF-8 with ``surrogateescape``, so nothing ever raises and
  :func:`serialize` gives back the original bytes;
* a message larger than ``max_message_size`` is counted as malformed and skipped, and framing
  recovers at the next blank line; a partial message at EOF is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AMIParser",
    "Message",
    "MessageKind",
    "action",
    "serialize",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20  # 1 MiB

MessageKind = Literal["event", "response", "action"]

_KINDS: Final[dict[str, MessageKind]] = {
    "event": "event",
    "response": "response",
    "action": "action",
}
_FOLLOWS_PREFIX: Final = b"response: follows"
_END_COMMAND: Final = b"--END COMMAND--"
# While a message is incomplete the buffer may already hold part of its terminator (a blank
# line, or an ``--END COMMAND--`` line); allow that much beyond the limit before giving up, so
# a message is judged the same whether it arrived in one piece or byte by byte.
_TERMINATOR_SLACK: Final = 64
_NOT_DISCARDING: Final = 0
_DISCARD_TO_BLANK_LINE: Final = 1
_DISCARD_TO_END_COMMAND: Final = 2


@dataclass(slots=True)
class Message:
    """One AMI message: an ordered list of ``(key, value)`` pairs.

    ``kind`` and ``name`` come from the first line (``Event: Hangup`` gives ``("event",
    "Hangup")``); the first line stays in ``headers`` too, so serialising gives it back.
    Lookups are case-insensitive; the original key spelling is kept in ``headers``.
    """

    kind: MessageKind
    name: str
    headers: list[tuple[str, str]]
    _index: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            index = {}
            # First occurrence wins for get(); get_all() walks the full list.
            for key, value in self.headers:
                index.setdefault(key.lower(), value)
            self._index = index
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        return self._lookup().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self._lookup()[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup()

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated key, in wire order."""
        wanted = key.lower()
        return [value for k, value in self.headers if k.lower() == wanted]

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")


def action(name: str, action_id: str | None = None, **fields: str) -> Message:
    """Build an ``Action:`` message; keyword names are used as keys verbatim."""
    headers = [("Action", name)]
    if action_id is not None:
        headers.append(("ActionID", action_id))
    headers.extend(fields.items())
    return Message("action", name, headers)


def serialize(message: Message | Iterable[tuple[str, str]]) -> bytes:
    """Encode a message the way Asterisk does: CRLF line ends and a closing blank line."""
    headers = message.headers if isinstance(message, Message) else message
    text = "".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n"
    return text.encode("utf-8", "surrogateescape")


class AMIParser:
    """Incremental AMI parser: :meth:`feed` bytes, get :class:`Message` objects back.

    ``malformed`` counts messages that were skipped (no ``Event``/``Response``/``Action`` first
    line, a line without a colon, or larger than ``max_message_size``). ``banner`` holds the
    first line once it has arrived (``None`` until then, or when ``expect_banner`` is False).
    """

    __slots__ = (
        "_buf",
        "_cr_pending",
        "_discarding",
        "_expect_banner",
        "banner",
        "malformed",
        "max_message_size",
        "messages",
    )

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._buf = b""
        self._cr_pending = False
        self._discarding = _NOT_DISCARDING
        self._expect_banner = expect_banner
        self.banner: str | None = None
        self.malformed = 0
        self.messages = 0
        self.max_message_size = max_message_size

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the end of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return every message they complete."""
        if self._cr_pending:
            data = b"\r" + data
            self._cr_pending = False
        if data.endswith(b"\r"):
            # The LF that may follow is in the next chunk: hold the CR back so that a CRLF
            # split across two reads is still normalised to one LF.
            self._cr_pending = True
            data = data[:-1]
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = self._buf + data if self._buf else data
        out: list[Message] = []
        pos = 0
        size = len(buf)

        if self._expect_banner:
            nl = buf.find(b"\n")
            if nl < 0:
                self._buf = self._guard_partial(buf)
                return out
            self.banner = buf[:nl].decode("utf-8", "surrogateescape")
            self._expect_banner = False
            pos = nl + 1

        limit = self.max_message_size
        while pos < size:
            if self._discarding:
                if self._discarding == _DISCARD_TO_END_COMMAND:
                    end, after = self._find_follows_end(buf, pos)
                    keep = _TERMINATOR_SLACK
                else:
                    end = buf.find(b"\n\n", pos)
                    after, keep = end + 2, 1
                if end < 0:
                    # Keep a tail: it may hold the start of the terminator.
                    pos = max(pos, size - keep)
                    break
                self._discarding = _NOT_DISCARDING
                pos = after
                continue
            # Stray blank lines between messages are legal noise.
            while pos < size and buf[pos] == 0x0A:
                pos += 1
            if pos >= size:
                break
            follows = buf[pos : pos + 17].lower() == _FOLLOWS_PREFIX
            if follows:
                end, after = self._find_follows_end(buf, pos)
            else:
                end = buf.find(b"\n\n", pos)
                after = end + 2
            if end < 0:
                if size - pos > limit + _TERMINATOR_SLACK:
                    self.malformed += 1
                    self._discarding = (
                        _DISCARD_TO_END_COMMAND if follows else _DISCARD_TO_BLANK_LINE
                    )
                    # Everything buffered belongs to the oversized message, but its tail
                    # may hold the start of the terminator.
                    pos = size - _TERMINATOR_SLACK
                    continue
                break
            if end - pos > limit:
                self.malformed += 1
            else:
                message = self._parse_block(buf[pos:end])
                if message is None:
                    self.malformed += 1
                else:
                    self.messages += 1
                    out.append(message)
            pos = after
        self._buf = buf[pos:] if pos < size else b""
        return out

    def feed_eof(self) -> int:
        """Signal end of stream: drop a partial message; return how many bytes were dropped."""
        dropped = len(self._buf)
        self._buf = b""
        self._cr_pending = False
        self._discarding = _NOT_DISCARDING
        return dropped

    def _guard_partial(self, buf: bytes) -> bytes:
        # A banner that never ends is not an AMI peer; bound the memory it can take.
        if len(buf) > self.max_message_size:
            self.malformed += 1
            self._expect_banner = False
            self._discarding = _DISCARD_TO_BLANK_LINE
            return buf[-1:]
        return buf

    @staticmethod
    def _find_follows_end(buf: bytes, pos: int) -> tuple[int, int]:
        """End of a ``Response: Follows`` block: the ``--END COMMAND--`` line."""
        search = pos
        while True:
            idx = buf.find(_END_COMMAND, search)
            if idx < 0:
                return -1, -1
            line_end = buf.find(b"\n", idx)
            if line_end < 0:
                return -1, -1
            at_line_start = idx == pos or buf[idx - 1] == 0x0A
            # Old Asterisk ends the CLI text with "--END COMMAND--" possibly glued to the last
            # output line; accept it at a line start or at the end of a line.
            if at_line_start or buf[idx + len(_END_COMMAND) : line_end].strip() == b"":
                end = idx
                after = line_end + 1
                if buf[after : after + 1] == b"\n":
                    after += 1
                return end, after
            search = idx + 1

    @staticmethod
    def _parse_block(block: bytes) -> Message | None:
        text = block.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        first = lines[0]
        colon = first.find(":")
        if colon <= 0:
            return None
        kind = _KINDS.get(first[:colon].strip().lower())
        if kind is None:
            return None
        name = first[colon + 1 :].strip()
        headers: list[tuple[str, str]] = [(first[:colon], name)]
        follows = kind == "response" and name.lower() == "follows"
        in_body = False
        for line in lines[1:]:
            if in_body:
                if line.endswith("--END COMMAND--"):
                    line = line[: -len("--END COMMAND--")]
                    if line:
                        headers.append(("Output", line))
                    continue
                headers.append(("Output", line))
                continue
            colon = line.find(":")
            if follows:
                key = line[:colon] if colon > 0 else ""
                if key.lower() in ("privilege", "actionid"):
                    headers.append((key, line[colon + 1 :].lstrip(" ")))
                    continue
                in_body = True
                headers.append(("Output", line))
                continue
            if colon <= 0:
                if line == "":
                    continue
                return None
            value = line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
            headers.append((line[:colon], value))
        if follows and headers and headers[-1] == ("Output", ""):
            headers.pop()  # the empty line left by the CLI text's final newline
        return Message(kind, name, headers)
