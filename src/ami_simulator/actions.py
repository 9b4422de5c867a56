"""What the simulated Asterisk answers: the actions, the login's checks and its events.

Everything here turns a request and the simulator's state into bytes, worded by the project's
sans-IO :class:`~ami_exporter.ami.session.ServerSession` as Asterisk words them; nothing
touches a socket or a timer. :class:`Actions` answers the actions of a logged-in session that
depend on the core (``Ping``, ``CoreStatus``, ``CoreSettings``, ``CoreShowChannels``,
``Command``); the functions below check a login, parse an event mask and make the login's
``FullyBooted`` and security events. Which action goes where, and when, is
:mod:`ami_simulator.server`'s business; peers, registrations and queues are
:mod:`ami_simulator.extras`'.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ServerSession
from ami_simulator import profiles
from ami_simulator.calls import Calls
from ami_simulator.clock import event_tv, local_time
from ami_simulator.connection import Connection

__all__ = [
    "ALL_CLASSES",
    "Actions",
    "Boot",
    "Identity",
    "fully_booted",
    "login_ok",
    "parse_mask",
    "security_event",
]

# Every event class a read=all user gets; "Events: on" (or no Events header) means all of them.
ALL_CLASSES: Final = frozenset(
    {
        "system",
        "call",
        "log",
        "verbose",
        "command",
        "agent",
        "user",
        "config",
        "dtmf",
        "reporting",
        "cdr",
        "dialplan",
        "originate",
        "agi",
        "cc",
        "aoc",
        "test",
        "security",
        "message",
    }
)


@dataclass(slots=True)
class Boot:
    """When the simulated Asterisk started and last reloaded (a restart resets both)."""

    startup: float = field(default_factory=time.time)
    reload: float = 0.0

    def __post_init__(self) -> None:
        self.reload = self.reload or self.startup

    def restart(self) -> None:
        self.startup = self.reload = time.time()


@dataclass(frozen=True, slots=True)
class Identity:
    """What ``CoreSettings`` says the server is."""

    profile: profiles.Profile
    asterisk_version: str
    ami_version: str
    system_name: str


class Actions:
    """The core's answers to a logged-in session, by lower-case action name."""

    def __init__(self, identity: Identity, boot: Boot, calls: Calls) -> None:
        self.identity = identity
        self.boot = boot
        self.calls = calls
        self._handlers: dict[str, Callable[[Message], bytes]] = {
            "ping": self.ping,
            "corestatus": self.core_status,
            "coresettings": self.core_settings,
            "coreshowchannels": self.core_show_channels,
            "command": self.command,
        }

    def answer(self, name: str, request: Message) -> bytes | None:
        """The answer to ``request`` (action ``name``, lower case), or None if not ours."""
        handler = self._handlers.get(name)
        return handler(request) if handler is not None else None

    @staticmethod
    def ping(request: Message) -> bytes:
        stamp = ("Timestamp", f"{time.time():.6f}")
        return ServerSession.response(request, "Success", ("Ping", "Pong"), stamp)

    def core_status(self, request: Message) -> bytes:
        boot = self.boot
        pairs = [
            ("CoreStartupDate", local_time(boot.startup, "%Y-%m-%d")),
            ("CoreStartupTime", local_time(boot.startup, "%H:%M:%S")),
            ("CoreReloadDate", local_time(boot.reload, "%Y-%m-%d")),
            ("CoreReloadTime", local_time(boot.reload, "%H:%M:%S")),
            ("CoreCurrentCalls", str(self.calls.live_channels)),
        ]
        if self.identity.profile.processed_calls:
            pairs.append(("CoreProcessedCalls", str(self.calls.processed)))
        return ServerSession.response(request, "Success", *pairs)

    def core_settings(self, request: Message) -> bytes:
        me = self.identity
        pairs = [
            ("AMIversion", me.ami_version),
            ("AsteriskVersion", me.asterisk_version),
            ("SystemName", me.system_name),
            ("CoreMaxCalls", "5000"),
            ("CoreMaxLoadAvg", "0.000000"),
            ("CoreRunUser", ""),
            ("CoreRunGroup", ""),
            ("CoreMaxFilehandles", "0"),
            ("CoreRealTimeEnabled", "No"),
            ("CoreCDRenabled", "Yes"),
            ("CoreHTTPenabled", "No"),
        ]
        if me.profile.sounds_custom_dir:
            pairs.append(("SoundsSearchCustomDir", "No"))
        return ServerSession.response(request, "Success", *pairs)

    def core_show_channels(self, request: Message) -> bytes:
        """The live channels, in the version's key set (the 1.8/11 one, or the snapshot's)."""
        profile = self.identity.profile
        items = [
            ("CoreShowChannel", profiles.core_show_channel(profile, row))
            for row in self.calls.active_channels()
        ]
        return profiles.list_answer(
            profile,
            request,
            items,
            "CoreShowChannelsComplete",
            message="Channels will follow",
            item_action_id_first=True,
        )

    @staticmethod
    def command(request: Message) -> bytes:
        # The simulated exporter user has no write=command, like the captures' one.
        return ServerSession.error(request, "Permission denied")


# -- logging in -------------------------------------------------------------------------------


def login_ok(request: Message, username: str, secret: str, challenge: str | None) -> bool:
    """Whether a Login carries the right user and secret (plain, or MD5 of the challenge)."""
    if (request.get("Username") or "") != username:
        return False
    key = request.get("Key")
    if (request.get("AuthType") or "").lower() == "md5" and key is not None:
        text = (challenge or "") + secret
        expected = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
        return challenge is not None and key.lower() == expected
    return request.get("Secret") == secret


def parse_mask(value: str | None) -> frozenset[str]:
    """The event classes of a Login's ``Events`` or an ``Events`` action's ``EventMask``."""
    if value is None:
        return ALL_CLASSES
    text = value.strip().lower()
    if text in ("on", "yes", "true", "1", "all"):
        return ALL_CLASSES
    if text in ("off", "no", "false", "0", ""):
        return frozenset()
    return frozenset(part.strip() for part in text.split(",")) & ALL_CLASSES


def fully_booted(profile: profiles.Profile, boot: Boot, now: float) -> bytes:
    """The ``FullyBooted`` a session with the system class gets right after its login."""
    uptime, reload = int(now - boot.startup), int(now - boot.reload)
    return ServerSession.event("FullyBooted", *profiles.fully_booted(profile, uptime, reload))


def security_event(session: Connection, event: str, username: str, now: float) -> bytes:
    """``SuccessfulAuth``, ``InvalidPassword`` or ``InvalidAccountID`` about ``session``."""
    ok = event == "SuccessfulAuth"
    pairs = [
        ("Privilege", "security,all"),
        ("EventTV", event_tv(now)),
        ("Severity", "Informational" if ok else "Error"),
        ("Service", "AMI"),
        ("EventVersion", "2" if event == "InvalidPassword" else "1"),
        ("AccountID", username),
        ("SessionID", session.session_id),
        ("LocalAddress", session.local),
        ("RemoteAddress", session.remote),
    ]
    if ok:
        pairs.append(("UsingPassword", "0"))
    # Unauthenticated sessions have no session start time yet (the epoch), as in capture 02.
    pairs.append(("SessionTV", event_tv(session.connected_at if ok else 0.0)))
    return ServerSession.event(event, *pairs)
