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
  same shape as the 14+ format, so callers never see the difference. Only a consumer that
  sent a ``Command`` can be answered so: with ``follows`` off (the client session turns it on
  while a Command is in flight) a ``Response: Follows`` block is framed like any message,
  up to its first blank line, and counted as malformed, so one that never ends cannot
  swallow the messages after it;
* bytes are decoded as UTF-8 with ``surrogateescape``, so nothing ever raises and
  :func:`serialize` gives back the original bytes;
* a message larger than ``max_message_size`` is counted as malformed and skipped, and framing
  recovers at the next blank line; a partial message at EOF is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AMIParser",
    "Message",
    "MessageKind",
    "action",
    "parse_block",
    "parse_event",
    "serialize",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20  # 1 MiB

MessageKind = Literal["event", "response", "action"]

_KINDS: Final[dict[str, MessageKind]] = {
    "event": "event",
    "response": "response",
    "action": "action",
}
# The spellings Asterisk actually sends, checked before any case folding.
_FIRST_KEYS: Final[dict[str, MessageKind]] = {
    "Event": "event",
    "Response": "response",
    "Action": "action",
}
# Asterisk <= 13 spells it exactly so. Framing keys on this exact spelling (one cheap scan per
# read); parse_block still reads any case of a `Follows` response that arrives framed normally.
_FOLLOWS: Final = b"Response: Follows"
_END_COMMAND: Final = b"--END COMMAND--"
# While a message is incomplete the buffer may already hold part of its terminator (a blank
# line, or an ``--END COMMAND--`` line); allow that much beyond the limit before giving up, so
# a message is judged the same whether it arrived in one piece or byte by byte.
_TERMINATOR_SLACK: Final = 64
_NOT_DISCARDING: Final = 0
_DISCARD_TO_BLANK_LINE: Final = 1
_DISCARD_TO_END_COMMAND: Final = 2


# parse_event's check that every line has a colon: keep only colons and line ends (one C-level
# pass); a line without a colon then shows as two line ends in a row.
# Most events have exactly one colon a line, a prefix of _ONE_COLON_A_LINE: one memcmp.
_ALL_BUT_COLON_AND_LF: Final = bytes(b for b in range(256) if b not in b":\n")
_ONE_COLON_A_LINE: Final = b":\n" * 256

# b"\nKey: " search strings for lazy lookups, by key (callers use a handful of constant keys).
_NEEDLES: dict[str, bytes] = {}


