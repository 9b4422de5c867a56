"""What the exporter asks Asterisk, checked on the wire against real answers.

The test AMI server answers each action with the bytes a real Asterisk recorded for it
(``fixtures/pjsip`` Asterisk 22.10.1 without chan_sip and chan_iax2, ``fixtures/sip18``
Asterisk 18.26.4 with both; ``answers.exporter`` for a user with ``write =
system,call,reporting,originate``, ``answers.leastpriv`` for ``write = reporting``), split by
ActionID (``a-0``..``a-12`` in the ``.sent``) with the request's ActionID put in place. What
the exporter sent is then compared with the recorded ``ListCommands`` (the actions that user
may call) and with the recorded answers (``Invalid/unknown command``, ``Permission denied``).
Expected sets are read from the capture bytes here, never from the exporter's code.

``RecordedAsterisk`` is shared with ``test_peers_pjsip.py`` and ``test_peers_sip18.py``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import pytest
from amiserver import LOGIN_EVENTS, Connection, Handler, TestAMIServer
from helpers import Exporter, read_capture, server_config, wait_for

from ami_exporter.ami.protocol import Message
from ami_exporter.cli.check import check_servers
from ami_exporter.client import polls

pytestmark = pytest.mark.e2e

ExporterFactory = Callable[..., Awaitable[Exporter]]
ServerFactory = Callable[..., Awaitable[TestAMIServer]]

_ACTION_ID = re.compile(rb"(?m)^ActionID: ([^\r\n]*)\r?$")
_LISTED = re.compile(rb"(?m)^([A-Za-z0-9_]+):  ?[^\r\n]*\(Priv: [^\r\n]*\)\r$")


def _blocks(raw: bytes) -> list[bytes]:
    """The messages of a ``.raw`` capture, byte for byte: banner dropped, split on CRLFCRLF."""
    body = raw.split(b"\r\n", 1)[1]
    return [block for block in body.split(b"\r\n\r\n") if block]


def _sent_actions(sent: bytes) -> dict[str, str]:
    """ActionID -> action name, from a ``.sent`` capture."""
    out: dict[str, str] = {}
    for block in sent.split(b"\r\n\r\n"):
        action = re.search(rb"(?m)^Action: ([^\r\n]*)", block)
        action_id = _ACTION_ID.search(block)
        if action and action_id:
            out[action_id[1].decode()] = action[1].decode()
    return out


def recorded_answers(name: str) -> dict[str, list[bytes]]:
    """Lower-case action name -> the recorded messages answering it (``name`` without the
    extension, e.g. ``pjsip/answers.exporter``)."""
    names = _sent_actions(read_capture(f"{name}.sent"))
    out: dict[str, list[bytes]] = {}
    for block in _blocks(read_capture(f"{name}.raw")):
        found = _ACTION_ID.search(block)
        if found is None:
            continue
        action = names.get(found[1].decode())
        if action is not None:
            out.setdefault(action.lower(), []).append(block)
    return out


def listed_commands(name: str) -> set[str]:
    """The actions the recorded ``ListCommands`` answer lists (lower case)."""
    answer = recorded_answers(name)["listcommands"][0] + b"\r\n"
    return {m.decode().lower() for m in _LISTED.findall(answer)}


def refused(name: str) -> set[str]:
    """Actions whose recorded answer is ``Invalid/unknown command`` or ``Permission denied``."""
    return {
        action
        for action, blocks in recorded_answers(name).items()
        if b"Invalid/unknown command" in blocks[0] or b"Message: Permission denied" in blocks[0]
    }


def listener_events(name: str) -> bytes:
    """A listener capture's bytes after its own login answer: the events, byte for byte."""
    blocks = _blocks(read_capture(name))
    assert blocks[0].startswith(b"Response: Success")
    return b"".join(block + b"\r\n\r\n" for block in blocks[1:])


def count_events(data: bytes) -> int:
    return len(re.findall(rb"(?:^|\r\n\r\n)Event: ", data))


def _answer(blocks: Iterable[bytes]) -> Handler:
    async def handler(conn: Connection, msg: Message) -> None:
        action_id = (msg.get("ActionID") or "").encode()
        conn.write(
            *(
                _ACTION_ID.sub(lambda _: b"ActionID: " + action_id, block, count=1) + b"\r\n\r\n"
                for block in blocks
            )
        )

    return handler


