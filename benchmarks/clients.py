"""The clients under test, each timed from connect until it has counted every streamed event.

* :func:`run_ours` - the exporter's real ingest path:
  :class:`~ami_exporter.client.connection.AMIClient` with a
  :class:`~ami_exporter.state.server.ServerState` (socket -> ``_AMIProtocol.data_received`` ->
  ``AMIParser.feed`` -> ``ServerState.handle_event``) on a plain asyncio loop (no uvloop);
  the final state is checked, so a fast but wrong ingest is caught;
* :func:`run_asterisk_ami` - ``asterisk-ami`` 0.1.7 (threaded), with a counting listener, or
  with a "metrics callback" that also does ``prometheus_client.Counter.labels(name).inc()``;
* :func:`run_panoramisk` - ``panoramisk`` 1.4 (asyncio) with a ``'*'`` event handler that counts;
* :func:`run_raw` - the raw limit: an asyncio protocol that only counts ``\\r\\n\\r\\n``, or
  (``split=True``) that splits the bytes into one object per message.

The baselines are imported lazily: they are benchmark extras, not dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ami_exporter.client.connection import AMIClient
from ami_exporter.config.model import ServerConfig
from ami_exporter.state import labels
from ami_exporter.state.server import ServerState

POLL: Final = 0.005
TIMEOUT: Final = 120.0
SECRET: Final = "bench"


@dataclass(slots=True)
class Measurement:
    """One timed run of one client."""

    client: str
    events: int
    seconds: float
    problems: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


async def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = POLL) -> bool:
    """Poll ``predicate`` every ``interval`` seconds; bounded in count and time."""
    deadline = time.perf_counter() + timeout
    for _ in range(int(timeout / interval) + 1):
        if predicate():
            return True
        if time.perf_counter() >= deadline:
            break
        await asyncio.sleep(interval)
    return predicate()


def server_config(port: int, username: str, name: str = "bench") -> ServerConfig:
    # Long resync interval: one resync at login, none during the run.
    return ServerConfig(
        name=name,
        host="127.0.0.1",
        port=port,
        username=username,
        secret=SECRET,
        ping_interval=10.0,
        resync_interval=3600.0,
        connect_timeout=5.0,
    )


def stream_events_received(state: ServerState, names: tuple[str, ...]) -> int:
    """Events of the streamed kinds counted so far (excludes FullyBooted and list items)."""
    events = state.events
    return sum(events.get(n, 0) for n in names)


def check_state(
    state: ServerState, counts: dict[str, int], calls: int, prefill: int, listed: int
) -> list[str]:
    """Compare the final state with what the stream must produce."""
    problems: list[str] = []
    expected: dict[str, int] = {}
    for name, n in counts.items():
        key = labels.event_name(name)
        expected[key] = expected.get(key, 0) + n
    expected["FullyBooted"] = expected.get("FullyBooted", 0) + 1
    # The CoreShowChannels answer's items are answers to us, not events: never counted.
    for own in ("CoreShowChannel", "CoreShowChannelsComplete"):
        expected[own] = 0
    for name, n in expected.items():
        got = state.events.get(name, 0)
        if got != n:
            problems.append(f"events[{name}] = {got}, expected {n}")
    checks: list[tuple[str, int, int]] = [
        ("hangups", sum(state.hangups.values()), 2 * calls),
        ("originates answered", state.originates.get(("success", "answered"), 0), calls),
        ("dials answer", state.dials.get("answer", 0), calls),
        ("channels created", sum(state.channels_created.values()), 2 * calls + prefill),
        ("live channels", len(state.channels), prefill),
        ("active calls", state.active_calls, prefill // 2),
        ("malformed", state.malformed, 0),
    ]
    for what, got, want in checks:
        if got != want:
            problems.append(f"{what} = {got}, expected {want}")
    return problems


async def run_ours_async(
    port: int,
    username: str,
    counts: dict[str, int],
    calls: int,
    prefill: int,
    listed: int,
    timeout: float = TIMEOUT,
) -> Measurement:
    state = ServerState("bench")
    client = AMIClient(server_config(port, username), state)
    names = tuple(counts)
    target = sum(counts.values())
    cpu0 = time.process_time()
    start = time.perf_counter()
    task = asyncio.create_task(client.run(), name="ami-client")
    await wait_until(lambda: stream_events_received(state, names) >= target, timeout)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    # The CoreShowChannels answer may still be on its way when the stream is done (it is
    # not in the count above); give it a bounded moment before checking.
    await wait_until(lambda: state.resyncs_completed >= 1, 10.0)
    received = stream_events_received(state, names)
    problems = [] if received >= target else [f"timeout: {received}/{target} events"]
    problems += check_state(state, counts, calls, prefill, listed)
    await stop_clients([client], [task])
    return Measurement("ours", received, elapsed, problems, cpu)


async def stop_clients(clients: list[AMIClient], tasks: list[asyncio.Task[None]]) -> None:
    """Log off (bounded), then make sure every client task is gone."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.stop() for c in clients)), 10.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run_ours(
    port: int, username: str, counts: dict[str, int], calls: int, prefill: int, listed: int
) -> Measurement:
    return asyncio.run(run_ours_async(port, username, counts, calls, prefill, listed))


