"""The AMI clients that run, one per configured server, and the list of their states.

:attr:`Fleet.states` is the one list the registry, the web server and the status page history
read at each use; :meth:`Fleet.apply` (a reload) replaces its items in place, so they all see
the new set of servers at once, with no copy to keep in step. Servers are told apart by name,
the ``server`` label:

* the same name and an equal :class:`~ami_exporter.config.model.ServerConfig`: *unchanged*,
  the client, its AMI session and its :class:`~ami_exporter.state.server.ServerState` (so its
  counters) are kept as they are;
* a name no longer configured: *removed*, its client logs off and its series disappear;
* a new name: *added*, it starts with a fresh state;
* the same name with any field different (address, user, secret, TLS, options): *restarted*,
  the old client logs off first (a site may refuse a second login of the same user), then a
  new one logs in with a fresh state. Its counters start again from zero, which ``rate()``
  and ``increase()`` take as a counter reset, exactly as at an exporter restart: the address
  may now be another Asterisk, whose channels, start time and totals are not the old one's.
  A renamed server is a removal and an addition: its label changed, so its series did too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from ami_exporter.client.connection import AMIClient
from ami_exporter.config.model import ServerConfig
from ami_exporter.state.server import ServerState

__all__ = ["Changes", "Fleet", "diff_servers"]


@dataclass(frozen=True, slots=True)
class Changes:
    """Server names by what a new configuration does to them, in configuration order."""

    unchanged: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()

    def __str__(self) -> str:
        """``added 1 (pbx3), removed 1 (pbx2), restarted 0, unchanged 1``: for the log."""
        named = (("added", self.added), ("removed", self.removed), ("restarted", self.restarted))
        parts = [
            f"{what} {len(names)}" + (f" ({', '.join(names)})" if names else "")
            for what, names in named
        ]
        return ", ".join([*parts, f"unchanged {len(self.unchanged)}"])


def diff_servers(old: Sequence[ServerConfig], new: Sequence[ServerConfig]) -> Changes:
    """What going from ``old`` to ``new`` does to each server (see the module's text)."""
    before = {s.name: s for s in old}
    after = {s.name for s in new}
    return Changes(
        unchanged=tuple(s.name for s in new if before.get(s.name) == s),
        added=tuple(s.name for s in new if s.name not in before),
        removed=tuple(s.name for s in old if s.name not in after),
        restarted=tuple(s.name for s in new if s.name in before and before[s.name] != s),
    )


@dataclass(slots=True)
class _Running:
    client: AMIClient
    task: asyncio.Task[None] | None = None  # None until started

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.run(), name=f"ami:{self.client.config.name}")


class Fleet:
    """The running AMI clients by server name, in configuration order."""

    def __init__(self) -> None:
        self.states: list[ServerState] = []  # shared with the readers: replaced in place only
        self._running: dict[str, _Running] = {}

    @property
    def configs(self) -> tuple[ServerConfig, ...]:
        return tuple(r.client.config for r in self._running.values())

    def start(self, servers: Sequence[ServerConfig]) -> None:
        """Start a client for each of ``servers`` (at start: nothing runs yet)."""
        for server in servers:
            running = _Running(_new_client(server))
            running.start()
            self._running[server.name] = running
        self._publish()

    async def apply(self, servers: Sequence[ServerConfig], budget: float) -> Changes:
        """Go over to ``servers``: the removed and restarted clients log off (within
        ``budget`` seconds), then the added and restarted ones start."""
        changes = diff_servers(self.configs, servers)
        # Every new client is built before anything changes: if one cannot be, nothing did.
        fresh = {
            s.name: _Running(_new_client(s)) for s in servers if s.name not in changes.unchanged
        }
        leaving = [self._running[name] for name in (*changes.removed, *changes.restarted)]
        kept = self._running
        self._running = {s.name: fresh.get(s.name) or kept[s.name] for s in servers}
        # Published first: the removed servers' series go at once, the new ones show as down
        # until they log in.
        self._publish()
        await _stop(leaving, budget)
        for running in fresh.values():
            running.start()
        return changes

    async def stop(self, budget: float) -> None:
        """Log every client off (within ``budget`` seconds) and end their tasks."""
        await _stop(list(self._running.values()), budget)

    def _publish(self) -> None:
        self.states[:] = [r.client.state for r in self._running.values()]


def _new_client(server: ServerConfig) -> AMIClient:
    return AMIClient(server, ServerState(server.name))  # it configures the state


async def _stop(running: Sequence[_Running], budget: float) -> None:
    """Log off concurrently, bounded by ``budget``; then end the tasks whatever happened."""
    if not running:
        return
    stops = [asyncio.create_task(r.client.stop()) for r in running]
    _, late = await asyncio.wait(stops, timeout=budget)
    tasks = [r.task for r in running if r.task is not None]
    for task in (*late, *tasks):
        task.cancel()
    await asyncio.gather(*late, *tasks, return_exceptions=True)