@dataclass
class RecordedAsterisk:
    """A TestAMIServer answering as a real Asterisk did: ``answers`` (e.g.
    ``pjsip/answers.exporter``) for the actions, then ``events`` (a listener capture's events)
    either right after the login or once the exporter's peer polls were answered."""

    answers: str
    events: bytes = b""
    events_after_polls: bool = False
    extra: dict[str, list[bytes]] = field(default_factory=dict)  # more recorded answers
    server: TestAMIServer | None = None

    async def start(self, ami_server: ServerFactory) -> TestAMIServer:
        recorded = recorded_answers(self.answers) | self.extra
        on_action: dict[str, Handler] = {}
        for action, blocks in recorded.items():
            if action not in ("login", "logoff"):  # the server's own: it sends the events
                on_action[action] = _answer(blocks)
        if self.events_after_polls:
            last = on_action["pjsipshowregistrationsoutbound"]
            events = self.events

            async def then_events(conn: Connection, msg: Message) -> None:
                await last(conn, msg)
                conn.write(events)

            on_action["pjsipshowregistrationsoutbound"] = then_events
            login_events: list[Message | bytes] = []
        else:
            login_events = [self.events] if self.events else list(LOGIN_EVENTS)
        self.server = await ami_server(events=login_events, on_action=on_action)
        return self.server

    @property
    def sent(self) -> list[str]:
        assert self.server is not None
        return [m.name for m in self.server.received]


async def run_recorded(
    ami_server: ServerFactory,
    exporter: ExporterFactory,
    asterisk: RecordedAsterisk,
    **config: object,
) -> Exporter:
    """Start ``asterisk`` and an exporter on it; return once its first round of polls was
    answered and every event of ``asterisk.events`` was taken in."""
    server = await asterisk.start(ami_server)
    config.setdefault("queues", True)
    exp = await exporter(server_config(server.port, **config))
    last = "QueueSummary" if config["queues"] else "PJSIPShowRegistrationsOutbound"
    await wait_for(lambda: last in asterisk.sent, what=f"the exporter's {last}")
    total = count_events(asterisk.events)
    await wait_for(
        lambda: sum(exp.state.event_counts.values()) >= total, what=f"{total} events taken in"
    )
    # The answer to the last poll is applied when it arrives: one Ping round trip later it was.
    await exp.client._request("Ping", timeout=5)
    return exp


CASES = [
    ("pjsip/answers.exporter", {"sipshowregistry", "sippeers", "iaxpeerlist"}),
    (
        "pjsip/answers.leastpriv",
        {
            "sipshowregistry",
            "sippeers",
            "iaxpeerlist",
            "pjsipshowendpoints",
            "pjsipshowaors",
            "pjsipshowcontacts",
        },
    ),
    ("sip18/answers.exporter", set()),
    ("sip18/answers.leastpriv", {"pjsipshowendpoints", "pjsipshowaors", "pjsipshowcontacts"}),
]


@pytest.mark.parametrize(("answers", "refused_here"), CASES)
async def test_no_action_is_sent_that_the_server_lacks_or_refuses(
    ami_server: ServerFactory, exporter: ExporterFactory, answers: str, refused_here: set[str]
) -> None:
    # The recordings say which actions each user is refused, on each Asterisk.
    assert refused(answers) == refused_here
    asterisk = RecordedAsterisk(answers)
    await run_recorded(ami_server, exporter, asterisk, resync_interval=0.2)
    # Two more resyncs: the skip holds for the whole session, not only the first round.
    queue_polls = asterisk.sent.count("QueueSummary")
    await wait_for(lambda: asterisk.sent.count("QueueSummary") >= queue_polls + 2, what="resyncs")
    sent = {name.lower() for name in asterisk.sent}
    listed = listed_commands(answers)
    assert sent <= listed, f"sent but not in ListCommands: {sorted(sent - listed)}"
    assert not sent & refused(answers), sorted(sent & refused(answers))
    assert asterisk.sent[:2] == ["Login", "ListCommands"]
    assert asterisk.sent.count("ListCommands") == 1  # once per session
    # What each user may ask for was asked for.
    useful = {name.lower() for name, *_ in polls.PEER_POLLS + polls.QUEUE_POLLS}
    useful |= {"coresettings", "corestatus", "coreshowchannels"}
    assert (useful & listed) - refused(answers) <= sent


