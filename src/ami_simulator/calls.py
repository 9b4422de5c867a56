"""Simulated calls: starting them, running their phases on time, the channels they hold.

A call is one compiled script (:mod:`ami_simulator.templates`) with its own values filled in
(channel names, Uniqueids, CDR times...). Its first phase runs at once and each later one after
its wait (the ring time, or the answered call's hold time), on the event loop's clock. Every
event a phase sends also updates the call's live channels, so ``CoreShowChannels``,
``CoreStatus`` and a restart's hangups always agree with the events already sent. Sending is
the caller's business: :class:`Calls` hands ``(event class, bytes)`` chunks to a broadcast
function. The Poisson traffic generator (:func:`traffic`) lives here too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from ami_exporter.ami.protocol import serialize
from ami_exporter.ami.session import ServerSession
from ami_simulator import profiles
from ami_simulator.clock import local_time
from ami_simulator.scripts import OUTCOMES
from ami_simulator.templates import Script, Step, pairs_text

__all__ = ["Broadcast", "Call", "CallHooks", "Calls", "traffic"]

# Event chunks, each with the class a session's event mask must hold to get it.
Broadcast = Callable[[list[tuple[str, bytes]]], None]

# Channels torn down by a restart end with Cause 0 (capture 06).
_RESTART_CAUSE: Final = "Cause: 0\r\nCause-txt: Unknown\r\n"


class Call:
    """One call in progress: its script, values, the next phase and the channels it holds."""

    __slots__ = (
        "answered_at",
        "delays",
        "handle",
        "hold",
        "live",
        "next_phase",
        "reporter",
        "reports",
        "script",
        "started",
        "state",
        "values",
    )

    def __init__(
        self,
        script: Script,
        values: dict[str, str],
        hold: float,
        delays: dict[str, float] | None = None,
    ) -> None:
        self.script = script
        self.values = values
        self.hold = hold
        # Seconds to wait before each phase, by its wait (ring, hold, pdd, queue).
        self.delays = delays if delays is not None else {"hold": hold}
        self.next_phase = 0
        self.started = time.time()
        self.answered_at = 0.0
        self.handle: asyncio.Handle | None = None
        # half -> (snapshot text, application text) of each live channel
        self.live: dict[int, tuple[str, str]] = {}
        self.reports: tuple[Step, ...] = ()  # the RTCP reports sent every interval, if any
        self.reporter: asyncio.TimerHandle | None = None
        self.state: object = None  # what the CallHooks keep about this call (media, queue)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.stop_reports()

    def stop_reports(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
            self.reporter = None


class CallHooks(Protocol):
    """What a call's phases ask of the trunk model (ami_simulator.trunks): media and queues."""

    rtcp_interval: float

    def report(self, call: Call) -> None:
        """Put the next RTCP report's values into ``call.values``."""

    def queue(self, call: Call, what: str) -> None:
        """The caller joins (``join``) or leaves (``leave``) its queue now."""


