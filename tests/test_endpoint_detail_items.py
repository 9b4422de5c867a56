"""``PJSIPShowEndpoint``'s answer is the exporter's own list, not events.

A live check against a real Asterisk 22.10.1 (chan_pjsip, SIPp carriers) found
``asterisk_ami_events_total{event="AorDetail"}`` at 2 and ``{event="other"}`` at 6 after the
exporter asked ``PJSIPShowEndpoint`` for ``carrier`` and ``carrier2``: Asterisk answers with one
item per endpoint formatter (``EndpointDetail``, ``AuthDetail``, ``TransportDetail``,
``AorDetail``, ``ContactStatusDetail``, ``IdentifyDetail``; ``res/res_pjsip*``
``ast_sip_register_endpoint_formatter``), and only ``ContactStatusDetail`` was routed to the
action, so the rest were counted as events (and handed to the event handlers). The recorded
answer (``commands.admin``, Endpoint: carrier) is replayed here.
"""

from __future__ import annotations

import re

import pytest
from amiserver import LOGIN_EVENTS
from helpers import samples_of, value, wait_for
from test_permissions import (
    ExporterFactory,
    RecordedAsterisk,
    ServerFactory,
    recorded_answers,
    run_recorded,
)

pytestmark = pytest.mark.e2e

S = {"server": "test"}


def _item_names(blocks: list[bytes]) -> list[str]:
    """Event names of a recorded list answer, read from the bytes here."""
    return [m.decode() for b in blocks for m in re.findall(rb"^Event: (\S+)", b, re.M)]


async def test_endpoint_detail_items_are_not_counted_as_events(
    ami_server: ServerFactory, exporter: ExporterFactory
) -> None:
    detail = recorded_answers("pjsip/commands.admin")["pjsipshowendpoint"]
    names = _item_names(detail)
    # What Asterisk 22.10.1 sent for one endpoint (besides the closing event).
    assert set(names) - {"EndpointDetailComplete"} == {
        "EndpointDetail",
        "TransportDetail",
        "AorDetail",
        "ContactStatusDetail",
        "IdentifyDetail",
    }
    asterisk = RecordedAsterisk("pjsip/answers.exporter", extra={"pjsipshowendpoint": detail})
    exp = await run_recorded(ami_server, exporter, asterisk)
    # carrier and carrier2 are reachable by the endpoint list, with no round trip known: the
    # exporter asks for their detail (the recorded carrier answer serves both).
    await wait_for(
        lambda: asterisk.sent.count("PJSIPShowEndpoint") >= 2, what="both endpoint details"
    )
    await exp.client._request("Ping", timeout=5)  # the last detail answer was taken in
    m = await exp.scrape()
    events = {
        dict(labels)["event"]: v for labels, v in samples_of(m, "asterisk_ami_events_total").items()
    }
    counted = {name: n for name, n in events.items() if n}
    # Only the events the server broadcast (its login events): no list item, no `other`.
    assert counted == {msg.name: 1.0 for msg in LOGIN_EVENTS}
    # The detail was still used: carrier's ContactStatusDetail RoundtripUsec 367.
    assert value(m, "asterisk_peer_rtt_seconds", **S, tech="PJSIP", peer="carrier") == 367e-6
