"""PJSIP carriers of a simulated Asterisk 22: trunk calls with the captured outcome mix,
post-dial delay, RTCP reports, inbound and queue calls, qualify and registration flaps.

Every event is one of the real Asterisk 22.10.1 recordings of ``tests/fixtures/pjsip`` (package
data written by ``tools/generate_pjsip_scripts.py``: one real call per carrier behaviour, and
the recorded qualify, device state and registration events); this module only decides what
happens when (which carrier, which behaviour, how long) and fills in the values. Per carrier a
seeded quality profile sets its post-dial delay and its RTP loss, jitter and round trip; one
carrier in four (``carrier2``, ``carrier6``...) is degraded. MES is computed as Asterisk's
``res_rtp_asterisk.c`` does (88.1 for a clean G.711 stream, as in the captures).
The answers to the PJSIP and queue actions are :mod:`ami_simulator.pjsip_actions`'.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ami_exporter.ami.protocol import Message, serialize
from ami_simulator import templates
from ami_simulator.calls import Broadcast, Call, Calls, vicidial_call_id
from ami_simulator.carriers import (
    AGENTS,
    Carrier,
    QueueState,
    Registration,
    fill,
    recorded_events,
    trunk_names,
)
from ami_simulator.clock import local_time
from ami_simulator.pjsip_actions import PJSIPActions
from ami_simulator.profiles import Profile

__all__ = ["DEFAULT_TRUNK_MIX", "TRUNK_SCRIPTS", "CallState", "TrunkModel", "TrunkSettings"]

# The carriers' behaviours in the proportions of the trunk-mix capture's dialled prefixes
# (2:28, 3:14, 486:12, 503:10, 404:8, 480:7, 603:6, 180:10), plus inbound and queue calls.
DEFAULT_TRUNK_MIX: Final[dict[str, float]] = {
    "answered": 28.0,
    "answered_local_bye": 14.0,
    "busy": 12.0,
    "congestion": 10.0,
    "not_found": 8.0,
    "unavailable": 7.0,
    "declined": 6.0,
    "ring_out": 10.0,
    "inbound": 10.0,
    "queue_answered": 4.0,
    "queue_abandoned": 2.0,
}
# What a mix may name; "trunk_down" is what any outbound call to an unreachable carrier gets.
TRUNK_SCRIPTS: Final = tuple(DEFAULT_TRUNK_MIX)
# The dialled number's prefix of each behaviour (the captures' carrier chooses by it).
_PREFIX: Final = {
    "answered": "2",
    "answered_local_bye": "3",
    "busy": "486",
    "congestion": "503",
    "not_found": "404",
    "unavailable": "480",
    "declined": "603",
    "ring_out": "180",
    "inbound": "7",
    "queue_answered": "3",
    "queue_abandoned": "2",
}
_RTP_CLOCK: Final = 8000  # G.711, the captures' codec: IAJitter is in RTP clock units
_PACKETS_PER_SECOND: Final = 50  # 20 ms packets of 160 octets
_OCTETS_PER_PACKET: Final = 160
_FIRST_PORT: Final = 5070  # carrier's contact port; carrier2 5072... as in the captures


@dataclass(frozen=True, slots=True)
class TrunkSettings:
    """The carrier part of a :class:`~ami_simulator.server.SimulatorConfig`."""

    trunks: int
    mix: Mapping[str, float]
    hold_time: float
    ring_time: float
    post_dial_delay: float
    ring_timeout: float
    queue_wait: float
    rtcp_interval: float
    user_write: frozenset[str]


@dataclass(slots=True)
class CallState:
    """What the model keeps about one trunk call: its carrier, media so far, queue part."""

    carrier: Carrier
    reports: int = 0
    lost_rx: int = 0
    lost_tx: int = 0
    talking: bool = False  # a queue caller connected to an agent


def _carrier(index: int, name: str, rng: random.Random, post_dial_delay: float) -> Carrier:
    """A carrier with a seeded quality profile; every fourth one (from the second) degraded."""
    degraded = index % 4 == 1
    return Carrier(
        name=name,
        port=_FIRST_PORT + 2 * index,
        pdd=post_dial_delay * (rng.uniform(1.0, 2.5) if degraded else rng.uniform(0.5, 1.5)),
        loss=rng.uniform(0.03, 0.08) if degraded else rng.uniform(0.0, 0.005),
        jitter=rng.uniform(0.03, 0.06) if degraded else rng.uniform(0.001, 0.01),
        rtt=rng.uniform(0.15, 0.3) if degraded else rng.uniform(0.02, 0.08),
        rtt_usec=rng.randrange(800, 40_000),
    )


def mes(lost: float, jitter: float, rtt: float) -> float:
    """The media experience score as res_rtp_asterisk.c's calc_media_experience_score computes
    it: an R factor from the effective latency (round trip in ms, plus jitter times its
    deviation, both in seconds as Asterisk keeps them, so jitter barely counts) less twice the
    packets lost per report, as a pseudo-MOS rescaled to 0-100 (88.1 for a clean stream, as in
    the captures). ``lost`` packets per report; ``jitter`` (its deviation taken as a third of
    it) and ``rtt`` in seconds."""
    latency = rtt * 1000 + (jitter * 2) * (jitter / 3 / 3) + 10
    r = 93.2 - (latency / 40 if latency < 160 else (latency - 120) / 10) - lost * 2.0
    if r < 0:
        pseudo_mos = 1.0
    elif r > 100:
        pseudo_mos = 4.5
    else:
        pseudo_mos = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 0.000007
    return pseudo_mos * 20


class TrunkModel:
    """The carriers, registration and queue of one simulated server, and their calls."""

    def __init__(
        self,
        settings: TrunkSettings,
        profile: Profile,
        calls: Calls,
        broadcast: Broadcast,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.scripts = templates.compiled_pjsip(profile)
        self.calls = calls
        self.broadcast = broadcast
        self.rng = rng
        self.rtcp_interval = settings.rtcp_interval
        names = trunk_names(settings.trunks)
        self.carriers = [
            _carrier(i, name, rng, settings.post_dial_delay) for i, name in enumerate(names)
        ]
        self.by_name = {c.name: c for c in self.carriers}
        self.registration = Registration()
        self.queue_state = QueueState()
        self.actions = PJSIPActions(
            self.carriers,
            self.registration,
            self.queue_state,
            self.channels_of,
            self.talking,
            settings.user_write,
        )
        self._seq = 0
        self._agent_counter = 0
        calls.hooks = self

    def answer(self, name: str, request: Message) -> bytes | None:
        return self.actions.answer(name, request)

    def restart(self) -> None:
        """A restarted Asterisk has no queue callers; carriers qualify again."""
        self.queue_state.callers.clear()
        self._agent_counter = 0

    # -- live state ------------------------------------------------------------------------

    def channels_of(self, trunk: str) -> int:
        """Live channels of the endpoint ``trunk``."""
        return sum(len(c.live) for c in self.calls.calls() if c.values.get("trunk") == trunk)

    def talking(self) -> int:
        return sum(
            1
            for c in self.calls.calls()
            if isinstance(c.state, CallState) and c.state.talking and c.live
        )

    # -- calls -----------------------------------------------------------------------------

    def start_call(
        self, name: str, trunk: str | None = None, caller_name: str | None = None
    ) -> None:
        """Start one call of behaviour ``name`` on ``trunk`` (default: a random carrier)."""
        if name not in TRUNK_SCRIPTS:
            raise ValueError(f"unknown trunk call {name!r}; expected one of {TRUNK_SCRIPTS}")
        carrier = self.by_name[trunk] if trunk is not None else self.rng.choice(self.carriers)
        script = name
        if name != "inbound" and not carrier.reachable:
            script = "trunk_down"  # Asterisk refuses to dial a contact that fails its qualify
        self._seq += 1
        values = self._values(name, carrier, caller_name)
        delays = self._delays(name, carrier)
        values["qhold"], values["talk"] = str(int(delays["queue"])), str(int(delays["hold"]))
        self.calls.start_trunk_call(self.scripts[script], values, delays, CallState(carrier))

    def _values(self, name: str, carrier: Carrier, caller_name: str | None) -> dict[str, str]:
        seq, rng = self._seq, self.rng
        values = {
            "aid": f"sim-trunk-{seq}",
            "num": f"{_PREFIX[name]}{seq % 1_000_000:06d}",
            "trunk": carrier.name,
            "cidname": "lab" if caller_name is None else caller_name,
            "start": local_time(time.time()),
            "rtp_far": f"127.0.0.1:{16000 + 2 * (seq % 8000)}",
            "rtp_near": f"127.0.0.1:{10000 + 2 * (seq % 2500)}",
            "ssrc_us": f"0x{rng.getrandbits(32):08x}",
            "ssrc_them": f"0x{rng.getrandbits(32):08x}",
            "qpos": "1",
            "qcount": "1",
            "qleft": "0",
        }
        if name.startswith("queue_"):
            index = self._agent_counter % len(AGENTS)
            member, interface = AGENTS[index]
            values["agent_c"] = f"{interface}-{self._agent_counter:08x};1"
            values["agent_u"] = self.calls.new_uniqueid()
            values["agent_if"], values["agent_name"] = interface, member
            self._agent_counter += 1
        return values

    def _delays(self, name: str, carrier: Carrier) -> dict[str, float]:
        s, rng = self.settings, self.rng
        ring = s.ring_timeout if name == "ring_out" else s.ring_time * rng.uniform(0.5, 1.5)
        return {
            # As the sip18 carriers: uniform 0.3-4 s per call (times the scale, the carrier's).
            "pdd": carrier.pdd * rng.uniform(0.3, 4.0),
            "ring": ring,
            "hold": s.hold_time * rng.uniform(0.5, 1.5),
            "queue": s.queue_wait * rng.uniform(0.2, 1.8),
        }

    # -- what the phases ask (CallHooks) ---------------------------------------------------

    def report(self, call: Call) -> None:
        """The next RTCP reports' values: counters grow with time, quality per carrier."""
        state = call.state
        if not isinstance(state, CallState):
            return
        rng, c, interval = self.rng, state.carrier, self.rtcp_interval
        state.reports += 1
        packets = int(state.reports * interval * _PACKETS_PER_SECOND)
        per_report = int(interval * _PACKETS_PER_SECOND)
        loss_rx = min(1.0, max(0.0, rng.gauss(c.loss, c.loss / 2)))
        loss_tx = min(1.0, max(0.0, rng.gauss(c.loss, c.loss / 2)))
        jit_rx = max(0.0, rng.gauss(c.jitter, c.jitter / 3))
        jit_tx = max(0.0, rng.gauss(c.jitter, c.jitter / 3))
        rtt = max(0.0001, rng.gauss(c.rtt, c.rtt / 5))
        lost_rx, lost_tx = int(loss_rx * per_report), int(loss_tx * per_report)
        state.lost_rx += lost_rx
        state.lost_tx += lost_tx
        now = time.time()
        first = state.reports == 1
        lsr = "0" if first else str((int(now - interval) & 0xFFFF) << 16)
        call.values.update(
            ntp=f"{now:.6f}",
            ntp_them=f"{now + rtt / 2:.6f}",
            sent_rtp=str(packets * _OCTETS_PER_PACKET),
            sent_pkts=str(packets),
            sent_octets=str(packets * _OCTETS_PER_PACKET),
            mes_rx=f"{mes(lost_rx, jit_rx, rtt):.1f}",
            mes_tx=f"{mes(lost_tx, jit_tx, rtt):.1f}",
            fl_rx=str(int(loss_rx * 256)),
            fl_tx=str(int(loss_tx * 256)),
            cl_rx=str(state.lost_rx),
            cl_tx=str(state.lost_tx),
            seq_rx=str(packets),
            seq_tx=str(packets),
            jit_rx=str(int(jit_rx * _RTP_CLOCK)),
            jit_tx=str(int(jit_tx * _RTP_CLOCK)),
            lsr_rx=lsr,
            lsr_tx=lsr,
            dlsr_rx="0.0000" if first else f"{interval:.4f}",
            dlsr_tx="0.0000",
            rtt=f"{rtt:.4f}",
        )

    def queue(self, call: Call, what: str) -> None:
        q, values = self.queue_state, call.values
        if what == "join":
            q.callers.append((call, time.time()))
            values["qpos"] = values["qcount"] = str(len(q.callers))
            return
        q.callers = [(c, joined) for c, joined in q.callers if c is not call]
        values["qleft"] = str(len(q.callers))
        if call.script.outcome == "queue_abandoned":
            q.abandoned += 1
        else:
            q.completed += 1
            q.holdtime, q.talktime = int(values["qhold"]), int(values["talk"])
            if isinstance(call.state, CallState):
                call.state.talking = True

    # -- qualify and registration ----------------------------------------------------------

    def set_reachable(self, trunk: str, reachable: bool, rtt_usec: int | None = None) -> None:
        """A carrier's qualify fails or answers again: the events trunk-down recorded."""
        carrier = self.by_name[trunk]
        carrier.reachable = reachable
        if rtt_usec is not None:
            carrier.rtt_usec = rtt_usec
        peer = "Reachable" if reachable else "Unreachable"
        values = {
            "Peer": f"PJSIP/{trunk}",
            "URI": carrier.uri,
            "AOR": trunk,
            "EndpointName": trunk,
            "RoundtripUsec": str(carrier.rtt_usec if reachable else 0),
            "Device": f"PJSIP/{trunk}",
        }
        device = "NOT_INUSE" if reachable else "UNAVAILABLE"
        names = (f"PeerStatus:{peer}", f"ContactStatus:{peer}", f"DeviceStateChange:{device}")
        self._send(names, values)

    def set_registered(self, registered: bool) -> None:
        """The outbound registration fails (``Rejected``) or succeeds again (``Registered``)."""
        reg = self.registration
        reg.registered = registered
        status = "Registered" if registered else "Rejected"
        self._send((f"Registry:{status}",), {"Username": reg.client_uri, "Domain": reg.server_uri})

    def _send(self, names: tuple[str, ...], values: dict[str, str]) -> None:
        recorded = recorded_events()
        chunks: list[tuple[str, bytes]] = []
        for name in names:
            pairs = fill(recorded[name], None, values)
            cls = dict(pairs).get("Privilege", "system").split(",")[0]
            chunks.append((cls, serialize(pairs)))
        self.broadcast(chunks)

    # -- running on their own --------------------------------------------------------------

    async def traffic(self, rate: float, vicidial: bool) -> None:
        """Start trunk calls for ever: Poisson arrivals at ``rate``/s, behaviours by the mix."""
        mix = self.settings.mix
        names = [n for n, w in mix.items() if w > 0]
        weights = [mix[n] for n in names]
        if not names or rate <= 0:
            return
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.rng.expovariate(rate)  # an absolute schedule, as calls.traffic
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            name = self.rng.choices(names, weights)[0]
            caller = None
            if vicidial:
                caller = vicidial_call_id(self._seq)
            self.start_call(name, caller_name=caller)

    async def flaps(self, interval: float) -> None:
        """Now and then a carrier stops answering its qualify, or the registration fails, for a
        while (mean ``interval`` seconds between flaps, each lasting about half that)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / interval))
            back = interval * self.rng.uniform(0.25, 0.75)
            if self.rng.random() < 0.7:
                carrier = self.rng.choice(self.carriers)
                if carrier.reachable:
                    self.set_reachable(carrier.name, False)
                    loop.call_later(back, self.set_reachable, carrier.name, True)
            elif self.registration.registered:
                self.set_registered(False)
                loop.call_later(back, self.set_registered, True)
