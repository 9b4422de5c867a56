"""The tests' AMI server answers as the real Asterisk of the captures did, and its hooks work.

A capture's client side (``.sent``) played against :class:`TestAMIServer` must get back the
capture's server side (``.raw``) byte for byte: the default answers are the recorded ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from amiserver import (
    CAPTURED_CHANNELS,
    Connection,
    TestAMIServer,
    first_time,
    permission_denied,
)
from helpers import Capture

from ami_exporter.ami.protocol import AMIParser, Message, serialize

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
TIMEOUT = 5.0


async def talk(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


def action(name: str, action_id: str, **fields: str) -> bytes:
    return serialize([("Action", name), ("ActionID", action_id), *fields.items()])


LOGIN = action("Login", "login-1", Username="exporter", Secret="s3cret", Events="on")
LOGOFF = action("Logoff", "logoff-1")


@pytest.mark.parametrize("scenario", ["01-login-success.exporter", "02-login-failure.badsecret"])
async def test_a_captured_session_gets_the_captured_bytes(
    ami_server: AMIServerFactory, capture: Capture, scenario: str
) -> None:
    ami = await ami_server(auth_delay=0)
    got = await talk(ami.port, capture.raw(f"{scenario}.sent"))
    assert got == capture.raw(f"{scenario}.raw")


async def test_list_and_core_answers_are_the_captured_ones(
    ami_server: AMIServerFactory, capture: Capture
) -> None:
    ami = await ami_server(channels=CAPTURED_CHANNELS)
    asked = [
        ("CoreShowChannels", "csc-1", "04-coreshowchannels.exporter.raw"),
        ("CoreStatus", "corestatus-1", "05-commands.admin.raw"),
        ("CoreSettings", "coresettings-1", "05-commands.admin.raw"),
    ]
    data = LOGIN + b"".join(action(name, aid) for name, aid, _ in asked) + LOGOFF
    got = AMIParser().feed(await talk(ami.port, data))
    for _, aid, name in asked:
        expected = [m for m in capture.messages(name) if m.get("ActionID") == aid]
        assert [m for m in got if m.get("ActionID") == aid] == expected, aid
    assert len([m for m in got if m.name == "CoreShowChannel"]) == 10
    assert ami.actions == ["Login", "CoreShowChannels", "CoreStatus", "CoreSettings", "Logoff"]


async def test_hooks_per_action_and_per_connection(ami_server: AMIServerFactory) -> None:
    async def on_connect(conn: Connection) -> None:
        if conn.index == 1:
            conn.banner = "Asterisk Call Manager/2.10.6"
            conn.on_action["ping"] = permission_denied

    ami = await ami_server(on_connect=on_connect, events=())
    ping = action("Ping", "p")
    first = AMIParser().feed(await talk(ami.port, LOGIN + ping + LOGOFF))
    parser = AMIParser()
    second = parser.feed(await talk(ami.port, LOGIN + ping + LOGOFF))
    assert [m.get("Ping") for m in first if m.get("ActionID") == "p"] == ["Pong"]
    assert parser.banner == "Asterisk Call Manager/2.10.6"
    assert [m.get("Message") for m in second if m.get("ActionID") == "p"] == ["Permission denied"]
    assert [a.ok for a in ami.logins] == [True, True]
    assert [c.actions for c in ami.connections] == [["Login", "Ping", "Logoff"]] * 2


async def test_first_time_then_the_default(ami_server: AMIServerFactory) -> None:
    ami = await ami_server(on_action={"Ping": first_time(permission_denied)}, events=())
    got = AMIParser().feed(
        await talk(ami.port, LOGIN + action("Ping", "a") + action("Ping", "b") + LOGOFF)
    )
    answers = {m.get("ActionID"): m.get("Message") or m.get("Ping") for m in got}
    assert (answers["a"], answers["b"]) == ("Permission denied", "Pong")


async def test_a_failing_hook_fails_the_test() -> None:
    async def broken(conn: Connection, msg: Message) -> None:
        raise ValueError("bug in a hook")

    server = TestAMIServer(on_action={"Login": broken})
    with pytest.raises(AssertionError, match="bug in a hook"):
        async with server:
            await talk(server.port, LOGIN)
