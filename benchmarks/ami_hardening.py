"""Measurements behind the AMI-side hardening of issue #12, each printing one JSON line.

Every probe drives the real code path (``ClientSession.receive`` -> ``ServerState``, or the
asyncio ``AMIClient`` against a server in another process) on 127.0.0.1, and runs on the code
before the hardening too, so the same command gives the before and after figures::

    python -m benchmarks.ami_hardening contacts --uris 10000   # loop time of N ContactStatus
    python -m benchmarks.ami_hardening follows --events 10000  # events after a Follows
    python -m benchmarks.ami_hardening list --items 300000     # RSS of an endless list
    python -m benchmarks.ami_hardening channels --count 1000000
    python -m benchmarks.ami_hardening banner --size 900000    # asterisk_info line length
    python -m benchmarks.ami_hardening ingest --runs 15        # the hot path, no sockets

``contacts``: N ``ContactStatus`` events of one endpoint, each with a new contact URI, fed in
64 KiB reads as the client reads them; the total loop time and the worst single read.
``follows``: an unterminated ``Response: Follows``, then N ordinary events and a ``Pong``
answer: how many arrive. ``list``: the exporter's client asks ``CoreShowChannels`` of a server
that answers with N items and no ``...Complete``, then drops the connection; the process RSS
when logged in, at its peak, after the session died, and the list items still referenced.
``channels``: N ``Newchannel`` that never hang up; live channels kept and traced memory.
``banner``: a banner of N bytes; the length of the longest ``asterisk_info`` label value.
``ingest``: the s1 stream of ``benchmarks.run`` through ``ClientSession.receive`` and
``ServerState.record_events`` in 64 KiB reads, no sockets: best and median events/s of N runs
(steadier than s1 on a shared machine, for comparing two versions of the hot path).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import ClientSession, ServerSession
from ami_exporter.state.server import ServerState
from benchmarks.memprobe import vm_status

READ = 65536


def _reads(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), READ):
        yield data[start : start + READ]


def _feed(state: ServerState, session: ClientSession, data: bytes) -> tuple[float, float]:
    """The client's data_received path, read by read: (total seconds, worst read)."""
    total = worst = 0.0
    for chunk in _reads(data):
        start = time.perf_counter()
        got = session.receive(chunk)
        if got.malformed:
            state.record_malformed(got.malformed)
        if got.names:
            state.record_events(got.names, got.events)
        took = time.perf_counter() - start
        total += took
        worst = max(worst, took)
    return total, worst


# ---------------------------------------------------------------------------- probes


def probe_contacts(uris: int) -> dict[str, Any]:
    state = ServerState("bench")
    session = ClientSession(parse=state.parsed_event_names)
    session.receive(b"Asterisk Call Manager/2.10.0\r\n")
    data = b"".join(
        ServerSession.event(
            "ContactStatus",
            ("URI", f"sip:agent@10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060"),
            ("ContactStatus", "Reachable"),
            ("AOR", "agent"),
            ("EndpointName", "agent"),
            ("RoundtripUsec", str(1000 + i % 5000)),
        )
        for i in range(uris)
    )
    total, worst = _feed(state, session, data)
    peer = state.peers.peers.get(("PJSIP", "agent"))
    return {
        "probe": "contacts",
        "uris": uris,
        "loop_seconds": round(total, 4),
        "worst_read_ms": round(worst * 1000, 2),
        "contacts_tracked": len(peer.contacts) if peer is not None else 0,
    }


def probe_follows(events: int) -> dict[str, Any]:
    state = ServerState("bench")
    session = ClientSession(parse=state.parsed_event_names)
    ping_id, _ = session.send("Ping")
    data = b"Asterisk Call Manager/1.3\r\n"
    data += b"Response: Follows\r\nPrivilege: Command\r\nActionID: 99\r\nsome CLI text\n"
    data += b"".join(
        ServerSession.event("TestEvent", ("Privilege", "system,all"), ("N", str(i)))
        for i in range(events)
    )
    ping = Message("action", "Ping", [("Action", "Ping"), ("ActionID", ping_id)])
    pong = ServerSession.response(ping, "Success", ("Ping", "Pong"))
    total, _ = _feed(state, session, data + pong)
    got = state.events.get("TestEvent", 0)
    return {
        "probe": "follows",
        "events_sent": events,
        "events_received": got,
        "pong_received": session.pending == 0,
        "malformed": state.health.malformed,
        "buffered_bytes": session.buffered,
        "loop_seconds": round(total, 4),
    }