async def test_without_list_commands_the_polls_are_tried_once(
    ami_server: ServerFactory, exporter: ExporterFactory
) -> None:
    """An Asterisk that does not answer ListCommands (very old): try and skip, as before."""
    asterisk = RecordedAsterisk("pjsip/answers.leastpriv")
    recorded = recorded_answers("pjsip/answers.leastpriv")
    # The recorded "Invalid/unknown command" answer, as if ListCommands were unknown too.
    asterisk.extra["listcommands"] = recorded["sippeers"]
    await run_recorded(ami_server, exporter, asterisk, resync_interval=0.2)
    queue_polls = asterisk.sent.count("QueueSummary")
    await wait_for(lambda: asterisk.sent.count("QueueSummary") >= queue_polls + 2, what="resyncs")
    for action in refused("pjsip/answers.leastpriv"):
        sent = [name for name in asterisk.sent if name.lower() == action]
        assert len(sent) == 1, (action, sent)  # tried once, skipped for the session after
    assert asterisk.sent.count("PJSIPShowRegistrationsOutbound") >= 3


def test_list_commands_parses_the_recorded_answers() -> None:
    for name in ("pjsip/answers.exporter", "pjsip/answers.leastpriv", "sip18/answers.exporter"):
        block = recorded_answers(name)["listcommands"][0]
        headers = [
            tuple(line.split(": ", 1)) for line in block.decode().split("\r\n") if ": " in line
        ]
        msg = Message("response", "Success", headers)
        assert polls.parse_commands(msg) == listed_commands(name)
    assert len(listed_commands("sip18/answers.exporter")) == 90  # CAPTURES.md: 90 actions


@pytest.mark.parametrize("user", ["exporter", "leastpriv"])
async def test_check_reports_what_each_write_class_buys(
    ami_server: ServerFactory, user: str
) -> None:
    asterisk = RecordedAsterisk(f"pjsip/answers.{user}")
    server = await asterisk.start(ami_server)
    out = io.StringIO()
    code = await check_servers([server_config(server.port)], out, events_wait=0.2)
    text = out.getvalue()
    listed = listed_commands(f"pjsip/answers.{user}")
    assert f"[ OK ] commands: ListCommands lists {len(listed)} actions" in text
    # No chan_sip, no chan_iax2 on this Asterisk: nothing to grant, and nothing is sent.
    assert (
        "[INFO] commands: SIPpeers, SIPshowpeer, SIPshowregistry, IAXpeerlist not available" in text
    )
    endpoints = "commands: PJSIPShowEndpoints, PJSIPShowAors, PJSIPShowContacts"
    if user == "leastpriv":
        assert f"[WARN] {endpoints} not allowed for 'exporter' - write class system buys" in text
        assert code == 0  # a warning: the exporter works, with less
    else:
        assert f"[ OK ] {endpoints} allowed (system:" in text
    assert "[ OK ] commands: QueueStatus, QueueSummary allowed" in text
    sent = {name.lower() for name in asterisk.sent}
    assert sent <= listed, sorted(sent - listed)


async def test_core_actions_not_listed_are_not_sent(
    ami_server: ServerFactory, exporter: ExporterFactory
) -> None:
    """A user without write = reporting/system: ListCommands lacks the Core* actions."""
    asterisk = RecordedAsterisk("pjsip/answers.leastpriv")
    (listing,) = recorded_answers("pjsip/answers.leastpriv")["listcommands"]
    lines = [line for line in listing.split(b"\r\n") if not line.startswith(b"Core")]
    asterisk.extra["listcommands"] = [b"\r\n".join(lines)]
    await run_recorded(ami_server, exporter, asterisk)
    assert not [name for name in asterisk.sent if name.startswith("Core")]
    assert "QueueSummary" in asterisk.sent  # the rest goes on
