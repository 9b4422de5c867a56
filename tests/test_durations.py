"""Durations: Go's ``time.ParseDuration`` grammar (``10s``, ``1m30s``, ``500ms``) or bare seconds,
in every flag and YAML key that takes one; a bad one exits 2 naming the flag or ``file:line``.

The expected values are Go's own test table (``src/time/time_test.go``, ``parseDurationTests``
and ``parseDurationErrorTests``), with the nanoseconds written out here; the properties check
the parser against Go's ``Duration.String()`` format and against sums computed in the test.
The tiers are per test: table and config tests are unit, the properties fuzz, the CLI e2e.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import clean_env, one_error_line, run_exporter
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_exporter.config.durations import (
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    NANOSECOND,
    SECOND,
    DurationError,
    format_duration,
    parse_duration,
)
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.servers import load_config_file
from ami_exporter.config.values import positive_seconds

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Go's parseDurationTests, verbatim inputs.
GO_VALID = [
    ("0", 0),
    ("5s", 5 * SECOND),
    ("30s", 30 * SECOND),
    ("1478s", 1478 * SECOND),
    ("-5s", -5 * SECOND),
    ("+5s", 5 * SECOND),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * SECOND),
    ("5.6s", 5 * SECOND + 600 * MILLISECOND),
    ("5.s", 5 * SECOND),
    (".5s", 500 * MILLISECOND),
    ("1.0s", 1 * SECOND),
    ("1.00s", 1 * SECOND),
    ("1.004s", 1 * SECOND + 4 * MILLISECOND),
    ("1.0040s", 1 * SECOND + 4 * MILLISECOND),
    ("100.00100s", 100 * SECOND + 1 * MILLISECOND),
    ("10ns", 10 * NANOSECOND),
    ("11us", 11 * MICROSECOND),
    ("12\u00b5s", 12 * MICROSECOND),
    ("12\u03bcs", 12 * MICROSECOND),
    ("13ms", 13 * MILLISECOND),
    ("14s", 14 * SECOND),
    ("15m", 15 * MINUTE),
    ("16h", 16 * HOUR),
    ("3h30m", 3 * HOUR + 30 * MINUTE),
    ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
    ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
    (
        "1h2m3s4ms5us6ns",
        HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6 * NANOSECOND,
    ),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
    ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * MINUTE),  # Go's float64 fraction, golang.org/issue/6617
    ("9007199254740993ns", 2**53 + 1),
    ("9223372036854775807ns", INT64_MAX),
    ("9223372036854775.807us", INT64_MAX),
    ("9223372036s854ms775us807ns", INT64_MAX),
    ("-9223372036854775808ns", INT64_MIN),
    ("-9223372036854775.808us", INT64_MIN),
    ("-9223372036s854ms775us808ns", INT64_MIN),
    ("-2562047h47m16.854775808s", INT64_MIN),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
]
# Go's parseDurationErrorTests, but "3": a bare number is seconds here (what the flags took
# before they knew Go durations).
GO_INVALID = [
    "",
    "-",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "1d",
    "\x85\x85",
    "\xffff",
    "hello \xffff world",
    "\ufffd",
    "\ufffd hello \ufffd world",
    "9223372036854775810ns",
    "9223372036854775808ns",
    "-9223372036854775809ns",
    "9223372036854776us",
    "3000000h",
    "9223372036854775.808us",
    "9223372036854ms775us808ns",
]
# Go's Duration.String() examples (time_test.go durationTests).
GO_STRINGS = [
    ("0s", 0),
    ("1ns", 1),
    ("1.1\u00b5s", 1100),
    ("2.2ms", 2200 * MICROSECOND),
    ("3.3s", 3300 * MILLISECOND),
    ("4m5s", 4 * MINUTE + 5 * SECOND),
    ("4m5.001s", 4 * MINUTE + 5001 * MILLISECOND),
    ("5h6m7.001s", 5 * HOUR + 6 * MINUTE + 7001 * MILLISECOND),
    ("8m0.000000001s", 8 * MINUTE + 1),
    ("2562047h47m16.854775807s", INT64_MAX),
    ("-2562047h47m16.854775808s", INT64_MIN),
]


@pytest.mark.unit
@pytest.mark.parametrize(("text", "nanoseconds"), GO_VALID)
def test_go_parse_duration_table(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds


@pytest.mark.unit
@pytest.mark.parametrize("text", GO_INVALID)
def test_go_parse_duration_errors(text: str) -> None:
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    assert repr(text) in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize(("text", "nanoseconds"), GO_STRINGS)
def test_go_duration_string(text: str, nanoseconds: int) -> None:
    assert format_duration(nanoseconds) == text
    assert parse_duration(text) == nanoseconds


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("2.5", 2.5), ("5.", 5.0), (".5", 0.5), ("+3", 3.0), ("0.001", 0.001)],
)
def test_bare_seconds_still_accepted(text: str, seconds: float) -> None:
    assert parse_duration(text) == round(seconds * SECOND)
    assert positive_seconds(text, "--x") == seconds


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), (" 2s ", 2.0), (7, 7.0)],
)
def test_positive_seconds_takes_go_durations(value: object, seconds: float) -> None:
    assert positive_seconds(value, "--ami.ping-interval") == seconds


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", "0s", "-1s", "-5", "10x", "1 s", "1e3", True, None, 0])
def test_positive_seconds_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        positive_seconds(value, "--ami.ping-interval")
    text = str(err.value)
    assert text.startswith("--ami.ping-interval: ")
    assert "10s, 1m30s, 500ms" in text  # says what would do


# ---------------------------------------------------------------------------- properties

UNIT_SCALES = [
    ("ns", NANOSECOND),
    ("us", MICROSECOND),
    ("\u00b5s", MICROSECOND),
    ("\u03bcs", MICROSECOND),
    ("ms", MILLISECOND),
    ("s", SECOND),
    ("m", MINUTE),
    ("h", HOUR),
]


@pytest.mark.fuzz
@settings(max_examples=500, deadline=None)
@given(st.integers(INT64_MIN, INT64_MAX))
def test_round_trip_through_go_string_format(nanoseconds: int) -> None:
    assert parse_duration(format_duration(nanoseconds)) == nanoseconds


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(UNIT_SCALES)), min_size=1, max_size=6
    ),
    st.sampled_from(["", "+", "-"]),
)
def test_terms_sum_to_their_nanoseconds(
    terms: list[tuple[int, tuple[str, int]]], sign: str
) -> None:
    text = sign + "".join(f"{value}{unit}" for value, (unit, _) in terms)
    total = sum(value * scale for value, (_, scale) in terms)
    if total > (-INT64_MIN if sign == "-" else INT64_MAX):  # Go's int64 range, as Go refuses
        with pytest.raises(DurationError, match="out of range"):
            parse_duration(text)
        return
    assert parse_duration(text) == (-total if sign == "-" else total)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 999_999_999), st.integers(0, 10**6), st.sampled_from(["s", "ms"]))
def test_nine_digit_fractions_are_exact(fraction: int, whole: int, unit: str) -> None:
    """Up to nine fraction digits of a second (or of a millisecond) are whole nanoseconds."""
    scale = SECOND if unit == "s" else MILLISECOND
    digits = f"{fraction:09d}"
    expected = whole * scale + fraction * scale // 10**9
    assert parse_duration(f"{whole}.{digits}{unit}") == expected


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_any_text_is_a_duration_or_a_duration_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError:
        return
    assert INT64_MIN <= value <= INT64_MAX


# ---------------------------------------------------------------------------- flags and YAML

SERVER = """\
servers:
  - name: a
    address: 127.0.0.1:5038
    username: u
    secret: s