def probe_channels(count: int) -> dict[str, Any]:
    state = ServerState("bench")
    session = ClientSession(parse=state.parsed_event_names)
    session.receive(b"Asterisk Call Manager/2.10.0\r\n")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    batch = 20_000
    total = 0.0
    for first in range(0, count, batch):
        data = b"".join(
            ServerSession.event(
                "Newchannel",
                ("Channel", f"PJSIP/trunk-{i:08x}"),
                ("ChannelState", "6"),
                ("ChannelStateDesc", "Up"),
                ("Uniqueid", f"1795771598.{i}"),
                ("Linkedid", f"1795771598.{i}"),
            )
            for i in range(first, min(count, first + batch))
        )
        total += _feed(state, session, data)[0]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    dropped = getattr(state.tracker, "untracked", None)
    return {
        "probe": "channels",
        "newchannels": count,
        "live_channels": len(state.channels),
        "untracked": dropped,
        "traced_bytes": after - before,
        "loop_seconds": round(total, 3),
    }


def probe_banner(size: int) -> dict[str, Any]:
    from prometheus_client import generate_latest

    from ami_exporter.metrics.collector import build_registry

    state = ServerState("bench")
    session = ClientSession(parse=state.parsed_event_names)
    banner = b"Asterisk Call Manager/" + b"9" * size + b"\r\n"
    for chunk in _reads(banner):
        got = session.receive(chunk)
        if got.banner is not None:
            state.apply_banner(got.banner)
    settings = Message(
        "response",
        "Success",
        [("Response", "Success"), ("AsteriskVersion", "X" * size), ("SystemName", "s" * size)],
    )
    state.apply_core_settings(settings)
    body = generate_latest(build_registry([state])).decode()
    info = [line for line in body.splitlines() if line.startswith("asterisk_info{")]
    longest = 0
    for line in info:
        for part in line.split('="')[1:]:
            longest = max(longest, len(part.split('"', 1)[0]))
    return {
        "probe": "banner",
        "banner_bytes": len(banner),
        "info_line_bytes": max((len(line) for line in info), default=0),
        "longest_label_value": longest,
        "scrape_bytes": len(body),
    }


