"""A simulated Asterisk Manager Interface (AMI) server, and the ``ami-simulator`` command.

It speaks the AMI exactly as the Asterisk 22.10.1 of the repository's captures does (or, by
version profile, as 11, 13, 16, 18 or 20 would): the banner, login (with the 1 s delay and
socket close of a failed login), the synthesised ``FullyBooted`` and ``SuccessfulAuth`` events,
``Ping``, ``CoreStatus``, ``CoreSettings``, ``CoreShowChannels``, ``Events``, ``Logoff`` and the
error responses. A traffic generator places calls (an async ``Originate`` of
``Local/<ext>@test`` into ``Context: sink``) whose events are replayed from scripts taken from
the real captures, with the per-call values (channel names, Uniqueids, CDR times) substituted,
so header names, header order, ``Privilege`` values and per-channel event order are those of
real Asterisk, including its quirks (``Cdr`` before ``Newchannel``, the ``;1`` half's
``Cause: 0`` on busy, ``OriginateResponse`` reasons, ``Uniqueid`` counters).

With ``trunks`` > 0 it is instead the Asterisk 22 of ``tests/fixtures/pjsip``: calls over PJSIP
carriers ``carrier``, ``carrier2``... with the captured outcome mix, post-dial delay, RTCP
reports, inbound and queue calls, qualify and registration flaps, and the PJSIP/queue list
actions and ``ListCommands`` answered as recorded, per the user's write classes
(:mod:`~ami_simulator.trunks`).

It is used by the exporter's demo mode and by the tests, so it needs only the standard library
and the sans-IO :mod:`ami_exporter.ami` protocol and session, and reads its call scripts from
package data, never the captures. The layers, bottom up:

* :mod:`~ami_simulator.scripts` the call scripts' data format and loading;
* :mod:`~ami_simulator.profiles` what each Asterisk version sends differently;
* :mod:`~ami_simulator.templates` scripts compiled into a version's event templates;
* :mod:`~ami_simulator.calls` calls in progress, their timed phases and live channels;
* :mod:`~ami_simulator.actions` and :mod:`~ami_simulator.extras` the answers to actions;
* :mod:`~ami_simulator.carriers`, :mod:`~ami_simulator.pjsip_actions` and
  :mod:`~ami_simulator.trunks` the PJSIP carriers, their answers and their calls;
* :mod:`~ami_simulator.connection` one client's socket and session state;
* this module: the asyncio server that ties them together (lifecycle, login, dispatch,
  broadcast) and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ServerSession
from ami_simulator import actions, profiles, templates
from ami_simulator.calls import Calls, traffic
from ami_simulator.connection import Connection
from ami_simulator.extras import SimulatedExtras
from ami_simulator.scripts import OUTCOMES
from ami_simulator.trunks import DEFAULT_TRUNK_MIX, TRUNK_SCRIPTS, TrunkModel, TrunkSettings

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_TRUNK_MIX",
    "OUTCOMES",
    "TRUNK_SCRIPTS",
    "SimulatedAsterisk",
    "SimulatorConfig",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_MIX: Final[dict[str, float]] = {
    "answered": 60.0,
    "busy": 10.0,
    "congestion": 8.0,
    "no_answer": 10.0,
    "unallocated": 5.0,
    "rejected": 4.0,
    "failed_originate": 3.0,
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class SimulatorConfig:
    """Settings of a :class:`SimulatedAsterisk` (defaults match the captures' test box)."""

    host: str = "127.0.0.1"
    port: int = 5038  # 0 = pick a free port
    username: str = "exporter"
    secret: str = "s3cret"  # noqa: S105 - the captures' test-only credential
    calls_per_second: float = 1.0  # 0 = no automatic traffic
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    hold_time: float = 5.0  # answered calls stay up this long (+-50 % jitter when generated)
    ring_time: float = 0.3  # time between the call set-up and its answer or failure
    auth_delay: float = 1.0  # Asterisk sleeps 1 s before "Authentication failed"
    seed: int | None = None
    # A version profile, "11", "13", "16", "18", "20" or "22", or a full version of one of
    # them; it decides the banner, event names and fields (ami_simulator.profiles).
    asterisk_version: str = "22.10.1"
    ami_version: str = ""  # "": the profile's AMI version (22: 11.0.0)
    system_name: str = ""
    allow_remote: bool = False  # refuse a non-loopback listen address unless True
    ssl_context: ssl.SSLContext | None = None  # serve AMI over TLS (manager.conf tlsenable)
    vicidial: bool = False  # generated calls carry VICIdial auto-dial call IDs (V...)
    # PJSIP carriers (ami_simulator.trunks), as the Asterisk 22 of tests/fixtures/pjsip: with
    # trunks > 0 the generated calls go over carrier, carrier2, ... with trunk_mix's
    # behaviours (the Local calls of ``mix`` are then not generated), and the PJSIP and queue
    # actions answer from the carriers' live state. Needs the 22 profile.
    trunks: int = 0
    trunk_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TRUNK_MIX))
    # Post-dial delay scale: a call's is uniform 0.3-4 s (as sip18's carriers) times this times
    # its carrier's own seeded factor (0.5-1.5; 1-2.5 for a degraded carrier).
    post_dial_delay: float = 1.0
    ring_timeout: float = 10.0  # a call that rings out gives up after this (Originate Timeout)
    queue_wait: float = 3.0  # mean time a queue caller waits for an agent (or gives up)
    rtcp_interval: float = 2.0  # rtp.conf rtcpinterval of the captures
    flap_interval: float = 0.0  # mean seconds between qualify/registration flaps; 0: none
    # The user's manager.conf write classes: ListCommands and Permission denied follow them
    # (the captures' exporter user; the README's least-privilege user has "reporting").
    user_write: str = "system,call,reporting,originate"


