"""Reading the files a configuration names: regular files only, bounded in size.

``--config.file``, ``--web.config.file``, ``--ami.secret-file`` and ``secret_file:`` are read
once at start (and again on a reload), so a file that never ends (``/dev/zero``), never opens
(a FIFO without a writer) or is simply huge must be refused at once with a one-line
:class:`~ami_exporter.config.errors.ConfigError`, not read until memory runs out or forever.
"""

from __future__ import annotations

import os
import stat
from typing import Final

from ami_exporter.config.errors import ConfigError

__all__ = [
    "CERTIFICATE_FILE_LIMIT",
    "CONFIG_FILE_LIMIT",
    "SECRET_FILE_LIMIT",
    "check_regular_file",
    "read_regular_file",
]

# The YAML files. The largest realistic servers file (a thousand Asterisks, about 160 bytes
# each in block style) is under 200 KB and a web config a few KB; 1 MiB leaves five times
# that. It also bounds the time YAML parsing takes at start or on a reload: PyYAML composes
# about 2 MB/s of block style and 0.6 MB/s of flow style (with libyaml, on a 2-core box).
CONFIG_FILE_LIMIT: Final = 1024 * 1024
# An AMI secret is one manager.conf value, a few dozen bytes; 64 KiB is a generous bound.
SECRET_FILE_LIMIT: Final = 64 * 1024
# Certificates, keys and CA bundles, which OpenSSL reads itself: the system's whole CA bundle
# is about 200 KB.
CERTIFICATE_FILE_LIMIT: Final = 4 * 1024 * 1024

_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | os.O_NONBLOCK  # opening a FIFO must not wait for a writer
    | getattr(os, "O_NOCTTY", 0)  # nor a terminal become our controlling one
    | getattr(os, "O_CLOEXEC", 0)
)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(limit: int) -> str:
    mib, kib = divmod(limit, 1024 * 1024)
    return f"{mib} MiB" if not kib else f"{limit // 1024} KiB"


def check_regular_file(path: str, what: str, noun: str, limit: int) -> None:
    """Refuse now what another library would read later: not a regular file, or too big.

    For the files OpenSSL loads (certificates, keys, CA bundles): it would wait forever on a
    FIFO and read ``/dev/zero`` until memory runs out. A missing or unreadable file is left
    to the loader, whose error names the problem.
    """
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {noun} {path!r} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise ConfigError(f"{what}: {noun} {path!r} is larger than {_size(limit)}, the limit")


def read_regular_file(
    path: str, what: str, noun: str, limit: int, shown: str | None = None, why: str = ""
) -> tuple[bytes, int]:
    """The bytes of the regular file ``path`` (at most ``limit``) and its mode bits.

    ``what`` starts every error (a flag or ``file:line: key``), ``noun`` names the file in it
    ("secret file", "file"), ``shown`` is how the path is written there (default: quoted) and
    ``why`` explains the limit.
    The checks are made on the opened descriptor, so the file cannot be swapped between the
    check and the read.
    """
    shown = repr(path) if shown is None else shown
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {noun} {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # before reading: a FIFO or /dev/zero never ends
            raise ConfigError(f"{what}: {noun} {shown} is {_kind(st.st_mode)}, not a regular file")
        too_big = f"{what}: {noun} {shown} is larger than {_size(limit)}, the limit"
        too_big += f" ({why})" if why else ""
        if st.st_size > limit:
            raise ConfigError(too_big)
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)  # +1: a file that grew since fstat is caught too
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {noun} {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(too_big)
    return data, st.st_mode