def probe_ingest(runs: int) -> dict[str, Any]:
    from benchmarks.stream import build_stream

    data = build_stream(calls=6000).data
    rates: list[float] = []
    events = 0
    for _ in range(runs):
        state = ServerState("bench")
        session = ClientSession(parse=state.parsed_event_names)
        session.receive(b"Asterisk Call Manager/11.0.0\r\n")
        took = _feed(state, session, data)[0]
        events = sum(state.event_counts.values())
        rates.append(events / took)
    rates.sort()
    return {
        "probe": "ingest",
        "events": events,
        "best_events_per_second": round(rates[-1]),
        "median_events_per_second": round(rates[len(rates) // 2]),
    }


# ---------------------------------------------------------------------------- list probe


def _list_server(port_file: str, items: int, pad: int) -> None:
    """An AMI server for one connection: CoreShowChannels gets ``items`` items, no Complete,
    then the connection is closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]), encoding="ascii")
    conn, _ = listener.accept()
    listener.close()
    server = ServerSession("Asterisk Call Manager/2.10.0")
    conn.sendall(server.greeting())
    while True:
        data = conn.recv(65536)
        if not data:
            return
        for msg in server.receive(data):
            name = msg.name.lower()
            if name == "coreshowchannels":
                _stream_items(conn, msg, items, pad)
                conn.close()
                return
            if name in ("login", "coresettings", "corestatus", "ping"):
                conn.sendall(ServerSession.response(msg, "Success"))
            else:
                conn.sendall(ServerSession.error(msg, "Permission denied"))


def _stream_items(conn: socket.socket, msg: Message, items: int, pad: int) -> None:
    conn.sendall(ServerSession.response(msg, "Success", ("EventList", "start"), ("Message", "x")))
    aid = msg.get("ActionID")
    batch = 2000
    for first in range(0, items, batch):
        conn.sendall(
            b"".join(
                ServerSession.event(
                    "CoreShowChannel",
                    ("Channel", f"PJSIP/trunk-{i:08x}"),
                    ("ChannelState", "6"),
                    ("ChannelStateDesc", "Up"),
                    ("CallerIDNum", "5551000"),
                    ("CallerIDName", "Zoe Mueller"),
                    ("Context", "from-trunk"),
                    ("Exten", "100"),
                    ("Uniqueid", f"1795771598.{i}"),
                    ("Linkedid", f"1795771598.{i}"),
                    ("Application", "Dial"),
                    ("Duration", "00:00:05"),
                    *((("ChanVariable", "x" * pad),) if pad else ()),
                    action_id=aid,
                )
                for i in range(first, min(items, first + batch))
            )
        )


async def _list_client(port: int) -> dict[str, Any]:
    from ami_exporter.client.connection import AMIClient
    from ami_exporter.config.model import ServerConfig
    from benchmarks.clients import wait_until

    state = ServerState("bench")
    config = ServerConfig(
        "bench", "127.0.0.1", port, "u", "s", ping_interval=60.0, resync_interval=600.0
    )
    client = AMIClient(config, state)
    task = asyncio.create_task(client.run())
    await wait_until(lambda: state.health.up, 30.0, 0.005)
    gc.collect()
    logged_in = vm_status()["VmRSS"]
    await wait_until(lambda: not state.health.up, 300.0, 0.01)
    peak = vm_status()["VmHWM"]
    await asyncio.sleep(0.2)  # the session is down: the client backs off
    gc.collect()
    after = vm_status()["VmRSS"]
    kept = sum(1 for o in gc.get_objects() if type(o) is Message)
    incomplete = getattr(state.health, "list_actions_incomplete", None)
    client._stopping = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "rss_logged_in": logged_in,
        "rss_peak": peak,
        "rss_after_session_died": after,
        "messages_still_referenced": kept,
        "disconnects": dict(state.health.disconnects),
        "incomplete": {f"{k[0]}/{k[1]}": v for k, v in incomplete.items()} if incomplete else None,
    }


def probe_list(items: int, pad: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return _probe_list(items, pad, Path(tmp) / "port")


def _probe_list(items: int, pad: int, port_file: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.ami_hardening", "_list-server", str(port_file)]
    command += ["--items", str(items), "--pad", str(pad)]
    server = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text(encoding="ascii"):
            if time.monotonic() > deadline:
                raise RuntimeError("the list server did not start")
            time.sleep(0.01)
        port = int(port_file.read_text(encoding="ascii"))
        result = asyncio.run(_list_client(port))
    finally:
        server.kill()
        server.wait()
    return {"probe": "list", "items": items, "pad": pad, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    sub.add_parser("contacts").add_argument("--uris", type=int, default=10_000)
    sub.add_parser("follows").add_argument("--events", type=int, default=10_000)
    sub.add_parser("channels").add_argument("--count", type=int, default=1_000_000)
    sub.add_parser("banner").add_argument("--size", type=int, default=900_000)
    sub.add_parser("ingest").add_argument("--runs", type=int, default=15)
    lst = sub.add_parser("list")
    lst.add_argument("--items", type=int, default=300_000)
    lst.add_argument("--pad", type=int, default=0, help="bytes of padding per item")
    srv = sub.add_parser("_list-server")
    srv.add_argument("port_file")
    srv.add_argument("--items", type=int, default=300_000)
    srv.add_argument("--pad", type=int, default=0)
    args = parser.parse_args()
    if args.probe == "_list-server":
        _list_server(args.port_file, args.items, args.pad)
        return
    if args.probe == "contacts":
        result = probe_contacts(args.uris)
    elif args.probe == "follows":
        result = probe_follows(args.events)
    elif args.probe == "channels":
        result = probe_channels(args.count)
    elif args.probe == "banner":
        result = probe_banner(args.size)
    elif args.probe == "ingest":
        result = probe_ingest(args.runs)
    else:
        result = probe_list(args.items, args.pad)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
