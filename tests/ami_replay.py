"""A loopback AMI server that replays a real capture: the test double for exact-value tests.

It answers Login (checking the secret), Ping, CoreSettings, CoreStatus (canned from the real
`05-commands` capture), CoreShowChannels (an empty list unless told otherwise) and Logoff, and
after a good Login writes every event of the chosen capture, byte for byte as recorded.
"""

from __future__ import annotations

import asyncio
import contextlib

from conftest import read_capture

from ami_exporter.ami.protocol import AMIParser, Message, serialize


def _canned(action_id: str | None, msg: Message) -> bytes:
    headers = [(k, v) for k, v in msg.headers if k.lower() != "actionid"]
    if action_id is not None:
        headers.insert(1, ("ActionID", action_id))
    return serialize(headers)


_ADMIN = AMIParser().feed(read_capture("05-commands.admin.raw"))
CORE_SETTINGS = next(m for m in _ADMIN if m.get("AsteriskVersion"))
CORE_STATUS = next(m for m in _ADMIN if m.get("CoreStartupDate"))


class ReplayServer:
    def __init__(
        self,
        capture: str | None,
        *,
        username: str = "exporter",
        secret: str = "s3cret",
        auth_delay: float = 0.05,
        channels: list[Message] | None = None,
        answer_pings: bool = True,
        extra: bytes = b"",
    ) -> None:
        data = read_capture(capture) if capture else b"Asterisk Call Manager/11.0.0\r\n"
        parser = AMIParser()
        self.messages = parser.feed(data)
        self.banner = (parser.banner or "") + "\r\n"
        self.events = [m for m in self.messages if m.kind == "event"]
        self.username = username
        self.secret = secret
        self.auth_delay = auth_delay
        self.channels = channels or []
        self.answer_pings = answer_pings
        self.extra = extra
        self.logins: list[tuple[float, bool]] = []
        self.actions: list[str] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self.writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        parser = AMIParser(expect_banner=False)
        writer.write(self.banner.encode())
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for msg in parser.feed(data):
                    self.actions.append(msg.name)
                    if not await self._answer(msg, writer, loop.time()):
                        return
        except ConnectionError:
            return
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, msg: Message, writer: asyncio.StreamWriter, now: float) -> bool:
        aid = msg.action_id
        name = msg.name.lower()

        def reply(*pairs: tuple[str, str]) -> None:
            head = [("Response", pairs[0][1])]
            if aid is not None:
                head.append(("ActionID", aid))
            writer.write(serialize([*head, *pairs[1:]]))

        if name == "login":
            ok = msg.get("Username") == self.username and msg.get("Secret") == self.secret
            self.logins.append((now, ok))
            if not ok:
                await asyncio.sleep(self.auth_delay)
                reply(("Response", "Error"), ("Message", "Authentication failed"))
                return False
            reply(("Response", "Success"), ("Message", "Authentication accepted"))
            writer.write(b"".join(serialize(m) for m in self.events) + self.extra)
        elif name == "ping":
            if not self.answer_pings:
                return True
            reply(("Response", "Success"), ("Ping", "Pong"), ("Timestamp", "1795771590.894137"))
        elif name == "coresettings":
            writer.write(_canned(aid, CORE_SETTINGS))
        elif name == "corestatus":
            writer.write(_canned(aid, CORE_STATUS))
        elif name == "coreshowchannels":
            reply(("Response", "Success"), ("EventList", "start"),
                  ("Message", "Channels will follow"))  # fmt: skip
            for item in self.channels:
                writer.write(_canned(aid, item))
            complete = [("Event", "CoreShowChannelsComplete")]
            if aid is not None:
                complete.append(("ActionID", aid))
            complete += [("EventList", "Complete"), ("ListItems", str(len(self.channels)))]
            writer.write(serialize(complete))
        elif name == "logoff":
            reply(("Response", "Goodbye"), ("Message", "Thanks for all the fish."))
            await writer.drain()
            return False
        else:
            reply(("Response", "Error"), ("Message", "Permission denied"))
        await writer.drain()
        return True
