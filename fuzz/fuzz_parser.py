#!/usr/bin/env python3
"""Coverage-guided fuzz target for the sans-IO AMI parser (``ami_exporter.ami.protocol``).

Run (atheris, libFuzzer flags; the corpus directory is created and seeded from the recorded
captures in ``tests/fixtures`` when empty, and libFuzzer adds what it finds to it)::

    python3 -m pip install atheris
    python3 fuzz/fuzz_parser.py -max_total_time=600 -rss_limit_mb=2048 /tmp/ami-fuzz-corpus

Without atheris the same command runs a plain mutation loop (random byte flips, token
insertions and splices of the seeds) over the same checks, so it works on any Python.
``tests/test_fuzz.py`` runs it in CI for 5,000 inputs with a fixed seed (``AMI_FUZZ_RUNS``,
or ``AMI_FUZZ_SECONDS`` for a time-bounded run), instrumenting only ``ami_exporter``.

Each input is checked for: no exception from any parser entry point; the lazy field reads of
``parse_event`` agree with ``parse_block``; feeding it whole or cut
into chunks (cut points derived from the input) gives the same messages, malformed count and
banner; the bytes held stay within the size cap; every parsed message re-serialises to bytes
that parse back to the same message.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ami_exporter.ami.protocol import AMIParser, Message, parse_block, parse_event, serialize

SLACK = 64
LIMITS = (24, 100, 1 << 20)
TOKENS = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\n\n",
    b": ",
    b":",
    b"Event: ",
    b"Response: Follows\r\n",
    b"--END COMMAND--",
    b"Action: ",
    b"ActionID: ",
    b"\xff",
    b"OLLOWS",
)


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, cut_seed, body = data[0], data[1], data[2:]
    banner = bool(flags & 1)
    limit = LIMITS[(flags >> 1) % len(LIMITS)]

    whole = AMIParser(expect_banner=banner, max_message_size=limit)
    expected = whole.feed(body)
    whole.feed_eof()

    rng = random.Random(cut_seed)
    chunked = AMIParser(expect_banner=banner, max_message_size=limit)
    got: list[Message] = []
    pos = 0
    while pos < len(body):
        step = rng.choice((1, 2, 3, 7, 64, 4096))
        got.extend(chunked.feed(body[pos : pos + step]))
        pos += step
        if chunked.buffered > limit + 3 * SLACK:
            raise AssertionError(f"buffered {chunked.buffered} > limit {limit}")
    chunked.feed_eof()
    if got != expected or chunked.malformed != whole.malformed:
        raise AssertionError(f"chunking changed the result: {expected!r} != {got!r}")
    if chunked.banner != whole.banner:
        raise AssertionError("chunking changed the banner")

    for msg in got:
        msg.get("Uniqueid")
        msg.get_all("Output")
        if msg.kind == "response" and msg.name.lower() == "follows":
            continue  # its body became Output headers: the 14+ wire form, by design
        if any("\r" in k or "\r" in v for k, v in msg.headers):
            continue  # round trips are exact only without CR in keys and values (protocol.py)
        again = AMIParser(expect_banner=False).feed(serialize(msg))
        if again != [msg]:
            raise AssertionError(f"re-serialise changed {msg!r} into {again!r}")

    block = parse_block(body[:512])
    if block is not None:
        serialize(block)
    event = b"Event: Hangup\n" + body[:512]
    full = parse_block(event)
    for key in ("Uniqueid", "Cause", "Channel", "Event"):
        lazy = parse_event("Hangup", event)
        if (lazy is None) != (full is None):
            raise AssertionError(f"lazy and full parsing disagree on malformed: {event!r}")
        if lazy is not None and full is not None and lazy.get(key) != full.get(key):
            raise AssertionError(f"lazy and full parsing disagree on {key}: {event!r}")


def TestOneInput(data: bytes) -> None:
    check(data)


def _seed(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    for path in sorted(fixtures.glob("*.raw")):
        (corpus / path.name).write_bytes(
            bytes([len(path.name) % 256, 7]) + path.read_bytes()[:4096]
        )


def _plain_loop(argv: list[str]) -> int:
    max_time, runs, dirs = 10.0, 0, []
    for arg in argv:
        if arg.startswith("-max_total_time="):
            max_time = float(arg.split("=", 1)[1])
        elif arg.startswith("-runs="):
            runs = int(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            dirs.append(Path(arg))
    seeds = [p.read_bytes() for d in dirs if d.is_dir() for p in sorted(d.iterdir()) if p.is_file()]
    seeds = seeds or [b"\x00\x00Event: A\r\n\r\n"]
    rng = random.Random(int(os.environ.get("AMI_FUZZ_SEED", "0")) or None)
    start, n = time.monotonic(), 0
    while (runs and n < runs) or (not runs and time.monotonic() - start < max_time):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = rng.choice(TOKENS)
            elif op == 2:
                del data[at : at + rng.randint(1, 16)]
            else:
                other = rng.choice(seeds)
                s = rng.randrange(len(other) + 1)
                data[at:at] = other[s : s + rng.randint(1, 256)]
        try:
            check(bytes(data))
        except Exception:
            name = "crash-" + hashlib.sha1(bytes(data)).hexdigest()  # noqa: S324 - a file name
            Path(name).write_bytes(bytes(data))
            print(f"fuzz_parser: crash, input saved to {name}", file=sys.stderr)
            raise
        n += 1
    print(f"fuzz_parser: done {n} runs in {time.monotonic() - start:.1f} s (no atheris)")
    return 0


def main() -> int:
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            _seed(Path(arg))
            break
    try:
        import atheris  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _plain_loop(sys.argv[1:])
    print("fuzz_parser: atheris", atheris.__name__, flush=True)
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()  # exits the process when done (libFuzzer prints "Done N runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
