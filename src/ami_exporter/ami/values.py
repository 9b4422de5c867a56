"""Parsing of AMI field values that several modules read: numbers and Asterisk local times."""

from __future__ import annotations

import math
from datetime import datetime


def to_float(raw: str | None) -> float | None:
    """A numeric field (``Uptime: 86``), or None when absent or not a number."""
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def to_number(raw: str | None) -> float | None:
    """A measured value (a jitter, a hold time): as :func:`to_float`, but NaN is None too."""
    value = to_float(raw)
    return None if value is None or math.isnan(value) else value


def to_int(raw: str | None) -> int | None:
    """An integer field (``TechCause: 503``), or None when absent or not an integer."""
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def local_timestamp(date: str | None, clock: str | None) -> float | None:
    """CoreStatus's ``YYYY-MM-DD`` + ``HH:MM:SS`` (server local time) as a Unix time.

    AMI gives no zone; this process's local zone is used, which is right when the exporter runs
    beside Asterisk.
    """
    if not date or not clock:
        return None
    try:
        return datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None