class SimulatedAsterisk:
    """An in-process AMI server that behaves like the Asterisk of the captures."""

    def __init__(self, config: SimulatorConfig) -> None:
        unknown = set(config.mix) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) in mix: {', '.join(sorted(unknown))}")
        self.config = config
        self.profile = profiles.profile_for(config.asterisk_version)
        full = "." in config.asterisk_version
        self.asterisk_version = config.asterisk_version if full else self.profile.asterisk_version
        self.ami_version = config.ami_version or self.profile.ami_version
        # Peers, registrations and queues: change them with extras.set_peer_status() etc.
        self.extras = SimulatedExtras(self.profile, self._broadcast)
        self.login_attempts: list[tuple[float, str, bool]] = []
        self._rng = random.Random(config.seed)  # simulation, not crypto
        self._calls = Calls(
            templates.compiled(self.profile), self.profile, self._broadcast, config.ring_time
        )
        self._boot = actions.Boot()
        identity = actions.Identity(
            self.profile, self.asterisk_version, self.ami_version, config.system_name
        )
        self._actions = actions.Actions(identity, self._boot, self._calls)
        self.trunks = self._trunk_model(config)
        self._server: asyncio.Server | None = None
        self._sessions: set[Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._generator: asyncio.Task[None] | None = None
        self._flapper: asyncio.Task[None] | None = None
        self._port = config.port
        self._running = False
        self._down = False
        self._session_actions: dict[str, Callable[[Connection, Message], Awaitable[None]]] = {
            "login": self._login,
            "logoff": self._logoff,
            "challenge": self._challenge,
        }

    def _trunk_model(self, config: SimulatorConfig) -> TrunkModel | None:
        if config.trunks <= 0:
            return None
        if self.profile.major != "22":
            raise ValueError("PJSIP carriers (trunks > 0) need the Asterisk 22 profile")
        unknown = set(config.trunk_mix) - set(TRUNK_SCRIPTS)
        if unknown:
            raise ValueError(f"unknown trunk call(s) in trunk_mix: {', '.join(sorted(unknown))}")
        settings = TrunkSettings(
            trunks=config.trunks,
            mix=dict(config.trunk_mix),
            hold_time=config.hold_time,
            ring_time=config.ring_time,
            post_dial_delay=config.post_dial_delay,
            ring_timeout=config.ring_timeout,
            queue_wait=config.queue_wait,
            rtcp_interval=config.rtcp_interval,
            user_write=actions.parse_mask(config.user_write),
        )
        return TrunkModel(settings, self.profile, self._calls, self._broadcast, self._rng)

    @property
    def trunk_stats(self) -> dict[str, int]:
        """PJSIP trunk calls started since the simulator was made, by script."""
        return dict(self._calls.trunk_stats)

    @property
    def stats(self) -> dict[str, int]:
        """Calls started since the simulator was made, by outcome."""
        return self._calls.stats

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, and start the traffic generator when ``calls_per_second`` > 0."""
        if not self.config.allow_remote and not _is_loopback(self.config.host):
            raise ValueError(
                f"refusing to listen on non-loopback address {self.config.host!r} "
                "(set allow_remote to override)"
            )
        await self._listen()
        self._running = True
        self._start_generator()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self._port, ssl=self.config.ssl_context
        )
        sock = self._server.sockets[0]
        self._port = int(sock.getsockname()[1])

    def _start_generator(self) -> None:
        config = self.config
        if self.trunks is not None and config.flap_interval > 0 and self._flapper is None:
            self._flapper = asyncio.create_task(self.trunks.flaps(config.flap_interval))
        if self.trunks is not None and config.calls_per_second > 0 and self._generator is None:
            trunk_traffic = self.trunks.traffic(config.calls_per_second, config.vicidial)
            self._generator = asyncio.create_task(trunk_traffic)
        if config.calls_per_second > 0 and self._generator is None:
            generate = traffic(
                self._calls,
                self._rng,
                rate=config.calls_per_second,
                mix=config.mix,
                hold_time=config.hold_time,
                vicidial=config.vicidial,
            )
            self._generator = asyncio.create_task(generate)

    async def _stop_generator(self) -> None:
        for task in (self._generator, self._flapper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._generator = self._flapper = None

    async def stop(self) -> None:
        """Stop traffic, close every session and the listener."""
        self._running = False
        await self._stop_generator()
        self._calls.drop()
        await self._close_listener()
        for session in list(self._sessions):
            session.abort()
        await self._await_handlers()

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _await_handlers(self) -> None:
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=1.0)
            for task in pending:
                task.cancel()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return self._port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self._port}"

    @property
    def sessions(self) -> int:
        """Connected sessions now."""
        return sum(1 for s in self._sessions if not s.closed)

    async def restart(self, downtime: float = 0.2) -> None:
        """Like ``core restart now``: hang up every call, Shutdown, go away, come back fresh."""
        self._down = True
        await self._stop_generator()
        chunks = self._calls.hang_up_all()
        shutdown = [("Privilege", "system,all"), ("Shutdown", "Cleanly"), ("Restart", "True")]
        chunks.append(("system", ServerSession.event("Shutdown", *shutdown)))
        self._broadcast(chunks)
        await self._close_listener()
        for session in list(self._sessions):
            session.close()
        await self._await_handlers()
        await asyncio.sleep(downtime)
        # A restarted Asterisk is a new process: new start time, counters from 0.
        self._boot.restart()
        self._calls.reset_counters()
        if self.trunks is not None:
            self.trunks.restart()
        if self._running:
            await self._listen()
            self._down = False
            self._start_generator()

    async def drop_connections(self) -> None:
        """Cut every client socket abruptly (no Shutdown); calls go on."""
        for session in list(self._sessions):
            session.abort()
        await self._await_handlers()

    def end_all_calls_silently(self) -> None:
        """Forget every live channel without any event (Hangups lost while disconnected)."""
        self._calls.drop()

    # -- calls ---------------------------------------------------------------------------

    def start_call(
        self,
        outcome: str = "answered",
        hold_time: float | None = None,
        *,
        caller_name: str | None = None,
    ) -> None:
        """Start one call now; its events follow asynchronously, timed like a real call.

        ``caller_name`` replaces the captures' CallerIDName ``AMI Test`` (e.g. a VICIdial call
        ID such as ``V1127093000000012345``)."""
        if outcome not in self._calls.scripts:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        if not self._running:
            raise RuntimeError("simulator is not running")
        if self._down:
            return  # a restarting Asterisk takes no calls
        hold = self.config.hold_time if hold_time is None else hold_time
        self._calls.start(outcome, hold, caller_name)

    def start_trunk_call(
        self, name: str = "answered", trunk: str | None = None, *, caller_name: str | None = None
    ) -> None:
        """Start one PJSIP trunk call of behaviour ``name`` (TRUNK_SCRIPTS) on ``trunk``
        (default: a random carrier); needs ``trunks`` > 0."""
        if self.trunks is None:
            raise RuntimeError("no PJSIP carriers: set SimulatorConfig.trunks")
        if not self._running:
            raise RuntimeError("simulator is not running")
        if not self._down:
            self.trunks.start_call(name, trunk, caller_name)

    def active_channels(self) -> list[dict[str, str]]:
        """The live channels, with the fields CoreShowChannels reports for them."""
        return self._calls.active_channels()

    def _broadcast(self, chunks: list[tuple[str, bytes]]) -> None:
        if not chunks:
            return
        # One write per session and distinct event mask, not one per event: at 200 calls/s
        # this keeps the simulator far from the 2-core box's limit.
        joined: dict[frozenset[str], bytes] = {}
        for session in self._sessions:
            if not session.authenticated or session.closed or not session.classes:
                continue
            data = joined.get(session.classes)
            if data is None:
                wanted = session.classes
                data = b"".join(chunk for cls, chunk in chunks if cls in wanted)
                joined[wanted] = data
            if data:
                session.send(data)

    # -- sessions ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        session_id = f"0x{0x550000000000 + self._rng.getrandbits(36):x}"
        session = Connection(writer, session_id, self.ami_version)
        self._sessions.add(session)
        try:
            session.send(session.ami.greeting())
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for message in session.ami.receive(data):
                    if session.closed:
                        break
                    await self._dispatch(session, message)
        except (ConnectionError, OSError):
            pass
        finally:
            session.close()
            self._sessions.discard(session)
            if task is not None:
                self._handlers.discard(task)

    async def _dispatch(self, session: Connection, message: Message) -> None:
        if message.kind != "action":
            session.send(ServerSession.error(message, "Missing action in request"))
            return
        name = message.name.lower()
        session_action = self._session_actions.get(name)
        if session_action is not None:
            await session_action(session, message)
        elif not session.authenticated:
            session.send(ServerSession.error(message, "Permission denied"))
        elif name == "events":
            # The mask belongs to the session, so this one is answered here, not in actions.
            session.classes = actions.parse_mask(message.get("EventMask") or "off")
            state = "On" if session.classes else "Off"
            session.send(ServerSession.response(message, "Success", ("Events", state)))
        else:
            # Peers, registrations, queues: the carriers' (Asterisk 22 as captured), or the
            # version profile's few fixed ones.
            if self.trunks is not None:
                answer = self.trunks.answer(name, message)
            else:
                answer = self.extras.answer(name, message)
            if answer is None:
                answer = self._actions.answer(name, message)
            session.send(answer if answer is not None else ServerSession.unknown_action(message))

    async def _logoff(self, session: Connection, message: Message) -> None:
        goodbye = ("Message", "Thanks for all the fish.")
        session.send(ServerSession.response(message, "Goodbye", goodbye))
        session.close()

    async def _challenge(self, session: Connection, message: Message) -> None:
        session.challenge = str(self._rng.randrange(100_000_000, 999_999_999))
        session.send(ServerSession.response(message, "Success", ("Challenge", session.challenge)))

    async def _login(self, session: Connection, message: Message) -> None:
        config = self.config
        username = message.get("Username") or ""
        ok = actions.login_ok(message, config.username, config.secret, session.challenge)
        self.login_attempts.append((time.monotonic(), username, ok))
        now = time.time()
        security = self.profile.major != "11"  # security events reach AMI from 12 on
        if not ok:
            # The reason goes to read=security sessions at once; the client itself waits.
            event = "InvalidPassword" if username == config.username else "InvalidAccountID"
            if security:
                failed = actions.security_event(session, event, username, now)
                self._broadcast([("security", failed)])
            await asyncio.sleep(config.auth_delay)
            session.send(ServerSession.error(message, "Authentication failed"))
            session.close()  # no Goodbye, as Asterisk
            return
        session.authenticated = True
        session.classes = actions.parse_mask(message.get("Events"))
        accepted = ("Message", "Authentication accepted")
        session.send(ServerSession.response(message, "Success", accepted))
        if "system" in session.classes:
            session.send(actions.fully_booted(self.profile, self._boot, now))
        if security:
            auth = actions.security_event(session, "SuccessfulAuth", username, now)
            self._broadcast([("security", auth)])


# -- the command line -------------------------------------------------------------------------


def _weights(text: str, known: Sequence[str], what: str) -> dict[str, float]:
    """``name=weight,...`` with names from ``known`` (``--mix``, ``--trunk-mix``)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise argparse.ArgumentTypeError(f"bad {what} entry {part!r}; {', '.join(known)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
    return mix


def _parse_mix(text: str) -> dict[str, float]:
    return _weights(text, tuple(OUTCOMES), "mix")


def _parse_trunk_mix(text: str) -> dict[str, float]:
    return _weights(text, tuple(TRUNK_SCRIPTS), "trunk mix")


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami-simulator",
        description="Simulated Asterisk 22 AMI server with generated call traffic.",
    )
    parser.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 5038))
    parser.add_argument("--username", default="exporter")
    parser.add_argument("--secret", default=None, help="default: $AMI_SECRET, else s3cret")
    parser.add_argument("--calls-per-second", type=float, default=1.0)
    parser.add_argument("--mix", type=_parse_mix, default=None, help="answered=60,busy=10,...")
    parser.add_argument("--hold-time", type=float, default=5.0)
    parser.add_argument("--ring-time", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--asterisk-version",
        choices=profiles.VERSIONS,
        default="22",
        help="version profile: banner, event names and fields of that Asterisk (default 22)",
    )
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback address")
    parser.add_argument("--vicidial", action="store_true", help="VICIdial call IDs as caller names")
    trunks = parser.add_argument_group(
        "PJSIP carriers", "Asterisk 22 with chan_pjsip trunks, as in tests/fixtures/pjsip"
    )
    trunks.add_argument(
        "--trunks", type=int, default=0, help="carriers carrier, carrier2... (0: Local calls)"
    )
    trunks.add_argument(
        "--trunk-mix", type=_parse_trunk_mix, default=None, help="answered=28,busy=12,..."
    )
    trunks.add_argument(
        "--post-dial-delay", type=float, default=1.0, help="scale of the 0.3-4 s per call"
    )
    trunks.add_argument("--ring-timeout", type=float, default=10.0, help="a ring-out gives up")
    trunks.add_argument("--queue-wait", type=float, default=3.0, help="mean wait for an agent")
    trunks.add_argument("--rtcp-interval", type=float, default=2.0)
    trunks.add_argument(
        "--flap-interval", type=float, default=0.0, help="mean seconds between flaps (0: none)"
    )
    trunks.add_argument(
        "--user-write",
        default="system,call,reporting,originate",
        help="the user's manager.conf write classes (ListCommands, Permission denied)",
    )
    return parser