class Message:
    """One AMI message: an ordered list of ``(key, value)`` pairs.

    ``kind`` and ``name`` come from the first line (``Event: Hangup`` gives ``("event",
    "Hangup")``); the first line stays in ``headers`` too, so serialising gives it back.
    Lookups are case-insensitive; the original key spelling is kept in ``headers``.
    """

    __slots__ = ("_block", "_exact", "_index", "_pairs", "kind", "name")

    def __init__(
        self,
        kind: MessageKind,
        name: str,
        headers: Sequence[Sequence[str]],
        _exact: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        # Pairs may be 2-lists straight from str.split (the parser's fast path); they are
        # turned into tuples only if someone asks for ``headers``.
        self._pairs = headers
        self._exact = _exact  # original spelling -> first value
        self._index: dict[str, str] | None = None  # lower case -> first value
        self._block: bytes | None = None

    @classmethod
    def _lazy_event(cls, name: str, block: bytes) -> Message:
        # Only parse_event makes these, after checking the block is plain ``Key: value``.
        message = cls("event", name, ())
        message._block = block
        return message

    def _materialize(self) -> None:
        block = self._block
        self._block = None
        if block is not None:
            parsed = parse_block(block)
            self._pairs = parsed.headers if parsed is not None else []
            self._exact = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._block is not None:
            self._materialize()
        pairs = self._pairs
        if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
            pairs = self._pairs = [(k, v) for k, v in pairs]
        return pairs  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.kind, self.name, self.headers) == (other.kind, other.name, other.headers)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message({self.kind!r}, {self.name!r}, {self.headers!r})"

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        block = self._block
        if block is not None:
            needle = _NEEDLES.get(key)
            if needle is None:
                # The first line's key is read from the parsed message (a later "Event:"
                # line must not answer for it): no needle for it, b"" means "parse".
                needle = b"" if key.lower() == "event" else b"\n" + _raw(key) + b":"
                if len(_NEEDLES) < 256:
                    _NEEDLES[key] = needle
            found = block.find(needle) if needle else -1
            start = found + len(needle)
            # The first line of that key, and in the ``Key: value`` shape: parse_block would
            # answer the same. ``Key:value`` (no space) is rare enough to parse in full.
            if found >= 0 and block[start : start + 1] == b" ":
                start += 1
                end = block.find(b"\n", start)
                raw = block[start:] if end < 0 else block[start:end]
                if raw[-1:] == b"\r":
                    raw = raw.rstrip(b"\r")  # as parse_block: CRs before a line end are noise
                return raw.decode("utf-8", "surrogateescape")
            self._materialize()
        exact = self._exact
        if exact is None:
            # reversed(): for a repeated key the first occurrence wins.
            exact = self._exact = dict(reversed(self._pairs))  # type: ignore[arg-type]
        value = exact.get(key)
        if value is not None:
            return value
        # Spelling differs between versions (Uniqueid / UniqueID): fall back to lower case.
        index = self._index
        if index is None:
            index = self._index = {k.lower(): v for k, v in reversed(self.headers)}
        return index.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get_optional(self, key: str) -> str | None:
        """As :meth:`get`, for a header often absent (``Timestamp``, ``TechCause``): spelled
        as Asterisk spells it, a miss on an event not parsed yet costs one search, not a parse
        (``get`` parses the whole message to look for another spelling)."""
        block = self._block
        if block is not None:
            needle = _NEEDLES.get(key)  # get() learns it at its first call
            if needle is not None and block.find(needle) < 0:
                return None
        return self.get(key)

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated key, in wire order."""
        wanted = key.lower()
        return [value for k, value in self.headers if k.lower() == wanted]

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


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
    line, a line without a colon, larger than ``max_message_size``, or a ``Response: Follows``
    while ``follows`` is off). ``banner`` holds the first line once it has arrived (``None``
    until then, or when ``expect_banner`` is False). ``follows`` may be switched between two
    feeds; it applies to everything framed from then on, buffered bytes included.
    """

    __slots__ = (
        "_buf",
        "_cr_pending",
        "_crlf",
        "_discarding",
        "_expect_banner",
        "banner",
        "follows",
        "malformed",
        "max_message_size",
        "messages",
    )

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        follows: bool = True,
    ) -> None:
        self._buf = b""
        self._cr_pending = False
        self._discarding = _NOT_DISCARDING
        self._crlf = True  # Asterisk sends CRLF; a bare LF switches to normalising for good
        self._expect_banner = expect_banner
        self.banner: str | None = None
        self.follows = follows  # frame `Response: Follows` blocks to their --END COMMAND--
        self.malformed = 0
        self.messages = 0
        self.max_message_size = max_message_size

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the end of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return every message they complete."""
        out: list[Message] = []
        for block in self.feed_frames(data):
            message = parse_block(block)
            if message is None:
                self.malformed += 1
            else:
                out.append(message)
        self.messages += len(out)
        return out

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete message blocks, not yet parsed.

        A block is the message's bytes without the closing blank line; its lines end in CRLF
        (as Asterisk sends them) or, once the peer has sent any bare LF, in LF.
        :func:`parse_block` turns it into a :class:`Message`. Splitting framing from parsing
        lets a consumer look at the first line and parse only what it needs. Blocks larger
        than ``max_message_size`` are counted in ``malformed`` here.
        """
        if self._crlf:
            frames = self._feed_crlf(data)
            if frames is not None:
                return frames
            # The stream is not pure CRLF: from now on normalise (the buffer is in `data`).
        return self._feed_lf(data)

    def _feed_crlf(self, data: bytes) -> list[bytes] | None:
        """Framing without copying the stream, while every line end is CRLF.

        Returns None, having left CRLF mode for good, at the first sign of anything else:
        a bare LF, a ``Response: Follows`` block, or an oversized message. The caller then
        runs the normalising path on everything buffered.
        """
        buf = self._buf + data if self._buf else data
        if buf.count(b"\n") != buf.count(b"\r\n") or _FOLLOWS in buf or self._discarding:
            self._crlf = False
            self._buf = b""
            return self._feed_lf(buf)
        if self._expect_banner:
            nl = buf.find(b"\r\n")
            if nl < 0:
                self._buf = self._guard_partial(buf)
                return []
            if nl > self.max_message_size:  # an oversized banner: the careful path judges it
                self._crlf = False
                self._buf = b""
                return self._feed_lf(buf)
            self.banner = buf[:nl].decode("utf-8", "surrogateescape")
            self._expect_banner = False
            buf = buf[nl + 2 :]
        parts = buf.split(b"\r\n\r\n")
        rest = parts.pop()
        if rest[:2] == b"\r\n":
            rest = _lstrip_crlf(rest)  # stray blank lines before the next message
        limit = self.max_message_size
        if b"\r\n\r\n\r\n" in buf or buf[:2] == b"\r\n" or (parts and max(map(len, parts)) > limit):
            out: list[bytes] = []
            for part in parts:
                if part[:2] == b"\r\n":
                    part = _lstrip_crlf(part)
                if not part:
                    continue
                # The limit is on the message with LF line ends, whichever mode framed it.
                if len(part) > limit and len(part) - part.count(b"\r\n") > limit:
                    self.malformed += 1
                else:
                    out.append(part)
            parts = out
        if len(rest) > limit + _TERMINATOR_SLACK:
            self._crlf = False
            self._buf = b""
            return parts + self._feed_lf(rest)
        self._buf = rest
        return parts

    def _feed_lf(self, data: bytes) -> list[bytes]:
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
        if self._expect_banner:
            after_banner = self._take_banner_lf(buf)
            if after_banner is None:
                return []
            buf = after_banner
        if self._discarding or _FOLLOWS in buf:
            # Rare: recovering from an oversized message, or a `Response: Follows` block
            # (Asterisk <= 13 Command output) whose body may hold blank lines.
            return self._frames_careful(buf)
        # Common case: one C-level split finds every blank line in the chunk.
        parts = buf.split(b"\n\n")
        rest = parts.pop()
        if rest and rest[0] == 0x0A:
            rest = rest.lstrip(b"\n")  # stray blank lines before the next message
        limit = self.max_message_size
        if b"\n\n\n" in buf or buf[:1] == b"\n" or (parts and max(map(len, parts)) > limit):
            # Stray blank lines (empty parts, parts starting with LF) or an oversized
            # message: filter part by part. Otherwise the split is the answer as it is.
            out: list[bytes] = []
            for part in parts:
                if not part:
                    continue
                if part[0] == 0x0A:
                    part = part.lstrip(b"\n")
                    if not part:
                        continue
                if len(part) > limit:
                    self.malformed += 1
                else:
                    out.append(part)
            parts = out
        if len(rest) > limit + _TERMINATOR_SLACK:
            self.malformed += 1
            self._discarding = _DISCARD_TO_BLANK_LINE
            # Everything buffered belongs to the oversized message, but its tail may hold
            # the start of the blank line that ends it.
            rest = rest[-_TERMINATOR_SLACK:]
        self._buf = rest
        return parts

    def _take_banner_lf(self, buf: bytes) -> bytes | None:
        """Take the banner line off ``buf``; the rest, or None while it is incomplete."""
        nl = buf.find(b"\n")
        if nl < 0:
            self._buf = self._guard_partial(buf)
            return None
        if nl > self.max_message_size:
            # Judged as if it had come in pieces: skipped up to the next blank line, whose
            # search starts at the banner's own line end.
            self._oversized_banner()
            return buf[nl:]
        self.banner = buf[:nl].decode("utf-8", "surrogateescape")
        self._expect_banner = False
        return buf[nl + 1 :]

    def _frames_careful(self, buf: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        limit = self.max_message_size
        while pos < size:
            if self._discarding:
                if self._discarding == _DISCARD_TO_END_COMMAND and self.follows:
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
            # Exactly `Response: Follows` and nothing else on the line: a `Response:
            # Followsxyz` is an ordinary response, and only the exact spelling that the scan
            # routing a read here looks for may frame as a block, or framing would depend on
            # which other bytes shared a read (found by fuzzing).
            follows = buf[pos : pos + 17] == _FOLLOWS and _blank_to_line_end(buf, pos + 17)
            # A Follows block nobody asked for is framed as an ordinary message, and skipped.
            unexpected = follows and not self.follows
            follows = follows and self.follows
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
            if end - pos > limit or unexpected:
                self.malformed += 1
            else:
                out.append(buf[pos:end])
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
        # A banner that never ends is not an AMI peer; bound the memory it can take. The +1:
        # a trailing CR may be half of the line end, and a banner is oversized by its length
        # without the line end whether it arrived whole or in pieces.
        if len(buf) > self.max_message_size + 1:
            self._oversized_banner()
            return buf[-1:]
        return buf

    def _oversized_banner(self) -> None:
        self.malformed += 1
        self._expect_banner = False
        self._discarding = _DISCARD_TO_BLANK_LINE

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


def _blank_to_line_end(buf: bytes, start: int) -> bool:
    """Only spaces (or nothing) from ``start`` to the end of the line, or of ``buf``."""
    end = buf.find(b"\n", start)
    return not (buf[start:] if end < 0 else buf[start:end]).strip()


def _lstrip_crlf(data: bytes) -> bytes:
    """``data`` without its leading CRLF pairs (blank lines); a lone CR is data and stays.

    ``bytes.lstrip(b"\\r\\n")`` would also eat the CR of a line that starts with one, and
    then the same bytes would frame differently when a bare LF elsewhere in the read sends
    them down the normalising path (found by fuzzing).
    """
    stripped = data.lstrip(b"\r\n")
    removed = len(data) - len(stripped)
    if removed % 2 == 0 and data[:removed] == b"\r\n" * (removed // 2):
        return stripped
    i = 0
    while data[i : i + 2] == b"\r\n":
        i += 2
    return data[i:]


def parse_block(block: bytes) -> Message | None:
    """Parse one framed message (from :meth:`AMIParser.feed_frames`); ``None`` if malformed.

    Malformed means: the first line is not ``Event:``/``Response:``/``Action:`` with a
    value, or a line has no colon. Lines split at the first ``": "`` (values may contain
    more), ``Key:`` alone is an empty value, ``Key:value`` without the space is accepted, and
    so is ``: value`` (an empty key, which no lookup asks for: Asterisk too reads headers by
    name and skips what it does not know).
    """
    if b"\r\n" in block:
        block = block.replace(b"\r\n", b"\n")
        # CRs before a line end are line-end noise, however many: without this loop a
        # "x\r\r\n" parsed as "x\r" from a CRLF-mode block but "x" from an LF-mode one (the
        # framer had normalised once already), so the result depended on how the stream was
        # cut into reads (found by fuzzing).
        while b"\r\n" in block:
            block = block.replace(b"\r\n", b"\n")
    if block[-1:] == b"\r":
        block = block.rstrip(b"\r")
    text = block.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    key, sep, name = lines[0].partition(": ")
    kind = _FIRST_KEYS.get(key) if sep else None
    if kind is None or not name or name[0] == " " or name[-1] == " " or kind == "response":
        return _parse_block_careful(lines)
    # Fast path: every line is "Key: value"; dict() rejects any other shape.
    pairs = [line.split(": ", 1) for line in lines]
    try:
        exact = dict(reversed(pairs))
    except ValueError:
        return _parse_block_careful(lines)
    if "" in exact or ":" in "".join(exact):
        # An empty key, or a colon before the first ": " (``Key:va: lue``): the careful
        # path splits those at the first colon, as Asterisk does.
        return _parse_block_careful(lines)
    return Message(kind, name, pairs, exact)


def parse_event(name: str, block: bytes) -> Message | None:
    """An ``Event: <name>`` block whose fields are read on demand; ``None`` if malformed.

    ``name`` is the block's first line without ``Event: `` (the caller has checked it). A
    consumer that needs four fields of a twenty-line event finds them with a few byte searches
    instead of decoding and splitting every line. The result is the one :func:`parse_block`
    gives, field for field: a block with any line that is not plain ``Key: value`` is parsed
    in full (so a line without a colon makes it malformed), and so is any lookup the raw bytes
    cannot answer exactly (a key spelt differently, an absent key, asking for ``headers``).
    """
    shape = block.translate(None, _ALL_BUT_COLON_AND_LF)
    if not (_ONE_COLON_A_LINE.startswith(shape) and shape[-1:] == b":") and (
        b"\n\n" in shape or shape[-1:] == b"\n" or shape[:1] != b":"
    ):
        return parse_block(block)  # a line without a colon: parse_block judges it
    return Message._lazy_event(name, block)


def _parse_block_careful(lines: list[str]) -> Message | None:
    first = lines[0]
    colon = first.find(":")
    if colon <= 0:
        return None
    kind = _KINDS.get(first[:colon].strip().lower())
    if kind is None:
        return None
    name = first[colon + 1 :].strip()
    if not name:
        return None
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
        if colon < 0:
            if line == "":
                continue
            return None
        # Split at the first ": " when there is one before any other colon-space; a key
        # never contains ": ", values may.
        value = line[colon + 1 :]
        if value.startswith(" "):
            value = value[1:]
        headers.append((line[:colon], value))
    if follows and headers and headers[-1] == ("Output", ""):
        headers.pop()  # the empty line left by the CLI text's final newline
    return Message(kind, name, headers)