def run_asterisk_ami(
    port: int, username: str, stream_events: int, with_metrics: bool
) -> Measurement:
    """asterisk-ami 0.1.7: its reader thread calls the listener for every event."""
    target = stream_events + 1  # and FullyBooted
    from asterisk.ami import AMIClient as ThreadedClient
    from prometheus_client import CollectorRegistry, Counter

    count = 0
    on_event: Callable[..., None]
    if with_metrics:
        registry = CollectorRegistry()
        events_total = Counter("bench_ami_events", "Events by name.", ["event"], registry=registry)

        def on_event(event: Any, source: Any) -> None:
            nonlocal count
            events_total.labels(event.name).inc()
            count += 1

    else:

        def on_event(event: Any, source: Any) -> None:
            nonlocal count
            count += 1

    client = ThreadedClient(address="127.0.0.1", port=port)
    client.add_event_listener(on_event)
    cpu0 = time.process_time()
    start = time.perf_counter()
    problems: list[str] = []
    try:
        response = client.login(username=username, secret=SECRET).response
        if response is None or response.is_error():
            problems.append(f"login failed: {response}")
        deadline = start + TIMEOUT
        while count < target and time.perf_counter() < deadline and not problems:
            time.sleep(POLL)
        elapsed = time.perf_counter() - start
    finally:
        with contextlib.suppress(Exception):
            client.logoff()
        client.disconnect()
    cpu = time.process_time() - cpu0
    if count < target:
        problems.append(f"timeout: {count}/{target} events")
    name = "asterisk-ami+metrics" if with_metrics else "asterisk-ami"
    if with_metrics:
        total = sum(
            s.value
            for metric in registry.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )
        if int(total) != count:
            problems.append(f"metrics callback counted {total}, listener {count}")
    return Measurement(name, count - 1, elapsed, problems, cpu)  # minus FullyBooted


async def _run_panoramisk_async(port: int, username: str, stream_events: int) -> Measurement:
    from panoramisk import Manager

    target = stream_events + 1  # and FullyBooted
    count = 0

    def on_event(manager: Any, message: Any) -> None:
        nonlocal count
        count += 1

    manager = Manager(
        loop=asyncio.get_running_loop(),
        host="127.0.0.1",
        port=port,
        username=username,
        secret=SECRET,
        reconnect_timeout=60,
    )
    manager.register_event("*", on_event)
    cpu0 = time.process_time()
    start = time.perf_counter()
    problems: list[str] = []
    try:
        await asyncio.wait_for(manager.connect(), 10.0)
        await wait_until(lambda: count >= target, TIMEOUT)
        elapsed = time.perf_counter() - start
    finally:
        manager.close()
    cpu = time.process_time() - cpu0
    if count < target:
        problems.append(f"timeout: {count}/{target} events")
    return Measurement("panoramisk", count - 1, elapsed, problems, cpu)  # minus FullyBooted


def run_panoramisk(port: int, username: str, stream_events: int) -> Measurement:
    """panoramisk 1.4: a ``'*'`` handler counts every dispatched event."""
    return asyncio.run(_run_panoramisk_async(port, username, stream_events))


class RawProtocol(asyncio.Protocol):
    """Only frames messages: counts ``\\r\\n\\r\\n``, carrying 3 bytes across reads."""

    def __init__(self, username: str, target: int, done: asyncio.Future[None]) -> None:
        self.username = username
        self.target = target
        self.done = done
        self.count = 0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(
            f"Action: Login\r\nActionID: raw-1\r\nUsername: {self.username}\r\n"
            f"Secret: {SECRET}\r\nEvents: on\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        self.count += buf.count(b"\r\n\r\n")
        self.tail = buf[-3:]
        if self.count >= self.target and not self.done.done():
            self.done.set_result(None)


class RawSplitProtocol(RawProtocol):
    """Frames messages for real: splits the buffer into one bytes object per message."""

    def data_received(self, data: bytes) -> None:
        parts = (self.tail + data).split(b"\r\n\r\n")
        self.tail = parts.pop()
        self.count += len(parts)
        if self.count >= self.target and not self.done.done():
            self.done.set_result(None)


async def _run_raw_async(
    port: int, username: str, stream_events: int, split: bool = False
) -> Measurement:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    target = stream_events + 2  # messages: the Login response, FullyBooted and the stream
    factory = RawSplitProtocol if split else RawProtocol
    protocol = factory(username, target, done)
    cpu0 = time.process_time()
    start = time.perf_counter()
    transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", port)
    problems: list[str] = []
    try:
        await asyncio.wait_for(done, TIMEOUT)
    except TimeoutError:
        problems.append(f"timeout: {protocol.count}/{target} messages")
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    transport.close()
    name = "raw-split" if split else "raw"
    return Measurement(name, protocol.count - 2, elapsed, problems, cpu)


def run_raw(port: int, username: str, stream_events: int, split: bool = False) -> Measurement:
    return asyncio.run(_run_raw_async(port, username, stream_events, split))
