"""Asterisk's identity and life cycle: version, start and reload times, restarts.

From the banner, ``CoreSettings`` and ``CoreStatus`` (action results) and the ``FullyBooted``,
``Shutdown`` and ``Reload`` events. A new boot is seen from a start time that moved: the
methods that can see one return True when it is a restart not counted yet, and
:class:`~ami_exporter.state.server.ServerState` then forgets the live channels (Uniqueids
restart at every Asterisk start) as lost. A restart already counted (its Shutdown came first,
or FullyBooted found it before CoreStatus did) returns False: the channels were forgotten
then, and the ones tracked since are new.

Three sources see restarts, each counting distinct events and none counting one twice:
``Shutdown`` events, boots found by FullyBooted's ``Uptime`` (16+) and boots found by
CoreStatus's start time. On one Asterisk they tell of the same restarts (a clean restart
shows all three), so the count of restarts is the largest of the three, not their sum: a
Shutdown and the boot that follows it are one restart, a crash (no Shutdown) still counts,
and a Shutdown is counted even where neither start time is available.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.values import local_timestamp, to_float
from ami_exporter.state.clock import Clock
from ami_exporter.state.labels import bounded

# A FullyBooted/CoreStatus start time that moves by more than this means Asterisk restarted.
RESTART_TOLERANCE_SECONDS: Final = 10.0
BANNER_PREFIX: Final = "Asterisk Call Manager/"


class CoreState:
    """What one Asterisk says about itself, and the restarts seen."""

    def __init__(self, clock: Clock) -> None:
        self._time = clock.time
        self.version = ""
        self.ami_version = ""
        self.system_name = ""
        self.startup_timestamp: float | None = None
        self.reload_timestamp: float | None = None
        self.shutdown_seen = False  # a Shutdown event in the current session
        self._shutdown_pending = False  # a Shutdown seen, and no boot found after it yet
        self._shutdowns = 0
        self._boots_by_uptime = 0  # boots after the first seen, by FullyBooted Uptime
        self._boots_by_corestatus = 0  # the same, by CoreStatus start time
        self._uptime_known = False  # startup_timestamp came from FullyBooted's Uptime
        self._corestatus_startup: str | None = None

    # version, ami_version and system_name are `asterisk_info` labels: bounded when stored.

    def apply_banner(self, banner: str) -> None:
        if banner.startswith(BANNER_PREFIX):
            self.ami_version = bounded(banner[len(BANNER_PREFIX) :].strip())

    def apply_core_settings(self, msg: Message) -> None:
        self.version = bounded(msg.get("AsteriskVersion") or "") or self.version
        self.ami_version = bounded(msg.get("AMIversion") or "") or self.ami_version
        self.system_name = bounded(msg.get("SystemName") or "")

    def apply_core_status(self, msg: Message) -> bool:
        """CoreStatus gives start and reload times in the server's local time, with no zone;
        True when its start time changed (a restart) and no other source counted it yet.

        The times are read in this process's local zone, which is right when the exporter runs
        beside Asterisk, so they are only used when FullyBooted's zone-free ``Uptime``
        (Asterisk 16+) is not available.
        """
        date, clock = msg.get("CoreStartupDate"), msg.get("CoreStartupTime")
        raw = f"{date} {clock}" if date and clock else None
        previous, self._corestatus_startup = self._corestatus_startup, raw
        counted = self.restarts_detected
        booted = raw is not None and previous is not None and raw != previous
        if booted:
            self._boots_by_corestatus += 1
        restarted = self._uncounted_boot(booted, counted)
        if not self._uptime_known:
            startup = local_timestamp(date, clock)
            if startup is not None:
                self.startup_timestamp = startup
            reload_ts = local_timestamp(msg.get("CoreReloadDate"), msg.get("CoreReloadTime"))
            if reload_ts is not None:
                self.reload_timestamp = reload_ts
        return restarted

    def on_fully_booted(self, msg: Message) -> bool:
        """``FullyBooted`` (``Uptime``, ``LastReload`` in 16+); True when it is a new boot that
        no other source counted yet."""
        now = self._time()
        counted = self.restarts_detected
        uptime = to_float(msg.get("Uptime"))
        booted = uptime is not None and self._set_startup_from_uptime(now - uptime)
        restarted = self._uncounted_boot(booted, counted)
        last_reload = to_float(msg.get("LastReload"))
        if last_reload is not None:
            self.reload_timestamp = now - last_reload
        return restarted

    def _set_startup_from_uptime(self, startup: float) -> bool:
        previous = self.startup_timestamp if self._uptime_known else None
        self._uptime_known = True
        if previous is not None and abs(startup - previous) <= RESTART_TOLERANCE_SECONDS:
            return False  # the same boot, seen again (each login repeats FullyBooted)
        self.startup_timestamp = startup
        if previous is None:
            return False
        self._boots_by_uptime += 1
        return True

    def _uncounted_boot(self, booted: bool, counted: int) -> bool:
        """A boot found by one source is a restart to act on unless a Shutdown announced it
        or another source already counted it (``counted``: the count before this source)."""
        if not booted:
            return False
        announced, self._shutdown_pending = self._shutdown_pending, False
        return not announced and self.restarts_detected > counted

    @property
    def restarts_detected(self) -> int:
        """Restarts seen: a Shutdown or a new boot, a Shutdown and its boot counted once."""
        return max(self._shutdowns, self._boots_by_uptime, self._boots_by_corestatus)

    def on_shutdown(self) -> None:
        self.shutdown_seen = True
        self._shutdown_pending = True  # the boot after it is the same restart
        self._shutdowns += 1

    def on_reload(self) -> None:
        self.reload_timestamp = self._time()

    def session_started(self) -> None:
        """Logged in again: a Shutdown seen belongs to the session before."""
        self.shutdown_seen = False
