"""Property tests of the sans-IO parser (hypothesis), and a bounded run of the fuzz target.

Properties:

* any byte stream, cut anywhere, never raises, and gives exactly what feeding it in one piece
  gives (messages, malformed count, banner), with the memory held bounded;
* a valid stream (CRLF or bare LF, stray blank lines, ``Response: Follows`` blocks) split at
  arbitrary chunk boundaries yields exactly the messages that were serialised;
* serialise then parse gives the message back (keys without ``:``, values without CR/LF, a
  first value without surrounding spaces), and a parsed message re-serialised parses the same.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, SRC, read_capture
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ami_exporter.ami.protocol import AMIParser, Message, parse_block, parse_event, serialize

FUZZ_TARGET = REPO / "fuzz" / "fuzz_parser.py"
SLACK = 64

PROFILE = settings(
    max_examples=int(os.environ.get("AMI_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Bytes that matter to the framing, mixed with anything.
_ALPHABET = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\n\n",
    b": ",
    b":",
    b" ",
    b"Event",
    b"Response",
    b"Action",
    b"Follows",
    b"ollows",
    b"OLLOWS",
    b"--END COMMAND--",
    b"Output",
    b"ActionID",
    b"Privilege",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"a",
    b"Z",
]
junk = st.lists(st.one_of(st.sampled_from(_ALPHABET), st.binary(max_size=12)), max_size=80).map(
    b"".join
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def _feed_all(parser: AMIParser, chunks: list[bytes]) -> list[Message]:
    out: list[Message] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
        assert parser.buffered <= max(parser.max_message_size + SLACK, 0) + 2 * SLACK
    return out


def _exercise(msg: Message) -> None:
    """Everything a consumer may call on a message must work."""
    msg.get("Uniqueid")
    msg.get("uniqueid")
    msg.get_all("Output")
    _ = msg.headers, msg.action_id, repr(msg), "Channel" in msg
    serialize(msg)


@PROFILE
# Found by this test: a banner exactly at the size cap, its CRLF split between two reads, was
# judged oversized (the CR counted) only when it arrived in pieces.
@example(data=b"\r--END COMMAND--\r\n", cuts=[17], banner=True, limit=16)
# Found by the atheris target: a line made of a lone CR after a blank line was eaten by
# lstrip(b"\r\n") in the CRLF fast path, but framed as a (malformed) message when a bare LF
# in the same read sent the bytes down the normalising path.
@example(data=b"Ast\x00\r\n\r\n\r\r\n\nRes", cuts=[9], banner=True, limit=1 << 20)
# Found by the fuzz target's plain loop: "x\r\r\n" parsed as "x\r" in CRLF mode but "x" once a
# bare LF elsewhere in the same read had sent the bytes down the normalising path.
@example(
    data=b"Event: A\r\nP: x\r\r\nQ: y\r\n\r\nEvent: B\n\n", cuts=[30], banner=False, limit=1 << 20
)
# Found by the atheris target: `foLlows` (missed by the "ollows"/"OLLOWS" scan) framed as a
# Follows block only when a normally spelt one shared its read.
@example(
    data=b"Response: followsX\n\nresponse: foLlows\n\nA\n\n", cuts=[21], banner=False, limit=1 << 20
)
@given(
    data=junk,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    banner=st.booleans(),
    limit=st.sampled_from([16, 40, 100, 1 << 20]),
)
def test_any_byte_stream_never_raises_and_chunking_does_not_matter(
    data: bytes, cuts: list[int], banner: bool, limit: int
) -> None:
    whole = AMIParser(expect_banner=banner, max_message_size=limit)
    expected = whole.feed(data)
    whole.feed_eof()
    chunked = AMIParser(expect_banner=banner, max_message_size=limit)
    got = _feed_all(chunked, _split(data, cuts))
    chunked.feed_eof()
    assert got == expected
    assert chunked.malformed == whole.malformed
    assert chunked.banner == whole.banner
    for msg in got:
        _exercise(msg)


_line_bits = st.sampled_from(
    [
        b"Uniqueid",
        b"uniqueid",
        b"Cause",
        b"Channel",
        b"Event",
        b"event",
        b"K",
        b":",
        b": ",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\xff",
        b"x",
        b"1",
    ]
)
_block_bodies = st.one_of(st.binary(max_size=200), st.lists(_line_bits, max_size=40).map(b"".join))
_lookup_keys = ("Uniqueid", "uniqueid", "UniqueID", "Cause", "Channel", "K", "Event", "event", "x")


@PROFILE
@given(body=_block_bodies, name=st.sampled_from(["Hangup", "Newchannel", "X"]))
def test_lazy_and_full_parsing_agree_on_every_field(body: bytes, name: str) -> None:
    """parse_event (the daemon's lazy path) answers exactly as parse_block, for any bytes."""
    block = b"Event: " + name.encode() + b"\n" + body
    full = parse_block(block)
    lazy = parse_event(name, block)
    assert (lazy is None) == (full is None), "lazy and full disagree on malformed"
    if full is None or lazy is None:
        return
    keys = {key for key, _ in full.headers} | set(_lookup_keys)
    for key in sorted(keys):
        # A fresh lazy message per key: the first lookup is the one that reads raw bytes.
        fresh = parse_event(name, block)
        assert fresh is not None
        assert fresh.get(key) == full.get(key), key
        assert (key in fresh) == (key in full), key
    assert lazy.headers == full.headers
    assert lazy.get_all("Uniqueid") == full.get_all("Uniqueid")
    _exercise(lazy)


def test_colon_less_hangup_is_malformed_on_the_lazy_path_too() -> None:
    block = b"Event: Hangup\r\nChannel: PJSIP/a-1\r\nthis line has no colon\r\nCause: 16"
    assert parse_block(block) is None
    assert parse_event("Hangup", block) is None


# ---------------------------------------------------------------------------- valid streams

_key_bytes = st.binary(min_size=1, max_size=12).filter(
    lambda b: b":" not in b and b"\r" not in b and b"\n" not in b
)
_value_bytes = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)
keys = _key_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))
values = _value_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    first = draw(st.sampled_from(["Event", "Response", "Action"]))
    name = draw(names.filter(lambda n: n.lower() != "follows"))
    rest = draw(st.lists(st.tuples(keys, values), max_size=6))
    return Message(first.lower(), name, [(first, name), *rest])  # type: ignore[arg-type]


