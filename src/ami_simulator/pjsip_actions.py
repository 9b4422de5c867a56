"""What a simulated Asterisk 22 with PJSIP carriers answers, worded as the recorded answers.

``ListCommands`` lists what the user's ``write`` classes allow (an action whose privilege is
``<none>`` or shares a class with them), from the table Asterisk 22.10.1 gave the captures'
``exporter`` user; an action of that table the user may not call answers ``Permission denied``
(``PJSIPShowEndpoints``, ``PJSIPShowAors``, ``PJSIPShowContacts`` for ``write = reporting``), an
action not in it is left to the other handlers (``SIPpeers`` and friends then answer
``Invalid/unknown command``, as chan_sip and chan_iax2 are absent). The PJSIP and queue lists
reflect the live state of :mod:`ami_simulator.carriers`: reachability, channels per endpoint,
the registration, the queue's callers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ami_exporter.ami.protocol import Message, serialize
from ami_exporter.ami.session import ServerSession
from ami_simulator.carriers import (
    AGENTS,
    QUEUE,
    Carrier,
    Pairs,
    QueueState,
    Registration,
    answers,
    fill,
)

__all__ = ["PJSIPActions", "allowed_actions", "privilege_classes"]


def privilege_classes(text: str) -> frozenset[str]:
    """The classes of a ListCommands value such as ``" (Priv: system,reporting,all)"``."""
    inner = text.rpartition("(Priv: ")[2].rstrip(")")
    if inner == "<none>":
        return frozenset()
    return frozenset(inner.split(",")) - {"all"}


def allowed_actions(write: frozenset[str]) -> Pairs:
    """The recorded ListCommands lines a user with these write classes gets."""
    return [
        (name, text)
        for name, text in answers().list_commands
        if not privilege_classes(text) or privilege_classes(text) & write
    ]


class PJSIPActions:
    """Answers by lower-case action name, for one simulated server's carriers and queue."""

    def __init__(
        self,
        carriers: Sequence[Carrier],
        registration: Registration,
        queue: QueueState,
        channels_of: Callable[[str], int],
        talking: Callable[[], int],
        write: frozenset[str],
    ) -> None:
        self.carriers = {c.name: c for c in carriers}
        self.registration = registration
        self.queue = queue
        self.channels_of = channels_of  # live channels of an endpoint
        self.talking = talking  # queue callers talking to an agent now
        self.write = write
        self.allowed = {name.lower() for name, _ in allowed_actions(write)}
        self.known = {name.lower() for name, _ in answers().list_commands}
        self.login_time = str(int(time.time()))
        self.handlers: dict[str, Callable[[Message], bytes]] = {
            "listcommands": self.list_commands,
            "pjsipshowendpoints": self.endpoints,
            "pjsipshowendpoint": self.endpoint,
            "pjsipshowaors": self.aors,
            "pjsipshowcontacts": self.contacts,
            "pjsipshowregistrationsoutbound": self.registrations,
            "queuestatus": self.queue_status,
            "queuesummary": self.queue_summary,
        }

    def answer(self, name: str, request: Message) -> bytes | None:
        """The answer, ``Permission denied``, or None (not a PJSIP/queue action of ours)."""
        if name in self.known and name not in self.allowed:
            return ServerSession.error(request, "Permission denied")
        handler = self.handlers.get(name)
        return handler(request) if handler is not None else None

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _list(
        request: Message, action: str, items: list[Pairs], complete: str, **extra: str
    ) -> bytes:
        """Recorded start response, the items, the recorded Complete event with ListItems."""
        data = answers()
        aid = request.get("ActionID")
        parts = [serialize(fill(data.responses[action], aid, {}))]
        parts += [serialize(item) for item in items]
        done = fill(data.items[complete], aid, {"ListItems": str(len(items)), **extra})
        parts.append(serialize(done))
        return b"".join(parts)

    @staticmethod
    def _item(name: str, request: Message, values: dict[str, str]) -> Pairs:
        return fill(answers().items[name], request.get("ActionID"), values)

    def _device_state(self, carrier: Carrier) -> str:
        if not carrier.reachable:
            return "Unavailable"
        return "In use" if self.channels_of(carrier.name) else "Not in use"

    # -- the actions -----------------------------------------------------------------------

    def list_commands(self, request: Message) -> bytes:
        return ServerSession.response(request, "Success", *allowed_actions(self.write))

    def endpoints(self, request: Message) -> bytes:
        items = [
            self._item(
                "EndpointList",
                request,
                {
                    "ObjectName": c.name,
                    "Aor": c.name,
                    "Contacts": f"{c.name}/{c.uri},",
                    "DeviceState": self._device_state(c),
                    "ActiveChannels": str(self.channels_of(c.name)),
                },
            )
            for c in self.carriers.values()
        ]
        return self._list(request, "pjsipshowendpoints", items, "EndpointListComplete")

    def aors(self, request: Message) -> bytes:
        items = [
            self._item("AorList", request, {"ObjectName": c.name, "Contacts": f"{c.name}/{c.uri}"})
            for c in self.carriers.values()
        ]
        return self._list(request, "pjsipshowaors", items, "AorListComplete")

    @staticmethod
    def contacts(request: Message) -> bytes:
        # Only contacts added by registration are listed; the carriers' are static AOR ones.
        return serialize(fill(answers().errors["No Contacts found"], request.get("ActionID"), {}))

    def endpoint(self, request: Message) -> bytes:
        # res_pjsip's own words, trailing LF included (pjsip_configuration.c).
        name = request.get("Endpoint") or ""
        if not name:
            return ServerSession.error(request, "PJSIPShowEndpoint requires an endpoint name\n")
        name = name[6:] if name.lower().startswith("pjsip/") else name
        carrier = self.carriers.get(name)
        if carrier is None:
            return ServerSession.error(request, f"Unable to retrieve endpoint {name}\n")
        names = {"ObjectName": name, "EndpointName": name, "Aors": name, "AOR": name}
        contacts = {"Contacts": f"{name}/{carrier.uri}", "URI": carrier.uri}
        match = f"127.0.0.1:{carrier.port}/255.255.255.255"
        status = {
            "Status": "Reachable" if carrier.reachable else "Unreachable",
            "RoundtripUsec": str(carrier.rtt_usec if carrier.reachable else 0),
            "DeviceState": self._device_state(carrier),
            "ActiveChannels": str(self.channels_of(name)),
        }
        items = [
            self._item("EndpointDetail", request, {**names, **status}),
            self._item("TransportDetail", request, {}),
            self._item("AorDetail", request, {**names, **contacts}),
            self._item("ContactStatusDetail", request, {**names, **contacts, **status}),
            self._item("IdentifyDetail", request, {**names, "Endpoint": name, "Match": match}),
        ]
        return self._list(request, "pjsipshowendpoint", items, "EndpointDetailComplete")

    def registrations(self, request: Message) -> bytes:
        reg = self.registration
        status = "Registered" if reg.registered else "Rejected"
        item = self._item(
            "OutboundRegistrationDetail",
            request,
            {"ObjectName": reg.name, "ClientUri": reg.client_uri, "ServerUri": reg.server_uri}
            | {"Status": status},
        )
        counts = {
            "Registered": str(int(reg.registered)),
            "NotRegistered": str(int(not reg.registered)),
        }
        return self._list(
            request,
            "pjsipshowregistrationsoutbound",
            [item],
            "OutboundRegistrationDetailComplete",
            **counts,
        )

    def _busy_agents(self) -> int:
        return min(len(AGENTS), self.talking())

    def queue_status(self, request: Message) -> bytes:
        q, now = self.queue, time.time()
        params = {"Queue": QUEUE, "Calls": str(len(q.callers)), "Completed": str(q.completed)}
        params |= {"Abandoned": str(q.abandoned), "Holdtime": str(q.holdtime)}
        params |= {"TalkTime": str(q.talktime)}
        items = [self._item("QueueParams", request, params)]
        busy = self._busy_agents()
        for i, (member, location) in enumerate(AGENTS):
            in_call = i < busy
            items.append(
                self._item(
                    "QueueMember",
                    request,
                    {"Queue": QUEUE, "Name": member, "Location": location}
                    | {"StateInterface": location, "LoginTime": self.login_time}
                    | {"InCall": str(int(in_call)), "Status": "2" if in_call else "1"},
                )
            )
        for position, (call, joined) in enumerate(q.callers, 1):
            entry = {"Queue": QUEUE, "Position": str(position), "Wait": str(int(now - joined))}
            entry |= {"Channel": call.values.get("c1", ""), "Uniqueid": call.values.get("u1", "")}
            items.append(self._item("QueueEntry", request, entry))
        return self._list(request, "queuestatus", items, "QueueStatusComplete")

    def queue_summary(self, request: Message) -> bytes:
        q, now = self.queue, time.time()
        longest = int(now - min(joined for _, joined in q.callers)) if q.callers else 0
        summary = {"Queue": QUEUE, "LoggedIn": str(len(AGENTS))}
        summary |= {"Available": str(len(AGENTS) - self._busy_agents())}
        summary |= {"Callers": str(len(q.callers)), "HoldTime": str(q.holdtime)}
        summary |= {"TalkTime": str(q.talktime), "LongestHoldTime": str(longest)}
        items = [self._item("QueueSummary", request, summary)]
        return self._list(request, "queuesummary", items, "QueueSummaryComplete")
