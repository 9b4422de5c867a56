"""Asterisk's identity and life cycle: version info, start and reload times, restarts."""

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
        "Unix time Asterisk started.",
        S,
        lambda st: one(st.core.startup_timestamp),
    ),
    gauge(
        "asterisk_core_reload_timestamp_seconds",
        "Unix time of Asterisk's last configuration reload.",
        S,
        lambda st: one(st.core.reload_timestamp),
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