@st.composite
def follows_blocks(draw: st.DrawFn) -> tuple[bytes, Message]:
    """An Asterisk <= 13 ``Response: Follows`` block and the message it must parse to."""
    aid = draw(st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True))
    lines = draw(st.lists(st.from_regex(r"[ -~]{0,20}", fullmatch=True), max_size=5))
    lines = [ln for ln in lines if "--END COMMAND--" not in ln and ":" not in ln[:12]]
    raw = "Response: Follows\r\nPrivilege: Command\r\nActionID: " + aid + "\r\n"
    raw += "".join(ln + "\n" for ln in lines) + "--END COMMAND--\r\n\r\n"
    headers = [("Response", "Follows"), ("Privilege", "Command"), ("ActionID", aid)]
    headers += [("Output", ln) for ln in lines]
    return raw.encode(), Message("response", "Follows", headers)


def _wire(msg: Message, lf_only: bool, blank_before: int) -> bytes:
    data = b"\r\n" * blank_before + serialize(msg)
    return data.replace(b"\r\n", b"\n") if lf_only else data


@PROFILE
@given(
    items=st.lists(
        st.tuples(st.one_of(messages(), follows_blocks()), st.booleans(), st.integers(0, 2)),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
    banner=st.booleans(),
)
def test_valid_stream_split_anywhere_gives_the_same_messages(
    items: list[tuple[Message | tuple[bytes, Message], bool, int]], cuts: list[int], banner: bool
) -> None:
    wire = b"Asterisk Call Manager/11.0.0\r\n" if banner else b""
    expected: list[Message] = []
    for item, lf_only, blanks in items:
        if isinstance(item, Message):
            wire += _wire(item, lf_only, blanks)
            expected.append(item)
        else:
            raw, msg = item
            wire += b"\r\n" * blanks + raw
            expected.append(msg)
    parser = AMIParser(expect_banner=banner)
    got = _feed_all(parser, _split(wire, cuts))
    assert got == expected
    assert parser.malformed == 0
    assert parser.buffered == 0
    if banner:
        assert parser.banner == "Asterisk Call Manager/11.0.0"


@PROFILE
@given(msg=messages())
def test_serialize_parse_round_trip(msg: Message) -> None:
    parsed = AMIParser(expect_banner=False).feed(serialize(msg))
    assert parsed == [msg]
    assert serialize(parsed[0]) == serialize(msg)


@PROFILE
# Found by the atheris target: "Response:  followsX" (two spaces) re-serialised as
# "Response: followsX", which the framer then took for a never-ending Follows block.
@example(data=b"Response:  followsll the fish.\rGoss\r\n\r\n")
@given(data=junk)
def test_parsed_messages_reserialise_to_themselves(data: bytes) -> None:
    for msg in AMIParser(expect_banner=False).feed(data + b"\n\n"):
        if msg.kind == "response" and msg.name.lower() == "follows":
            continue  # its body became Output headers: a different (14+) wire form
        if any("\r" in k or "\r" in v for k, v in msg.headers):
            continue  # exact round trips are promised without CR in keys and values only
        again = AMIParser(expect_banner=False).feed(serialize(msg))
        assert again == [msg], (msg, serialize(msg))


# ---------------------------------------------------------------------------- fuzz target

# Runs fuzz/fuzz_parser.py as its own ``__main__``. With atheris, only ami_exporter is
# instrumented (the target's instrument_all() would instrument every loaded module, the
# standard library included: ~10 s before the first input); ``block_atheris`` forces the
# target's plain mutation loop, the path of Pythons without atheris.
_RUN_TARGET = """
import runpy, sys
target, block_atheris, *flags = sys.argv[1:]
if block_atheris == "1":
    sys.modules["atheris"] = None
else:
    try:
        import atheris
    except ImportError:
        pass
    else:
        with atheris.instrument_imports(include=["ami_exporter"]):
            import ami_exporter.ami.protocol
        atheris.instrument_all = lambda: None
sys.argv = [target, *flags]
runpy.run_path(target, run_name="__main__")
"""


def _run_fuzz_target(tmp_path: Path, *, block_atheris: bool) -> str:
    runs = os.environ.get("AMI_FUZZ_RUNS", "5000")
    seconds = os.environ.get("AMI_FUZZ_SECONDS")  # a longer, time-bounded run instead
    bound = f"-max_total_time={seconds}" if seconds else f"-runs={runs}"
    corpus = tmp_path / "corpus"  # seeded from tests/fixtures by the target itself
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN_TARGET,
            str(FUZZ_TARGET),
            "1" if block_atheris else "0",
            bound,
            "-seed=1",
            "-rss_limit_mb=1024",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=float(seconds or 0) + 120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC), "AMI_FUZZ_SEED": "1"},
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
    assert any(corpus.iterdir()), "the corpus was not seeded from tests/fixtures"
    return output


