"""The tests' AMI server: one asyncio server on 127.0.0.1 whose behaviour is set by hooks.

It parses actions and writes answers with :class:`ami_exporter.ami.session.ServerSession`, and
every default answer is a real Asterisk 22.10.1 message from ``tests/fixtures`` with the
request's ``ActionID`` put in place of the recorded one:

* the banner, ``Authentication accepted``, ``FullyBooted``, ``SuccessfulAuth``, ``Pong`` and
  ``Goodbye``: 01-login-success;
* ``Authentication failed``: 02-login-failure.badsecret; ``Permission denied`` (the answer to
  any action without a handler, as for a user lacking the write class):
  02-login-failure.goodlogin;
* ``CoreSettings`` and ``CoreStatus``: 05-commands.admin;
* ``CoreShowChannels``: the framing (``Channels will follow``, ``CoreShowChannelsComplete``)
  of 04-coreshowchannels, around the connection's ``channels`` (none by default;
  :data:`CAPTURED_CHANNELS` are the 10 channels of that capture).

``Login Already In Use`` has no capture; its text is the AMI reference's (1.7, 1.12).

Behaviour is set per server and, from the ``on_connect`` hook, per connection:

* ``on_connect(conn)`` runs when a connection is accepted, before the banner; it may change
  ``conn.banner``, ``conn.events``, ``conn.channels`` and ``conn.on_action`` (for this
  connection only), or take the connection over and return False (close it);
* ``on_action[name](conn, msg)`` answers one action (names ignore case) instead of the default;
  it may call ``await conn.answer(msg)`` for the default answer, and returns False to close;
* :func:`silence`, :func:`reset`, :func:`disconnect`, :func:`stop_reading`,
  :func:`eof_mid_message`, :func:`first_time`, :func:`reject_login`,
  :func:`login_in_use`, :func:`permission_denied` are ready-made handlers, and
  :func:`close_at_once` and :func:`greet_and_ignore` ready-made ``on_connect`` hooks.

A good Login (``username``/``secret``) is answered, then ``events`` follow (by default
``FullyBooted`` and ``SuccessfulAuth``, as for a user with ``read = system,security``; pass
``capture_events(name)`` to replay a capture's events). Every action received is kept in
``received``/``actions``, every Login in ``logins`` (with the loop time it arrived at). An
exception raised by a hook fails the test when the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from helpers import capture_banner, capture_messages, captured, newchannel

from ami_exporter.ami.protocol import Message, serialize
from ami_exporter.ami.session import BANNER_PREFIX, ServerSession

__all__ = [
    "AUTH_FAILED",
    "BANNER",
    "CAPTURED_CHANNELS",
    "CORE_SETTINGS",
    "CORE_STATUS",
    "FULLY_BOOTED",
    "LOGIN_EVENTS",
    "SUCCESSFUL_AUTH",
    "Connection",
    "TestAMIServer",
    "close_at_once",
    "disconnect",
    "eof_mid_message",
    "first_time",
    "greet_and_ignore",
    "login_in_use",
    "permission_denied",
    "reject_login",
    "reset",
    "silence",
    "stop_reading",
]

_LOGIN = "01-login-success.exporter.raw"
_CSC = "04-coreshowchannels.exporter.raw"
_ADMIN = "05-commands.admin.raw"

BANNER = capture_banner(_LOGIN)
LOGIN_ACCEPTED = captured(_LOGIN, lambda m: m.get("Message") == "Authentication accepted")
FULLY_BOOTED = captured(_LOGIN, lambda m: m.name == "FullyBooted")
SUCCESSFUL_AUTH = captured(_LOGIN, lambda m: m.name == "SuccessfulAuth")
PONG = captured(_LOGIN, lambda m: m.get("Ping") == "Pong")
GOODBYE = captured(_LOGIN, lambda m: m.get("Response") == "Goodbye")
AUTH_FAILED = captured("02-login-failure.badsecret.raw", lambda m: m.kind == "response")
PERMISSION_DENIED = captured(
    "02-login-failure.goodlogin.raw", lambda m: m.get("Message") == "Permission denied"
)
CORE_SETTINGS = captured(_ADMIN, lambda m: m.get("AsteriskVersion") is not None)
CORE_STATUS = captured(_ADMIN, lambda m: m.get("CoreStartupDate") is not None)
CSC_RESPONSE = captured(_CSC, lambda m: m.kind == "response" and m.get("ActionID") == "csc-1")
CSC_COMPLETE = captured(
    _CSC, lambda m: m.name == "CoreShowChannelsComplete" and m.get("ActionID") == "csc-1"
)
CAPTURED_CHANNELS: tuple[Message, ...] = tuple(
    m
    for m in capture_messages(_CSC)
    if m.name == "CoreShowChannel" and m.get("ActionID") == "csc-1"
)
assert len(CAPTURED_CHANNELS) == 10
# No capture has it: the text of the AMI reference (Login, "Login Already In Use").
LOGIN_IN_USE = Message(
    "response", "Error", [("Response", "Error"), ("Message", "Login Already In Use")]
)
LOGIN_EVENTS: tuple[Message, ...] = (FULLY_BOOTED, SUCCESSFUL_AUTH)

Sendable = Message | bytes
Handler = Callable[["Connection", Message], Awaitable[bool | None]]
ConnectHook = Callable[["Connection"], Awaitable[bool | None]]


def reply(request: Message, template: Message, **changes: str) -> bytes:
    """``template`` (a captured answer) as the answer to ``request``: its ActionID, if any,
    right after the first line, in place of the recorded one; ``changes`` replace values."""
    pairs = [(k, changes.get(k, v)) for k, v in template.headers[1:] if k.lower() != "actionid"]
    if template.kind == "response":
        return ServerSession.response(request, template.headers[0][1], *pairs)
    return ServerSession.event(template.name, *pairs, action_id=request.get("ActionID"))


def _wire(item: Sendable) -> bytes:
    return item if isinstance(item, bytes) else serialize(item)


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    time: float  # the event loop's clock when the Login arrived
    username: str
    ok: bool  # the right username and secret


class Connection:
    """One accepted connection: its settings (copied from the server) and its socket."""

    def __init__(
        self,
        server: TestAMIServer,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.index = index  # 0 for the first connection, 1 for the next...
        self.reader = reader
        self.writer = writer
        self.banner: str | None = server.banner
        self.events: list[Sendable] = list(server.events)
        self.channels: list[Message] = list(server.channels)
        self.on_action: dict[str, Handler] = dict(server.on_action)
        self.session = ServerSession(server.banner or BANNER)
        self.actions: list[str] = []  # names of the actions of this connection
        self._queue: deque[Message] = deque()

    # -- I/O

    def write(self, *items: Sendable) -> None:
        self.writer.write(b"".join(_wire(item) for item in items))

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def read_action(self) -> Message | None:
        """The next action, or None at EOF."""
        while not self._queue:
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                return None
            if not data:
                self.session.receive_eof()
                return None
            self._queue.extend(self.session.receive(data))
        msg = self._queue.popleft()
        self.actions.append(msg.name)
        self.server.received.append(msg)
        if msg.name.lower() == "login":
            ok = (msg.get("Username"), msg.get("Secret")) == (
                self.server.username,
                self.server.secret,
            )
            when = asyncio.get_running_loop().time()
            self.server.logins.append(LoginAttempt(when, msg.get("Username") or "", ok))
        return msg

    async def read_until_eof(self) -> None:
        while await self.read_action() is not None:
            pass

    def close(self) -> None:
        """Close after what was written (the peer reads EOF)."""
        self.writer.close()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a firewall does."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    # -- the AMI loop

    async def serve(self) -> None:
        """Banner, then answer actions until EOF, Logoff or a handler returning False."""
        if self.banner is not None:
            self.session.banner = self.banner
            self.write(self.session.greeting())
        while (msg := await self.read_action()) is not None:
            handler = self.on_action.get(msg.name.lower())
            if handler is None:
                go_on = await self.answer(msg)
            else:
                go_on = await handler(self, msg) is not False
                await self.drain()
            if not go_on:
                return

    async def answer(self, msg: Message) -> bool:
        """The default answer to ``msg``; False once the connection is to be closed."""
        handler = DEFAULT_ANSWERS.get(msg.name.lower(), permission_denied)
        go_on = await handler(self, msg) is not False
        await self.drain()
        return go_on


class TestAMIServer:
    """``async with TestAMIServer(...) as ami:`` listens on 127.0.0.1:``ami.port``."""

    __test__ = False  # not a test class, whatever its name

    def __init__(  # noqa: PLR0913 - keyword-only options, each with a captured default
        self,
        *,
        banner: str | None = BANNER,
        username: str = "exporter",
        secret: str = "s3cret",
        auth_delay: float = 0.05,
        events: Iterable[Sendable] = LOGIN_EVENTS,
        channels: Iterable[Message] = (),
        on_connect: ConnectHook | None = None,
        on_action: Mapping[str, Handler] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``banner`` None: send none; ``auth_delay``: the pause before a refused login
        (Asterisk's is 1 s); ``events``: what follows a good login; ``channels``: the
        CoreShowChannel items of every connection."""
        self.banner = banner
        self.username = username
        self.secret = secret
        self.auth_delay = auth_delay
        self.events: list[Sendable] = list(events)
        self.channels: list[Message] = list(channels)
        self.on_connect = on_connect
        self.on_action: dict[str, Handler] = {k.lower(): v for k, v in (on_action or {}).items()}
        self.ssl_context = ssl_context
        self.port = 0
        self.connections: list[Connection] = []
        self.received: list[Message] = []
        self.logins: list[LoginAttempt] = []
        self.errors: list[BaseException] = []
        self.closing = asyncio.Event()  # set when the server shuts down
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def actions(self) -> list[str]:
        return [msg.name for msg in self.received]

    async def __aenter__(self) -> TestAMIServer:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        await self.close()
        if self.errors and exc_type is None:
            raise AssertionError(f"a TestAMIServer hook failed: {self.errors[0]!r}") from (
                self.errors[0]
            )

    async def close(self) -> None:
        assert self._server is not None
        self.closing.set()
        self._server.close()
        for conn in self.connections:
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        conn = Connection(self, len(self.connections), reader, writer)
        self.connections.append(conn)
        try:
            if self.on_connect is None or await self.on_connect(conn) is not False:
                await conn.serve()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a hook's bug or failed assertion: fail the test
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()


