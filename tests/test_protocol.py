"""The AMI parser contract: real captures and one unit test per wire rule."""

from __future__ import annotations

import random
import zlib

import pytest
from helpers import FIXTURES, read_capture

from ami_exporter.ami.protocol import AMIParser, Message, action, serialize

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CAPTURES = sorted(p.name for p in FIXTURES.iterdir() if p.name.endswith((".raw", ".raw.gz")))
# Files small enough to feed one byte at a time (all but the 2 MB burst).
BYTEWISE_LIMIT = 40_000
SMALL_CAPTURES = [n for n in CAPTURES if (FIXTURES / n).stat().st_size <= BYTEWISE_LIMIT]


def feed_chunks(parser: AMIParser, chunks: list[bytes]) -> list[Message]:
    out: list[Message] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def split_random(data: bytes, seed: int, lo: int = 1, hi: int = 64) -> list[bytes]:
    rng = random.Random(seed)
    chunks = []
    pos = 0
    while pos < len(data):
        step = rng.randint(lo, hi)
        chunks.append(data[pos : pos + step])
        pos += step
    return chunks


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse(data: bytes, **kwargs: int) -> tuple[list[Message], AMIParser]:
    parser = AMIParser(expect_banner=False, **kwargs)
    return parser.feed(data), parser


def independent_count(data: bytes) -> int:
    """Message count without the parser: drop the banner line, split on CRLFCRLF."""
    assert data.startswith(b"Asterisk Call Manager/")
    body = data[data.index(b"\r\n") + 2 :]
    assert body.endswith(b"\r\n\r\n"), "every capture ends on a message boundary"
    return sum(1 for block in body.split(b"\r\n\r\n") if block.strip(b"\r\n"))


# ---------------------------------------------------------------------------------------------
# (a) every genuine capture


def test_fixture_families_present() -> None:
    assert len(CAPTURES) >= 49
    assert "07-burst-200.exporter.raw.gz" in CAPTURES
    assert "05-commands.admin.raw" in CAPTURES


@pytest.fixture(scope="module", params=CAPTURES)
def parsed_capture(request: pytest.FixtureRequest) -> tuple[str, bytes, list[Message]]:
    name: str = request.param
    data = read_capture(name)
    parser = AMIParser()
    messages = parser.feed(data)
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert parser.malformed == 0
    assert parser.buffered == 0
    assert parser.feed_eof() == 0
    assert parser.messages == len(messages)
    return name, data, messages


def test_capture_one_piece(parsed_capture: tuple[str, bytes, list[Message]]) -> None:
    _name, data, messages = parsed_capture
    assert len(messages) == independent_count(data)
    for msg in messages:
        assert msg.kind in ("event", "response")
        assert msg.name
        assert msg.headers[0][1] == msg.name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_capture_random_chunks(parsed_capture: tuple[str, bytes, list[Message]], seed: int) -> None:
    name, data, messages = parsed_capture
    parser = AMIParser()
    got = feed_chunks(parser, split_random(data, seed=zlib.crc32(name.encode()) + seed))
    assert parser.malformed == 0
    assert parser.buffered == 0
    assert parser.feed_eof() == 0
    assert got == messages


@pytest.mark.parametrize("name", SMALL_CAPTURES)
def test_capture_byte_by_byte(name: str) -> None:
    data = read_capture(name)
    one = AMIParser().feed(data)
    parser = AMIParser()
    got = feed_chunks(parser, bytewise(data))
    assert parser.malformed == 0
    assert parser.buffered == 0
    assert parser.feed_eof() == 0
    assert got == one
    assert len(got) == independent_count(data)


def test_capture_serialize_round_trip(parsed_capture: tuple[str, bytes, list[Message]]) -> None:
    """Asterisk writes canonical ``Key: Value`` CRLF messages: serialising gives the bytes back."""
    _name, data, messages = parsed_capture
    body = data[data.index(b"\r\n") + 2 :]
    assert b"".join(serialize(m) for m in messages) == body


