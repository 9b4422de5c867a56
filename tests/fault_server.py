"""A loopback AMI server that misbehaves on purpose: the fault injector of ``test_faults.py``.

Each accepted connection runs ``script(conn)``, a coroutine that decides what this connection
does (stay silent, refuse the login, cut the socket mid-message, stop reading, flood...).
:meth:`Conn.serve` is a well-behaved AMI loop (Login, Ping, CoreSettings, CoreStatus,
CoreShowChannels, Logoff) with hooks, so a script only spells out its fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence

from ami_exporter.ami.protocol import AMIParser, Message, serialize

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def event(name: str, *pairs: tuple[str, str]) -> bytes:
    return serialize([("Event", name), ("Privilege", "call,all"), *pairs])


def newchannel(uid: str, channel: str = "", linkedid: str = "", state: str = "Up") -> bytes:
    return event("Newchannel", ("Channel", channel or f"PJSIP/trunk-{uid}"),
                 ("ChannelStateDesc", state), ("Uniqueid", uid),
                 ("Linkedid", linkedid or uid))  # fmt: skip


def hangup(uid: str, channel: str = "", cause: str = "16") -> bytes:
    return event("Hangup", ("Channel", channel or f"PJSIP/trunk-{uid}"), ("Uniqueid", uid),
                 ("Linkedid", uid), ("Cause", cause))  # fmt: skip


def listed_channel(uid: str, channel: str = "", linkedid: str = "") -> list[tuple[str, str]]:
    return [
        ("Event", "CoreShowChannel"),
        ("Channel", channel or f"PJSIP/trunk-{uid}"),
        ("ChannelStateDesc", "Up"),
        ("Uniqueid", uid),
        ("Linkedid", linkedid or uid),
    ]


class Conn:
    """One accepted connection, as seen by a script."""

    def __init__(
        self, server: FaultServer, index: int, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:  # fmt: skip
        self.server = server
        self.index = index  # 0 for the first connection, 1 for the next...
        self.reader = reader
        self.writer = writer
        self.parser = AMIParser(expect_banner=False)
        self._queue: list[Message] = []

    def write(self, data: bytes) -> None:
        self.writer.write(data)

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
                return None
            self._queue.extend(self.parser.feed(data))
        msg = self._queue.pop(0)
        self.server.actions.append(msg.name)
        if msg.name.lower() == "login":
            self.server.logins.append(asyncio.get_running_loop().time())
        return msg

    def reply(self, msg: Message, *pairs: tuple[str, str]) -> None:
        head = [pairs[0]]
        if msg.action_id is not None:
            head.append(("ActionID", msg.action_id))
        self.write(serialize([*head, *pairs[1:]]))

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a firewall does."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def serve(
        self,
        *,
        after_login: bytes = b"",
        channels: Sequence[list[tuple[str, str]]] = (),
        answer_pings: bool = True,
        on_action: Callable[[Message], Awaitable[bool]] | None = None,
    ) -> None:
        """A well-behaved AMI session until EOF or Logoff; ``on_action`` may take over an action
        (return True when it handled it)."""
        while True:
            msg = await self.read_action()
            if msg is None:
                return
            if on_action is not None and await on_action(msg):
                continue
            name = msg.name.lower()
            if name == "login":
                if msg.get("Secret") != self.server.secret:
                    self.reply(msg, ("Response", "Error"), ("Message", "Authentication failed"))
                    await self.drain()
                    return
                self.reply(msg, ("Response", "Success"), ("Message", "Authentication accepted"))
                self.write(after_login)
            elif name == "ping":
                if answer_pings:
                    self.reply(msg, ("Response", "Success"), ("Ping", "Pong"))
            elif name == "coresettings":
                self.reply(msg, ("Response", "Success"), ("AMIversion", "11.0.0"),
                           ("AsteriskVersion", "22.10.1"), ("SystemName", ""))  # fmt: skip
            elif name == "corestatus":
                self.reply(msg, ("Response", "Success"), ("CoreStartupDate", "2026-01-01"),
                           ("CoreStartupTime", "00:00:00"), ("CoreReloadDate", "2026-01-01"),
                           ("CoreReloadTime", "00:00:00"),
                           ("CoreCurrentCalls", str(len(channels))))  # fmt: skip
            elif name == "coreshowchannels":
                self.reply(msg, ("Response", "Success"), ("EventList", "start"),
                           ("Message", "Channels will follow"))  # fmt: skip
                aid = [("ActionID", msg.action_id)] if msg.action_id else []
                for item in channels:
                    self.write(serialize([item[0], *aid, *item[1:]]))
                self.write(serialize([("Event", "CoreShowChannelsComplete"), *aid,
                                      ("EventList", "Complete"),
                                      ("ListItems", str(len(channels)))]))  # fmt: skip
            elif name == "logoff":
                self.reply(msg, ("Response", "Goodbye"), ("Message", "Thanks for all the fish."))
                await self.drain()
                return
            else:
                self.reply(msg, ("Response", "Error"), ("Message", "Permission denied"))
            await self.drain()


Script = Callable[[Conn], Awaitable[None]]


class FaultServer:
    """``async with FaultServer(script) as srv:`` listens on 127.0.0.1:``srv.port``."""

    def __init__(
        self, script: Script, *, secret: str = "s3cret", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.script = script
        self.secret = secret
        self.ssl_context = ssl_context
        self.port = 0
        self.connections = 0
        self.logins: list[float] = []  # loop time of every Login received
        self.actions: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                  ssl=self.ssl_context)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        conn = Conn(self, self.connections, reader, writer)
        self.connections += 1
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()


async def standard(conn: Conn) -> None:
    """A well-behaved server."""
    conn.write(BANNER)
    await conn.serve()
