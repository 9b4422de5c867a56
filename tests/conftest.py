"""Shared test helpers."""

from __future__ import annotations

import gzip
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def read_capture(name: str) -> bytes:
    """Bytes of a capture in ``tests/fixtures``; ``*.gz`` files are gunzipped transparently."""
    data = (FIXTURES / name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data