def test_capture_lowercase_lf_ping_was_accepted() -> None:
    # 05-commands: a Ping written in lowercase with LF line ends gets a normal Success reply.
    messages = AMIParser().feed(read_capture("05-commands.admin.raw"))
    pongs = [m for m in messages if m.get("Ping") == "Pong"]
    assert len(pongs) >= 2
    sent = read_capture("05-commands.admin.sent")
    assert b"action: ping\n" in sent.lower()


def test_capture_command_output_14_format() -> None:
    messages = AMIParser().feed(read_capture("05-commands.admin.raw"))
    version = [m for m in messages if any("Asterisk 22.10.1" in v for v in m.get_all("Output"))]
    assert len(version) == 1
    assert version[0].get("Message") == "Command output follows"


def test_sent_streams_parse_as_actions() -> None:
    data = read_capture("01-login-success.exporter.sent")
    messages, parser = parse(data)
    assert parser.malformed == 0
    assert [m.kind for m in messages] == ["action"] * len(messages)
    assert [m.name for m in messages] == ["Login", "Ping", "Logoff"]


# ---------------------------------------------------------------------------------------------
# (b) one rule at a time


def test_banner_line() -> None:
    parser = AMIParser()
    assert parser.banner is None
    assert parser.feed(b"Asterisk Call Manager/11") == []
    assert parser.banner is None
    out = parser.feed(b".0.0\r\nResponse: Success\r\nPing: Pong\r\n\r\n")
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert [m.name for m in out] == ["Success"]
    assert parser.malformed == 0