"""


@pytest.mark.unit
def test_yaml_durations(tmp_path: Path) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(
        SERVER + "    ping_interval: 1m30s\n    resync_interval: 2.5\n    connect_timeout: 500ms\n"
    )
    defaults = {"ping_interval": 10.0, "resync_interval": 60.0, "connect_timeout": 5.0}
    (server,) = load_config_file(str(path), defaults)
    assert (server.ping_interval, server.resync_interval, server.connect_timeout) == (
        90.0,
        2.5,
        0.5,
    )
    # Left out: the flag's value; YAML's own 1:30 (sexagesimal 90) is not taken as a duration.
    path.write_text(SERVER + "    ping_interval: 1:30\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(str(path), defaults)
    assert str(err.value).startswith(f"{path}:6: ping_interval: ")


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["10x", "0s", "-1m", "~", "[1, 2]", "yes"])
def test_yaml_bad_duration_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(SERVER + f"    resync_interval: {bad}\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(str(path), {"ping_interval": 10.0, "connect_timeout": 5.0})
    assert str(err.value).startswith(f"{path}:6: resync_interval: ")


@pytest.mark.e2e
def test_cli_durations(tmp_path: Path) -> None:
    """A bad duration flag: exit 2 naming it; good Go durations in the flags pass, and the
    one bad YAML value is named by file:line."""
    env = clean_env(AMI_SECRET="s", AMI_USERNAME="u")
    for flag in ("--ami.ping-interval", "--ami.resync-interval", "--ami.connect-timeout"):
        line = one_error_line(run_exporter([flag, "10x"], tmp_path, env))
        assert f"{flag}: unknown unit 'x' in duration '10x'" in line
    path = tmp_path / "servers.yml"
    path.write_text(SERVER + "    connect_timeout: 1h1x\n")
    args = ["--ami.ping-interval", "1m30s", "--ami.resync-interval", "2m", "--config.file"]
    line = one_error_line(run_exporter([*args, str(path)], tmp_path, env))
    assert f"{path}:6: connect_timeout: unknown unit 'x'" in line
