"""How the simulated Asterisk writes times: local CDR and CoreStatus times, security EventTV."""

from __future__ import annotations

import time

__all__ = ["event_tv", "local_time"]


def event_tv(epoch: float) -> str:
    """Security events' ``EventTV`` format: ``2026-11-27T09:26:28.887+0000``."""
    ms = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{ms:03d}+0000"


def local_time(epoch: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Local time without a zone, as Asterisk writes CDR times and CoreStatus dates."""
    return time.strftime(fmt, time.localtime(epoch))
