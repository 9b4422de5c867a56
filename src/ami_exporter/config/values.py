"""Values shared by flags and the servers file: addresses, durations, secret files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ami_exporter.config.errors import ConfigError

Warn = Callable[[str], Any]


def parse_host_port(value: str, what: str, default_host: str = "") -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port``; the port must be 1-65535."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"{what}: {value!r} is not HOST:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{what}: {value!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what}: port {port_text!r} in {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: port {port} in {value!r} is out of range 1-65535")
    return (host or default_host), port


def positive_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what}: {value!r} is not a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a number of seconds") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ConfigError(f"{what}: {value!r} must be a positive number of seconds")
    return number


def read_secret_file(path: str, what: str, warn: Warn | None = None) -> str:
    """Read a secret from a file (trailing newline stripped); warn when others can read it."""
    try:
        st = os.stat(path)
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path!r}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWOTH) and warn is not None:
        warn(f"secret file {path!r} is readable by other users; chmod 600 it")
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{what}: secret file {path!r} is empty")
    return secret
