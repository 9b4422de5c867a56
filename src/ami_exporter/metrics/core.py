"""Asterisk's identity and life cycle: version info, start and reload times, restarts.

While a session is down the start and reload times are hidden (``live=True``): they describe
a running Asterisk, which may be gone (``time() - asterisk_core_startup_timestamp_seconds``
would show an uptime still growing for a crashed Asterisk), and a restart replaces them at
the next login. ``asterisk_info`` stays: the identity last seen is what an operator wants
beside a down server, and a join on it (``group_left(version)``) keeps working for the
counters, which stay.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import Samples, TableCollector, clean, counter, gauge, one
from ami_exporter.state.server import ServerState

S: Final = ("server",)


def _info(st: ServerState) -> Samples:
    core = st.core
    if not (core.version or core.ami_version):
        return ()
    return (((clean(core.version), clean(core.ami_version), clean(core.system_name)), 1.0),)


TABLE: Final = (
    gauge(
        "asterisk_info",
        "Asterisk identity from the AMI banner and CoreSettings; always 1.",
        ("server", "version", "ami_version", "system_name"),
        _info,
    ),
    gauge(
        "asterisk_core_startup_timestamp_seconds",
        "Unix time Asterisk started (not exported while the session is down).",
        S,
        lambda st: one(st.core.startup_timestamp),
        live=True,
    ),
    gauge(
        "asterisk_core_reload_timestamp_seconds",
        "Unix time of Asterisk's last configuration reload (not exported while the session "
        "is down).",
        S,
        lambda st: one(st.core.reload_timestamp),
        live=True,
    ),
    counter(
        "asterisk_restarts",
        "Asterisk restarts detected: a Shutdown event or a new boot (FullyBooted Uptime or "
        "CoreStatus start time moved); a Shutdown and the boot after it count once.",
        S,
        lambda st: one(st.core.restarts_detected),
    ),
)


class CoreCollector(TableCollector):
    TABLE = TABLE
