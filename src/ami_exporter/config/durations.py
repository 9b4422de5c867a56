"""Durations as Go programs write them (``10s``, ``1m30s``, ``500ms``, ``1h``), or bare seconds.

:func:`parse_duration` follows Go's ``time.ParseDuration`` grammar exactly: an optional sign,
then one or more decimal numbers each followed by a unit (``ns``, ``us``/``µs``/``μs``, ``ms``,
``s``, ``m``, ``h``), no spaces; ``0`` alone needs no unit. The arithmetic is Go's too
(integer nanoseconds, a fraction through a float64), so every string gives the nanoseconds
Go gives, and a value past Go's range (about 292 years) is refused as it is there. A bare number
(``10``, ``2.5``, ``-1``) is also taken, as seconds: what the exporter took before it knew Go
durations. :func:`format_duration` is Go's ``Duration.String()``, the
reference the tests round-trip against.

The PyPI ``durationpy`` was weighed and left: it adds units Go has not (``d``, ``w``, ``y``),
accepts ``1.2.3s``-like runs through a float and loses nanoseconds in float arithmetic.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DurationError", "format_duration", "parse_duration"]

NANOSECOND: Final = 1
MICROSECOND: Final = 1000 * NANOSECOND
MILLISECOND: Final = 1000 * MICROSECOND
SECOND: Final = 1000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
UNITS: Final = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # MICRO SIGN, as Go's String() writes it
    "\u03bcs": MICROSECOND,  # GREEK SMALL LETTER MU
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
MAX_NANOSECONDS: Final = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
# One term: digits with an optional fraction (at least one digit on a side), then a unit.
# The unit is what Go reads as one: everything up to the next digit or '.'.
_TERM: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_BARE_SECONDS: Final = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class DurationError(ValueError):
    """Not a duration: the message says why, without the flag or file (the caller adds it)."""


def parse_duration(text: str) -> int:
    """``text`` in nanoseconds (negative allowed here: the callers decide what they accept).

    Go's grammar and arithmetic, plus a bare number of seconds. Raises :class:`DurationError`.
    """
    if _BARE_SECONDS.fullmatch(text):
        return parse_duration(text + "s")
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(rest):
        match = _TERM.match(rest, pos)
        assert match is not None  # every part of the pattern may be empty
        whole, fraction, unit = match.groups()
        if not whole and not fraction:
            raise DurationError(f"invalid duration {text!r}")
        if not unit:
            raise DurationError(f"missing unit in duration {text!r}")
        scale = UNITS.get(unit)
        if scale is None:
            raise DurationError(f"unknown unit {unit!r} in duration {text!r}")
        total += _term(whole, fraction or "", scale, text)
        if total > _LIMIT:
            raise _out_of_range(text)
        pos = match.end()
    if negative:
        return -total
    if total > _LIMIT - 1:
        raise _out_of_range(text)
    return total


_LIMIT: Final = 2**63  # Go's bound while summing: the magnitude of the most negative int64


def _out_of_range(text: str) -> DurationError:
    return DurationError(f"duration {text!r} is out of range (at most about 292 years)")


def _term(whole: str, fraction: str, unit: int, text: str) -> int:
    """One ``whole.fraction`` times ``unit``, computed as Go's ``time.ParseDuration`` does:
    the whole part exactly, the fraction through a float64 (truncated), its digits past
    2**63 ignored."""
    value = int(whole or "0")
    if value > _LIMIT or value > _LIMIT // unit:
        raise _out_of_range(text)
    value *= unit
    digits, scale = 0, 1.0
    for char in fraction:
        if digits > (_LIMIT - 1) // 10 or digits * 10 + int(char) > _LIMIT:
            break  # Go stops taking digits once they would overflow
        digits = digits * 10 + int(char)
        scale *= 10
    if digits:
        value += int(float(digits) * (float(unit) / scale))
        if value > _LIMIT:
            raise _out_of_range(text)
    return value


def format_duration(nanoseconds: int) -> str:
    """Go's ``Duration.String()``: ``1h2m3.5s``, ``1.5ms``, ``500µs``, ``100ns``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    n = abs(nanoseconds)
    if n < SECOND:
        for unit, scale in (("ns", NANOSECOND), ("\u00b5s", MICROSECOND), ("ms", MILLISECOND)):
            if n < scale * 1000:
                return sign + _decimal(n, scale) + unit
    hours, n = divmod(n, HOUR)
    minutes, n = divmod(n, MINUTE)
    out = _decimal(n, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{out}"
    if minutes:
        return f"{sign}{minutes}m{out}"
    return sign + out


def _decimal(n: int, scale: int) -> str:
    """``n / scale`` in decimal, without trailing zeros (``1.5``, ``3``)."""
    whole, rest = divmod(n, scale)
    if not rest:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{rest:0{digits}d}".rstrip("0")