def test_banner_not_expected() -> None:
    messages, parser = parse(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
    assert parser.banner is None
    assert [(m.kind, m.name) for m in messages] == [("event", "FullyBooted")]


def test_banner_alone_then_message_in_next_chunk() -> None:
    # The banner has no blank line after it: it must not swallow the first message.
    parser = AMIParser()
    assert parser.feed(BANNER) == []
    assert parser.buffered == 0
    out = parser.feed(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
    assert [m.get("Message") for m in out] == ["Authentication accepted"]


def test_crlf_and_bare_lf_give_the_same_message() -> None:
    crlf, _ = parse(b"Event: Hangup\r\nChannel: Local/100@test-0000000a;1\r\nCause: 16\r\n\r\n")
    lf, _ = parse(b"Event: Hangup\nChannel: Local/100@test-0000000a;1\nCause: 16\n\n")
    mixed, _ = parse(b"Event: Hangup\r\nChannel: Local/100@test-0000000a;1\nCause: 16\r\n\n")
    assert crlf == lf == mixed
    assert crlf[0].get("Cause") == "16"
    assert crlf[0].get("Channel") == "Local/100@test-0000000a;1"


def test_bare_cr_inside_line_is_data() -> None:
    messages, parser = parse(b"Event: Reload\r\nMessage: a\rb\r\n\r\n")
    assert parser.malformed == 0
    assert messages[0].get("Message") == "a\rb"


def test_stray_blank_lines_are_skipped() -> None:
    data = b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\n\nEvent: B\r\n\r\n\r\n"
    messages, parser = parse(data)
    assert [m.name for m in messages] == ["A", "B"]
    assert parser.malformed == 0
    assert parser.buffered == 0
    # Same when fed byte by byte.
    p2 = AMIParser(expect_banner=False)
    assert feed_chunks(p2, bytewise(data)) == messages
    assert p2.malformed == 0


def test_keys_case_insensitive_keep_spelling() -> None:
    data = b"Event: Cdr\r\nUniqueID: 1795771598.1\r\nCause-txt: Normal Clearing\r\n\r\n"
    (msg,), _ = parse(data)
    assert msg.get("uniqueid") == msg.get("UNIQUEID") == msg["Uniqueid"] == "1795771598.1"
    assert msg.get("cause-TXT") == "Normal Clearing"
    assert "uniqueid" in msg
    assert "Linkedid" not in msg
    assert msg.get("Linkedid") is None
    assert msg.get("Linkedid", "x") == "x"
    assert [k for k, _ in msg.headers] == ["Event", "UniqueID", "Cause-txt"]


def test_first_line_case_insensitive() -> None:
    (msg,), _ = parse(b"response: Success\nactionid: 42\nping: Pong\n\n")
    assert (msg.kind, msg.name, msg.action_id) == ("response", "Success", "42")
    assert msg.headers[0] == ("response", "Success")


def test_repeated_keys_get_all() -> None:
    data = (
        b"Response: Success\r\nActionID: 7\r\nMessage: Command output follows\r\n"
        b"Output: Channel              Location\r\nOutput: \r\nOutput: 0 active calls\r\n"
        b"Output:\r\n\r\n"
        b"Event: Newchannel\r\nChanVariable: A=1\r\nchanvariable: B=2\r\n"
        b"ChanVariable(Local/100@test-00000000;1): C=3\r\n\r\n"
    )
    (cmd, ev), parser = parse(data)
    assert parser.malformed == 0
    assert cmd.get_all("output") == ["Channel              Location", "", "0 active calls", ""]
    assert cmd.get("Output") == "Channel              Location"  # first wins
    assert cmd.action_id == "7"
    assert ev.get_all("ChanVariable") == ["A=1", "B=2"]
    assert ev.get("ChanVariable(Local/100@test-00000000;1)") == "C=3"
    assert ev.get_all("missing") == []


def test_value_containing_colon_space() -> None:
    data = (
        b"Response: Error\r\nActionID: 3\r\nMessage: Invalid/unknown command: Foo. "
        b"Use Action: ListCommands to show available commands.\r\n\r\n"
    )
    (msg,), _ = parse(data)
    assert msg.get("Message") == (
        "Invalid/unknown command: Foo. Use Action: ListCommands to show available commands."
    )
    (ev,), _ = parse(b"Event: Newexten\r\nAppData: Foo: bar,Baz: 42\r\nX:y: z\r\n\r\n")
    assert ev.get("AppData") == "Foo: bar,Baz: 42"
    assert ev.get("X") == "y: z"


def test_empty_values() -> None:
    (msg,), parser = parse(b"Event: Cdr\r\nAccountCode:\r\nUserField: \r\nDest: s\r\n\r\n")
    assert parser.malformed == 0
    assert msg.get("AccountCode") == ""
    assert msg.get("UserField") == ""
    assert msg.get("Dest") == "s"
    assert msg.headers == [("Event", "Cdr"), ("AccountCode", ""), ("UserField", ""), ("Dest", "s")]


def test_value_without_space_after_colon() -> None:
    (msg,), _ = parse(b"Action: Ping\nActionID:abc\n\n")
    assert msg.action_id == "abc"


def test_event_with_response_key_is_an_event() -> None:
    data = b"Event: OriginateResponse\r\nResponse: Failure\r\nActionID: o1\r\nReason: 0\r\n\r\n"
    (msg,), _ = parse(data)
    assert (msg.kind, msg.name) == ("event", "OriginateResponse")
    assert msg.get("Response") == "Failure"
    assert msg.action_id == "o1"


# --- Response: Follows (Asterisk <= 13) -------------------------------------------------------

FOLLOWS = (
    b"Response: Follows\r\n"
    b"Privilege: Command\r\n"
    b"ActionID: 42\r\n"
    b"Channel              Location             State   Application(Data)\n"
    b"\n"
    b"Key: looks like a header\n"
    b"0 active channels\n"
    b"\n"
    b"0 active calls\n"
    b"--END COMMAND--\r\n"
    b"\r\n"
)
FOLLOWS_OUTPUT = [
    "Channel              Location             State   Application(Data)",
    "",
    "Key: looks like a header",
    "0 active channels",
    "",
    "0 active calls",
]
NEXT = b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"


def check_follows(messages: list[Message], output: list[str]) -> None:
    assert [(m.kind, m.name) for m in messages] == [
        ("response", "Follows"),
        ("event", "FullyBooted"),
    ]
    cmd = messages[0]
    assert cmd.action_id == "42"
    assert cmd.get("Privilege") == "Command"
    assert cmd.get_all("Output") == output
    assert messages[1].get("Status") == "Fully Booted"


def test_response_follows_block() -> None:
    messages, parser = parse(FOLLOWS + NEXT)
    assert parser.malformed == 0
    assert parser.buffered == 0
    check_follows(messages, FOLLOWS_OUTPUT)
    # Privilege and ActionID stay headers, with their original spelling and position.
    assert [k for k, _ in messages[0].headers[:3]] == ["Response", "Privilege", "ActionID"]


@pytest.mark.parametrize("mode", ["bytewise", "random"])
def test_response_follows_chunked(mode: str) -> None:
    data = BANNER + FOLLOWS + NEXT
    chunks = bytewise(data) if mode == "bytewise" else split_random(data, seed=7, hi=9)
    parser = AMIParser()
    messages = feed_chunks(parser, chunks)
    assert parser.malformed == 0
    assert parser.buffered == 0
    check_follows(messages, FOLLOWS_OUTPUT)


def test_response_follows_end_glued_to_last_line() -> None:
    data = (
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 42\r\n"
        b"Channel              Location             State   Application(Data)\n"
        b"\n"
        b"Key: looks like a header\n"
        b"0 active channels\n"
        b"\n"
        b"0 active calls--END COMMAND--\r\n\r\n"
    )
    messages, parser = parse(data + NEXT)
    assert parser.malformed == 0
    check_follows(messages, FOLLOWS_OUTPUT)
    p2 = AMIParser(expect_banner=False)
    assert feed_chunks(p2, bytewise(data + NEXT)) == messages
    assert p2.malformed == 0


def test_response_follows_body_starting_with_blank_line() -> None:
    data = (
        b"Response: Follows\r\nPrivilege: Command\r\n"
        b"\nNo such command 'foo'\n--END COMMAND--\r\n\r\n"
    )
    (msg,), parser = parse(data)
    assert parser.malformed == 0
    assert msg.action_id is None
    assert msg.get_all("Output") == ["", "No such command 'foo'"]


def test_new_command_format_unchanged() -> None:
    data = (
        b"Response: Success\r\nActionID: 42\r\nMessage: Command output follows\r\n"
        b"Output: Asterisk 22.10.1 built by root\r\n\r\n"
    )
    (msg,), _ = parse(data)
    assert msg.get_all("Output") == ["Asterisk 22.10.1 built by root"]


# --- bytes that are not UTF-8 -----------------------------------------------------------------


def test_invalid_utf8_never_raises_and_round_trips() -> None:
    data = (
        b"Event: Newchannel\r\nCallerIDName: M\xfcller \xff\xfe\xc3\r\n"
        b"Caf\xe9: ok\r\nConnectedLineName: \xe2\x82\xac\r\n\r\n"
    )
    messages, parser = parse(data)
    assert parser.malformed == 0
    (msg,) = messages
    assert msg.get("ConnectedLineName") == "\u20ac"  # valid UTF-8 is decoded
    name = msg.get("CallerIDName")
    assert name is not None
    assert name.startswith("M")
    assert serialize(msg) == data
    # Every single byte value, in a value, in one message.
    everything = bytes(b for b in range(256) if b not in (0x0A, 0x0D))
    raw = b"Event: X\r\nV: " + everything + b"\r\n\r\n"
    (msg2,), p2 = parse(raw)
    assert p2.malformed == 0
    assert serialize(msg2) == raw


# --- malformed input ---------------------------------------------------------------------------


def big_event(value_size: int) -> bytes:
    return b"Event: Big\r\nPrivilege: call,all\r\nX: " + b"a" * value_size + b"\r\n\r\n"


def test_oversized_message_skipped_in_one_piece() -> None:
    data = NEXT + big_event(5000) + NEXT
    messages, parser = parse(data, max_message_size=1000)
    assert parser.malformed == 1
    assert [m.name for m in messages] == ["FullyBooted", "FullyBooted"]
    assert parser.buffered == 0


@pytest.mark.parametrize("hi", [1, 7, 64, 4096])
def test_oversized_message_skipped_across_chunks(hi: int) -> None:
    data = NEXT + big_event(5000) + NEXT
    parser = AMIParser(expect_banner=False, max_message_size=1000)
    chunks = bytewise(data) if hi == 1 else split_random(data, seed=hi, hi=hi)
    messages = feed_chunks(parser, chunks)
    assert parser.malformed == 1
    assert [m.name for m in messages] == ["FullyBooted", "FullyBooted"]
    assert parser.buffered == 0


def test_oversized_message_memory_is_bounded_until_blank_line() -> None:
    limit = 1000
    parser = AMIParser(expect_banner=False, max_message_size=limit)
    assert parser.feed(b"Event: Big\r\nOutput: ") == []
    # Many lines, no blank line, for a long time: nothing buffered beyond the limit.
    for i in range(2000):
        assert parser.feed(b"line %d of a runaway message\r\n" % i) == []
        assert parser.buffered <= limit + 64
    assert parser.malformed == 1
    # Blank line split across chunks, CR at the end of one.
    assert parser.feed(b"last\r\n\r") == []
    out = parser.feed(b"\n" + NEXT)
    assert [m.name for m in out] == ["FullyBooted"]
    assert parser.malformed == 1
    assert parser.buffered == 0


def test_message_exactly_at_limit_is_accepted() -> None:
    limit = 200
    head = b"Event: Big\nX: "
    msg = head + b"a" * (limit - len(head))
    assert len(msg) == limit
    data = msg + b"\n\n" + NEXT
    messages, parser = parse(data, max_message_size=limit)
    assert parser.malformed == 0
    assert [m.name for m in messages] == ["Big", "FullyBooted"]
    messages, parser = parse(msg + b"a\n\n" + NEXT, max_message_size=limit)
    assert parser.malformed == 1
    assert [m.name for m in messages] == ["FullyBooted"]


def test_message_exactly_at_limit_chunked_same_as_one_piece() -> None:
    """Known bug: size check of a still-incomplete message is off by the terminator bytes.

    A message whose block is exactly ``max_message_size`` bytes is accepted when it arrives
    in one piece, but counted malformed when the first LF of its closing blank line arrives
    before the second (the buffered ``block + LF`` is then ``limit + 1`` bytes).
    """
    limit = 200
    head = b"Event: Big\r\nX: "
    msg = head + b"a" * (limit - len(b"Event: Big\nX: ")) + b"\r\n\r\n"
    one, _ = parse(msg + NEXT, max_message_size=limit)
    assert [m.name for m in one] == ["Big", "FullyBooted"]
    parser = AMIParser(expect_banner=False, max_message_size=limit)
    # Split between the two CRLFs of the closing blank line, as a TCP read may.
    got = feed_chunks(parser, [msg[:-2], msg[-2:] + NEXT])
    assert parser.malformed == 0
    assert got == one


def test_follows_block_near_limit_chunked_same_as_one_piece() -> None:
    """Known bug: same as above for ``Response: Follows``, whose terminator is longer.

    The block ends before ``--END COMMAND--``; while the parser waits for the end of that
    line it compares the whole buffer (block + up to 16 bytes) against the limit.
    """
    one, p1 = parse(FOLLOWS, max_message_size=len(FOLLOWS) - 10)
    assert p1.malformed == 0
    assert len(one) == 1
    parser = AMIParser(expect_banner=False, max_message_size=len(FOLLOWS) - 10)
    got = feed_chunks(parser, bytewise(FOLLOWS))
    assert parser.malformed == 0
    assert got == one


def test_line_without_colon_is_malformed_next_one_fine() -> None:
    data = b"Event: A\r\nthis line has no colon\r\nX: 1\r\n\r\n" + NEXT
    messages, parser = parse(data)
    assert parser.malformed == 1
    assert [m.name for m in messages] == ["FullyBooted"]
    # A line starting with a colon is a header with an empty key, not a malformed message.
    messages, parser = parse(b"Event: A\r\n: no key\r\n\r\n" + NEXT)
    assert parser.malformed == 0
    assert [m.name for m in messages] == ["A", "FullyBooted"]
    assert messages[0].headers == [("Event", "A"), ("", "no key")]


@pytest.mark.parametrize(
    "first",
    [b"Message: hello", b"Ping: Pong", b"Eventually: x", b"no colon at all", b": empty"],
)
def test_first_line_not_event_response_action(first: bytes) -> None:
    messages, parser = parse(first + b"\r\nX: 1\r\n\r\n" + NEXT)
    assert parser.malformed == 1
    assert parser.messages == 1
    assert [m.name for m in messages] == ["FullyBooted"]


def test_partial_message_at_eof_dropped() -> None:
    parser = AMIParser()
    partial = b"Event: Hangup\r\nChannel: Local/100@test-0000000a;1\r\nCause"
    out = parser.feed(BANNER + NEXT + partial)
    assert [m.name for m in out] == ["FullyBooted"]
    assert parser.buffered > 0
    dropped = parser.feed_eof()
    assert dropped > 0
    assert parser.buffered == 0
    assert parser.malformed == 0
    assert parser.messages == 1


def test_feed_eof_with_nothing_buffered() -> None:
    parser = AMIParser()
    parser.feed(BANNER + NEXT)
    assert parser.feed_eof() == 0


def test_cr_split_across_chunk_boundary() -> None:
    parser = AMIParser(expect_banner=False)
    assert parser.feed(b"Event: A\r\nX: 1\r") == []
    out = parser.feed(b"\n\r\n")
    assert [(m.name, m.get("X")) for m in out] == [("A", "1")]
    assert parser.buffered == 0
    # The blank line's CR alone at a chunk end.
    assert parser.feed(b"Event: B\r\nX: 2\r\n\r") == []
    out = parser.feed(b"\n")
    assert [(m.name, m.get("X")) for m in out] == [("B", "2")]
    # A CR at a chunk end that is really data (no LF after it).
    assert parser.feed(b"Event: C\r\nX: a\r") == []
    out = parser.feed(b"b\r\n\r\n")
    assert [(m.name, m.get("X")) for m in out] == [("C", "a\rb")]
    assert parser.malformed == 0
    assert parser.buffered == 0


def test_cr_split_in_banner() -> None:
    parser = AMIParser()
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r") == []
    out = parser.feed(b"\n" + NEXT)
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert [m.name for m in out] == ["FullyBooted"]


def test_counters() -> None:
    parser = AMIParser(expect_banner=False)
    parser.feed(NEXT + b"junk\r\n\r\n" + NEXT)
    assert (parser.messages, parser.malformed) == (2, 1)


# --- building / serialising -------------------------------------------------------------------


def test_action_builder_and_serialize() -> None:
    msg = action("Login", "1", Username="exporter", Secret="s3cret", Events="on")
    assert (msg.kind, msg.name, msg.action_id) == ("action", "Login", "1")
    wire = serialize(msg)
    assert wire == (
        b"Action: Login\r\nActionID: 1\r\nUsername: exporter\r\n"
        b"Secret: s3cret\r\nEvents: on\r\n\r\n"
    )
    (back,), parser = parse(wire)
    assert parser.malformed == 0
    assert back == msg
    assert serialize(action("Ping")) == b"Action: Ping\r\n\r\n"
    assert (
        serialize([("Action", "Ping"), ("ActionID", "p")]) == b"Action: Ping\r\nActionID: p\r\n\r\n"
    )


def test_oversized_follows_block_chunked_resyncs_after_end_command() -> None:
    """Known bug: an oversized ``Response: Follows`` arriving in pieces is discarded only up
    to the first blank line *inside* its CLI body; the rest of the body is then framed as
    messages (one malformed count per remaining paragraph, and a body paragraph that looks
    like ``Event: ...`` is emitted as a forged event). In one piece it is 1 malformed."""
    body = b"".join(b"line %d\n\n" % i for i in range(50)) + b"Event: Forged\nX: 1\n\n"
    data = b"Response: Follows\r\nPrivilege: Command\r\n" + body + b"--END COMMAND--\r\n\r\n"
    one, p1 = parse(data + NEXT, max_message_size=100)
    assert p1.malformed == 1
    assert [m.name for m in one] == ["FullyBooted"]
    parser = AMIParser(expect_banner=False, max_message_size=100)
    got = feed_chunks(parser, [*split_random(data, seed=3, hi=16), NEXT])
    assert [m.name for m in got] == ["FullyBooted"]
    assert parser.malformed == 1
