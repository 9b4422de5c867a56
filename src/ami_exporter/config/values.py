"""Values shared by flags and the servers file: addresses, durations, secret files."""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import Any

from ami_exporter.config.durations import SECOND, DurationError, parse_duration
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.files import SECRET_FILE_LIMIT, read_regular_file

Warn = Callable[[str], Any]

DURATION_HINT = "units ns, us, ms, s, m, h as in 10s, 1m30s, 500ms, or a number of seconds"


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
    """A positive duration in seconds: a Go duration (``10s``, ``1m30s``, ``500ms``) or a
    bare number of seconds (``10``, ``2.5``, YAML's ``10``); ``what`` starts the error."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what}: {value!r} is not a duration ({DURATION_HINT})")
    if isinstance(value, str):
        try:
            seconds = parse_duration(value.strip()) / SECOND
        except DurationError as exc:
            raise ConfigError(f"{what}: {exc} ({DURATION_HINT})") from None
    else:
        seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):  # NaN too
        raise ConfigError(f"{what}: {value!r} must be a positive duration ({DURATION_HINT})")
    return seconds


def read_secret_file(path: str, what: str, warn: Warn | None = None) -> str:
    """Read a secret from a file (trailing newline stripped); warn when others can read it.

    Only a regular file of at most 64 KiB of UTF-8 text is read: a FIFO, a device or
    ``/dev/zero`` is refused at once. A path without a ``/`` is not echoed in errors: it may
    be the secret itself, written under ``secret_file`` by mistake.
    """
    shown = repr(path) if "/" in path else "(not shown: a value without '/' may be a secret)"
    data, mode = read_regular_file(path, what, "secret file", SECRET_FILE_LIMIT, shown)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what}: secret file {shown} is not UTF-8 text (byte {exc.start + 1})"
        ) from None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWOTH) and warn is not None:
        warn(f"secret file {shown} is readable by other users; chmod 600 it")
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{what}: secret file {shown} is empty")
    return check_secret(secret, f"{what}: secret file {shown}")


def check_secret(secret: str, what: str) -> str:
    """``secret`` if AMI can carry it: an action's header value ends at a line break."""
    return _one_line(secret, what, "the secret")


def check_username(username: str, what: str) -> str:
    return _one_line(username, what, "the username")


def _one_line(value: str, what: str, name: str) -> str:
    # A CR or LF would end the header and start another one: a second Action in the Login.
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{what}: {name} contains a line break or a NUL, which AMI cannot carry")
    return value