async def _serve(config: SimulatorConfig) -> None:
    simulator = SimulatedAsterisk(config)
    await simulator.start()
    print(f"ami-simulator: listening on {simulator.address}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    """``ami-simulator`` entry point: serve until SIGINT/SIGTERM, then exit 0."""
    args = _build_parser().parse_args(argv)
    host, port = args.listen
    if not args.allow_remote and not _is_loopback(host):
        print(
            f"ami-simulator: refusing to listen on non-loopback address {host!r} "
            "(use --allow-remote to override)",
            file=sys.stderr,
        )
        return 2
    secret = args.secret if args.secret is not None else os.environ.get("AMI_SECRET", "s3cret")
    config = SimulatorConfig(
        host=host,
        port=port,
        username=args.username,
        secret=secret,
        calls_per_second=args.calls_per_second,
        hold_time=args.hold_time,
        ring_time=args.ring_time,
        seed=args.seed,
        asterisk_version=args.asterisk_version,
        allow_remote=args.allow_remote,
        vicidial=args.vicidial,
        trunks=args.trunks,
        post_dial_delay=args.post_dial_delay,
        ring_timeout=args.ring_timeout,
        queue_wait=args.queue_wait,
        rtcp_interval=args.rtcp_interval,
        flap_interval=args.flap_interval,
        user_write=args.user_write,
    )
    if args.mix is not None:
        config.mix = args.mix
    if args.trunk_mix is not None:
        config.trunk_mix = args.trunk_mix
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except ValueError as exc:  # settings the simulator refuses (trunks on another profile...)
        print(f"ami-simulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ami-simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