def test_fuzz_target_bounded_run(tmp_path: Path) -> None:
    """The coverage-guided target, a bounded number of inputs (atheris where installed)."""
    output = _run_fuzz_target(tmp_path, block_atheris=False)
    done = re.search(r"fuzz_parser: done (\d+) runs|Done (\d+) runs", output)
    assert done, output[-4000:]
    if "fuzz_parser: atheris" in output:
        # The instrumentation feeds the fuzzer: it reached code the seeds did not.
        inited = re.search(r"INITED cov: (\d+)", output)
        final = re.search(r"DONE +cov: (\d+)", output)
        assert inited and final, output[-4000:]
        assert int(final[1]) > int(inited[1]), (inited[0], final[0])
    print(output.strip().splitlines()[-1])


def test_fuzz_target_plain_loop(tmp_path: Path) -> None:
    """Without atheris the target runs its own mutation loop over the same checks."""
    output = _run_fuzz_target(tmp_path, block_atheris=True)
    done = re.search(r"fuzz_parser: done (\d+) runs .*\(no atheris\)", output)
    assert done, output[-4000:]
    if "AMI_FUZZ_SECONDS" not in os.environ:
        assert int(done[1]) == int(os.environ.get("AMI_FUZZ_RUNS", "5000"))


def test_fuzz_target_checks_catch_a_broken_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's oracles can fail: a parser that loses the first message of every read is
    caught on a real capture's bytes (by the chunking or the re-serialise check)."""
    spec = importlib.util.spec_from_file_location("fuzz_parser", FUZZ_TARGET)
    assert spec is not None and spec.loader is not None
    target = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(target)
    # flags 5: a banner is expected and the size cap is 1 MiB (fuzz_parser.check's encoding)
    seed = bytes([5, 7]) + read_capture("01-login-success.exporter.raw")
    target.check(seed)  # the real parser passes

    class Lossy(AMIParser):
        def feed(self, data: bytes) -> list[Message]:
            return super().feed(data)[1:]  # the first message of every read is lost

    monkeypatch.setattr(target, "AMIParser", Lossy)
    with pytest.raises(AssertionError, match="changed"):
        target.check(seed)
