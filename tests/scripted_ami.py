"""Loopback servers that fail the way a real Asterisk (or something else on its port) fails.

:class:`ScriptedAMI` answers from the real captures' texts (``tests/fixtures``): the banner,
``Authentication failed`` (02-login-failure.badsecret), ``Permission denied``
(02-login-failure.goodlogin), ``FullyBooted`` and ``SuccessfulAuth`` (01-login-success),
``CoreSettings``/``CoreStatus`` (05-commands.admin) and a 10-channel ``CoreShowChannels``
(04-coreshowchannels). ``Login Already In Use`` has no capture; its text is the one of the AMI
reference (1.7, 1.12). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

from conftest import read_capture

from ami_exporter.ami.protocol import AMIParser, Message, serialize


def _messages(capture: str) -> tuple[str, list[Message]]:
    parser = AMIParser()
    messages = parser.feed(read_capture(capture))
    return parser.banner or "", messages


BANNER, _LOGIN_OK = _messages("01-login-success.exporter.raw")
LOGIN_ACCEPTED = _LOGIN_OK[0]
FULLY_BOOTED = next(m for m in _LOGIN_OK if m.name == "FullyBooted")
SUCCESSFUL_AUTH = next(m for m in _LOGIN_OK if m.name == "SuccessfulAuth")
PONG = next(m for m in _LOGIN_OK if m.get("Ping") == "Pong")
GOODBYE = next(m for m in _LOGIN_OK if m.get("Response") == "Goodbye")
AUTH_FAILED = _messages("02-login-failure.badsecret.raw")[1][0]
PERMISSION_DENIED = next(
    m
    for m in _messages("02-login-failure.goodlogin.raw")[1]
    if m.get("Message") == "Permission denied"
)
_ADMIN = _messages("05-commands.admin.raw")[1]
CORE_SETTINGS = next(m for m in _ADMIN if m.get("AsteriskVersion"))
CORE_STATUS = next(m for m in _ADMIN if m.get("CoreStartupDate"))
_CSC = _messages("04-coreshowchannels.exporter.raw")[1]
CSC_RESPONSE = next(m for m in _CSC if m.get("ActionID") == "csc-1" and m.kind == "response")
CSC_ITEMS = [m for m in _CSC if m.get("ActionID") == "csc-1" and m.name == "CoreShowChannel"]
CSC_COMPLETE = next(
    m for m in _CSC if m.get("ActionID") == "csc-1" and m.name == "CoreShowChannelsComplete"
)
LOGIN_IN_USE = Message(
    "response", "Error", [("Response", "Error"), ("Message", "Login Already In Use")]
)


def with_action_id(msg: Message, action_id: str | None) -> bytes:
    """The captured message with the request's ActionID (or none) in place of the recorded one."""
    headers = [(k, v) for k, v in msg.headers if k.lower() != "actionid"]
    if action_id is not None:
        headers.insert(1, ("ActionID", action_id))
    return serialize(headers)


class ScriptedAMI:
    """An AMI server scripted to one behaviour.

    * ``banner``: the first line sent (``None``: send nothing and wait);
    * ``login``: ``"accept"``, ``"reject"`` (1 s-style pause, ``Authentication failed``, close),
      ``"in-use"`` (``Login Already In Use``, close) or ``"silent"`` (never answer);
    * ``denied``: actions answered ``Permission denied`` (a user without the write class);
    * ``read_system``/``read_security``: whether FullyBooted / SuccessfulAuth follow the login
      (the user's read classes); ``close_at_once``: close right after accepting.
    """

    def __init__(
        self,
        *,
        banner: str | None = BANNER,
        login: str = "accept",
        denied: frozenset[str] = frozenset(),
        read_system: bool = True,
        read_security: bool = True,
        auth_delay: float = 0.05,
        close_at_once: bool = False,
        port: int = 0,
    ) -> None:
        self.banner = banner
        self.login = login
        self.denied = {name.lower() for name in denied}
        self.read_system = read_system
        self.read_security = read_security
        self.auth_delay = auth_delay
        self.close_at_once = close_at_once
        self.received: list[Message] = []
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ScriptedAMI:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.close_at_once:
                return
            if self.banner is not None:
                writer.write(self.banner.encode() + b"\r\n")
            parser = AMIParser(expect_banner=False)
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for msg in parser.feed(data):
                    self.received.append(msg)
                    if not await self._answer(msg, writer):
                        return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, msg: Message, writer: asyncio.StreamWriter) -> bool:
        aid = msg.action_id
        name = msg.name.lower()
        if self.banner is None or not self.banner.startswith("Asterisk Call Manager/"):
            return True  # not AMI: ignore whatever the client says
        if name == "login":
            if self.login == "silent":
                return True
            if self.login == "reject":
                await asyncio.sleep(self.auth_delay)
                writer.write(with_action_id(AUTH_FAILED, aid))
                await writer.drain()
                return False
            if self.login == "in-use":
                writer.write(with_action_id(LOGIN_IN_USE, aid))
                await writer.drain()
                return False
            out = [with_action_id(LOGIN_ACCEPTED, aid)]
            if self.read_system:
                out.append(serialize(FULLY_BOOTED.headers))
            if self.read_security:
                out.append(serialize(SUCCESSFUL_AUTH.headers))
            writer.write(b"".join(out))
        elif name in self.denied:
            writer.write(with_action_id(PERMISSION_DENIED, aid))
        elif name == "coresettings":
            writer.write(with_action_id(CORE_SETTINGS, aid))
        elif name == "corestatus":
            writer.write(with_action_id(CORE_STATUS, aid))
        elif name == "coreshowchannels":
            parts = [with_action_id(CSC_RESPONSE, aid)]
            parts += [with_action_id(item, aid) for item in CSC_ITEMS]
            parts.append(with_action_id(CSC_COMPLETE, aid))
            writer.write(b"".join(parts))
        elif name == "ping":
            writer.write(with_action_id(PONG, aid))
        elif name == "logoff":
            writer.write(with_action_id(GOODBYE, aid))
            await writer.drain()
            return False
        else:
            writer.write(with_action_id(PERMISSION_DENIED, aid))
        await writer.drain()
        return True


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, not listening: connect gets refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def firewalled_port() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered, like a firewall that drops packets.

    A listening socket that never accepts, its accept queue filled: Linux then drops further
    SYNs, so a connect neither succeeds nor is refused; it times out.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