# ---------------------------------------------------------------------------- default answers


async def answer_login(conn: Connection, msg: Message) -> bool:
    server = conn.server
    if (msg.get("Username"), msg.get("Secret")) != (server.username, server.secret):
        return await reject_login(conn, msg)
    conn.write(reply(msg, LOGIN_ACCEPTED), *conn.events)
    return True


async def answer_ping(conn: Connection, msg: Message) -> None:
    conn.write(reply(msg, PONG))


async def answer_core_settings(conn: Connection, msg: Message) -> None:
    conn.write(reply(msg, CORE_SETTINGS))


async def answer_core_status(conn: Connection, msg: Message) -> None:
    conn.write(reply(msg, CORE_STATUS))


async def answer_core_show_channels(conn: Connection, msg: Message) -> None:
    items = [reply(msg, item) for item in conn.channels]
    complete = reply(msg, CSC_COMPLETE, ListItems=str(len(items)))
    conn.write(reply(msg, CSC_RESPONSE), *items, complete)


async def answer_logoff(conn: Connection, msg: Message) -> bool:
    conn.write(reply(msg, GOODBYE))
    return False


DEFAULT_ANSWERS: dict[str, Handler] = {
    "login": answer_login,
    "ping": answer_ping,
    "coresettings": answer_core_settings,
    "corestatus": answer_core_status,
    "coreshowchannels": answer_core_show_channels,
    "logoff": answer_logoff,
}