class Calls:
    """The calls of one simulated Asterisk, with its channel and Uniqueid counters.

    ``len()`` is the number of calls in progress; ``stats`` counts the calls started by outcome.
    """

    def __init__(
        self,
        scripts: Mapping[str, Script],
        profile: profiles.Profile,
        broadcast: Broadcast,
        ring_time: float,
    ) -> None:
        self.scripts = scripts
        self.profile = profile
        self.broadcast = broadcast
        self.ring_time = ring_time
        self.stats: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.trunk_stats: Counter[str] = Counter()  # PJSIP trunk calls started, by script
        self.hooks: CallHooks | None = None
        self._calls: set[Call] = set()
        self.reset_counters()

    def reset_counters(self) -> None:
        """A restarted Asterisk is a new process: its counters start from 0."""
        self._uid_counter = 0
        self._chan_counter = 0
        self._pjsip_counter = 0  # chan_pjsip numbers its channels on its own
        self.processed = 0  # CoreStatus CoreProcessedCalls: channels created

    def new_uniqueid(self) -> str:
        """A Uniqueid for a channel that is not part of any call script (a queue agent's)."""
        uid = f"{int(time.time())}.{self._uid_counter}"
        self._uid_counter += 1
        return uid

    def calls(self) -> list[Call]:
        """The calls in progress (a copy)."""
        return list(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def live_channels(self) -> int:
        return sum(len(call.live) for call in self._calls)

    # -- running calls ---------------------------------------------------------------------

    def start(self, outcome: str, hold: float, caller_name: str | None = None) -> None:
        """Start one call of ``outcome`` now; its first phase runs on the next loop turn."""
        script = self.scripts[outcome]
        self.stats[outcome] += 1
        now = time.time()
        values = {
            "aid": f"sim-orig-{sum(self.stats.values())}",
            "start": local_time(now),
            "hold": f"{hold:g}",
            "cidname": "AMI Test" if caller_name is None else caller_name,
        }
        if script.uses_channels:
            values.update(self._new_channels(script, int(now)))
        call = Call(script, values, hold, {"hold": hold, "ring": self.ring_time})
        self._calls.add(call)
        call.handle = asyncio.get_running_loop().call_soon(self._run_phase, call)

    def start_trunk_call(
        self, script: Script, values: dict[str, str], delays: dict[str, float], state: object
    ) -> Call:
        """Start one PJSIP trunk call (``values`` has the trunk, number, caller, times...)."""
        self.trunk_stats[script.outcome] += 1
        if script.uses_channels:
            values["c1"] = f"PJSIP/{values['trunk']}-{self._pjsip_counter:08x}"
            self._pjsip_counter += 1
            values["u1"] = self.new_uniqueid()
            self.processed += 1
        values.setdefault("answer", values.get("start", ""))  # answered at once, unless it rings
        call = Call(script, values, delays.get("hold", 0.0), delays)
        call.answered_at = call.started
        call.state = state
        self._calls.add(call)
        call.handle = asyncio.get_running_loop().call_soon(self._run_phase, call)
        return call

    def _new_channels(self, script: Script, epoch: int) -> dict[str, str]:
        """The names and Uniqueids of a Local channel pair, numbered as Asterisk does."""
        name = f"{script.dial}-{self._chan_counter:08x}"
        self._chan_counter += 1
        uid = self._uid_counter
        self._uid_counter += 2
        self.processed += 2
        return {
            "c1": name + ";1",
            "c2": name + ";2",
            "u1": f"{epoch}.{uid}",
            "u2": f"{epoch}.{uid + 1}",
        }

    def _run_phase(self, call: Call) -> None:
        phase = call.script.phases[call.next_phase]
        self._set_times(call, phase.wait)
        if phase.wait == "hold":
            call.stop_reports()  # the hang-up starts: no more media
        if phase.queue and self.hooks is not None:
            self.hooks.queue(call, phase.queue)
        chunks: list[tuple[str, bytes]] = []
        live = call.live
        for step in phase.steps:
            if step.template:
                chunks.append((step.cls, step.template.format_map(call.values).encode()))
            for effect in step.effects:
                if effect.action == "remove":
                    live.pop(effect.half, None)
                elif effect.action == "add" or effect.half in live:
                    live[effect.half] = (effect.snapshot, effect.application)
        self.broadcast(chunks)
        call.next_phase += 1
        if call.next_phase >= len(call.script.phases):
            self._calls.discard(call)
            call.cancel()
            return
        if phase.reports:
            self._start_reports(call, phase.reports)
        wait = call.script.phases[call.next_phase].wait
        delay = call.delays.get(wait, self.ring_time)
        call.handle = asyncio.get_running_loop().call_later(delay, self._run_phase, call)

    def _start_reports(self, call: Call, reports: tuple[Step, ...]) -> None:
        if self.hooks is None:
            return
        call.reports = reports
        loop = asyncio.get_running_loop()
        call.reporter = loop.call_later(self.hooks.rtcp_interval, self._send_reports, call)

    def _send_reports(self, call: Call) -> None:
        """One round of RTCP reports of a call whose media flows, and the next one's timer."""
        if self.hooks is None or not call.live:
            call.reporter = None
            return
        self.hooks.report(call)
        values = call.values
        self.broadcast([(s.cls, s.template.format_map(values).encode()) for s in call.reports])
        loop = asyncio.get_running_loop()
        call.reporter = loop.call_later(self.hooks.rtcp_interval, self._send_reports, call)

    @staticmethod
    def _set_times(call: Call, wait: str) -> None:
        """The CDR values as of now: the phase after the ring is where an answer happens."""
        now = time.time()
        values = call.values
        if wait == "ring":
            call.answered_at = now  # only used by templates of answered calls
            values["answer"] = local_time(now)
        values["end"] = local_time(now)
        values["dur"] = str(int(now - call.started))
        values["bill"] = str(int(now - call.answered_at)) if call.answered_at else "0"

    # -- ending calls ------------------------------------------------------------------------

    def drop(self) -> None:
        """Forget every call without any event."""
        for call in self._calls:
            call.cancel()
        self._calls.clear()

    def hang_up_all(self) -> list[tuple[str, bytes]]:
        """End every call as a restart does; return the events that says so."""
        chunks: list[tuple[str, bytes]] = []
        for call in list(self._calls):
            call.cancel()
            for snapshot, _ in call.live.values():
                chunks += self._restart_hangup(call, snapshot)
            if call.live:
                device = call.script.dial.format_map(call.values)
                if device.startswith("PJSIP/"):  # a trunk's device is the endpoint
                    device = "PJSIP/" + call.values.get("trunk", "")
                state = [("Device", device), ("State", "NOT_INUSE")]
                event = ServerSession.event("DeviceStateChange", ("Privilege", "call,all"), *state)
                chunks.append(("call", event))
        self._calls.clear()
        return chunks

    def _restart_hangup(self, call: Call, snapshot: str) -> list[tuple[str, bytes]]:
        head = pairs_text([("Event", "Hangup"), ("Privilege", "call,all")])
        text = (head + snapshot + _RESTART_CAUSE).format_map(call.values)
        pairs = _pairs_of(text)
        events = profiles.rewrite_event(self.profile, "", "Hangup", pairs)
        return [("call", serialize(event)) for event in events]

    # -- what is up now ----------------------------------------------------------------------

    def channel_rows(self) -> list[tuple[str, str, float]]:
        """(snapshot text, application text, start time) of every live channel."""
        rows: list[tuple[str, str, float]] = []
        for call in self._calls:
            for _half, (snapshot, application) in sorted(call.live.items()):
                rows.append(
                    (
                        snapshot.format_map(call.values),
                        application.format_map(call.values),
                        call.started,
                    )
                )
        return rows

    def active_channels(self) -> list[dict[str, str]]:
        """The live channels, with the fields CoreShowChannels reports for them."""
        result: list[dict[str, str]] = []
        for snapshot, application, started in self.channel_rows():
            row = dict(_pairs_of(snapshot + application))
            row["Duration"] = duration(started)
            row["BridgeId"] = ""
            result.append(row)
        return result


def duration(started: float) -> str:
    """``HH:MM:SS`` since ``started``, as CoreShowChannel reports it."""
    secs = max(0, int(time.time() - started))
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def _pairs_of(text: str) -> list[tuple[str, str]]:
    """Header lines (CRLF) back into pairs; blank lines are skipped."""
    pairs: list[tuple[str, str]] = []
    for line in text.split("\r\n"):
        if line:
            key, _, value = line.partition(": ")
            pairs.append((key, value))
    return pairs


def vicidial_call_id(lead_id: int) -> str:
    """A VICIdial auto-dial call ID as AST_VDauto_dial.pl builds it: ``V`` + ``mddhhmmss``
    (the date's last 9 digits) + the lead id in 10 digits, ``V`` and 19 digits in all."""
    return f"V{time.strftime('%m%d%H%M%S')[1:]}{lead_id % 10**10:010d}"


async def traffic(
    calls: Calls,
    rng: random.Random,
    *,
    rate: float,
    mix: Mapping[str, float],
    hold_time: float,
    vicidial: bool,
) -> None:
    """Start calls for ever: Poisson arrivals at ``rate`` per second, outcomes drawn by ``mix``."""
    loop = asyncio.get_running_loop()
    outcomes = [o for o, w in mix.items() if w > 0]
    weights = [mix[o] for o in outcomes]
    if not outcomes:
        return
    next_at = loop.time()
    while True:
        # Poisson arrivals on an absolute schedule, so sleep overshoot does not lower the rate:
        # late calls are started in a burst, as a real PBX would see them.
        next_at += rng.expovariate(rate)
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome = rng.choices(outcomes, weights)[0]
        hold = hold_time * rng.uniform(0.5, 1.5)
        caller_name = None
        if vicidial:
            caller_name = vicidial_call_id(sum(calls.stats.values()))
        calls.start(outcome, hold, caller_name)