# ---------------------------------------------------------------------------- ready-made hooks


async def permission_denied(conn: Connection, msg: Message) -> None:
    """What a user lacking the action's write class gets."""
    conn.write(reply(msg, PERMISSION_DENIED))


async def reject_login(conn: Connection, msg: Message) -> bool:
    """``Authentication failed`` after ``auth_delay``, then close, as Asterisk does."""
    await asyncio.sleep(conn.server.auth_delay)
    conn.write(reply(msg, AUTH_FAILED))
    await conn.drain()
    return False


async def login_in_use(conn: Connection, msg: Message) -> bool:
    """``Login Already In Use`` (``allowmultiplelogin = no``), then close."""
    conn.write(reply(msg, LOGIN_IN_USE))
    await conn.drain()
    return False


async def silence(conn: Connection, msg: Message) -> None:
    """Read the action, never answer it."""


async def reset(conn: Connection, msg: Message) -> bool:
    """Cut the connection with a TCP RST instead of answering."""
    conn.reset()
    return False


async def disconnect(conn: Connection, msg: Message) -> bool:
    """Close the connection (EOF) instead of answering."""
    conn.close()
    return False


def stop_reading(stalled: asyncio.Event | None = None) -> Handler:
    """Wedge: never answer nor read again (the socket stays open); set ``stalled`` first."""

    async def handler(conn: Connection, msg: Message) -> bool:
        if stalled is not None:
            stalled.set()
        await conn.server.closing.wait()
        return False

    return handler


# Half of a Newchannel: the connection ends in the middle of a message.
PARTIAL_MESSAGE = serialize(newchannel("2.2"))[:40]
assert not PARTIAL_MESSAGE.endswith(b"\r\n\r\n")


def eof_mid_message(*before: Sendable) -> Handler:
    """Answer as usual, write ``before``, then half a message, and close (EOF)."""

    async def handler(conn: Connection, msg: Message) -> bool:
        await conn.answer(msg)
        conn.write(*before, PARTIAL_MESSAGE)
        await conn.drain()
        conn.close()
        return False

    return handler


def first_time(handler: Handler) -> Handler:
    """``handler`` for the first such action of the whole server, the default answer after."""
    used = False

    async def once(conn: Connection, msg: Message) -> bool | None:
        nonlocal used
        if used:
            return await conn.answer(msg)
        used = True
        return await handler(conn, msg)

    return once


async def close_at_once(conn: Connection) -> bool:
    """``on_connect``: accept, then close before any banner."""
    return False


def greet_and_ignore(banner: str) -> ConnectHook:
    """``on_connect``: another service's banner, then read and ignore everything."""
    assert not banner.startswith(BANNER_PREFIX)

    async def hook(conn: Connection) -> bool:
        conn.write(banner.encode() + b"\r\n")
        await conn.read_until_eof()
        return False

    return hook
