"""Repeatable ``--web.listen-address``, as exporter-toolkit's: one app served on every address.

The exporter runs as a process on two loopback ports over one :class:`~amiserver.TestAMIServer`:
both answer every path from the same state (the same session, so the same counters); a
duplicate or malformed address exits 2 naming the flag, and an address that cannot be bound
exits 1 with nothing left listening on the other one.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from amiserver import TestAMIServer
from helpers import (
    Proc,
    clean_env,
    ev,
    free_port,
    http_get,
    metric_values,
    one_error_line,
    run_exporter,
)

pytestmark = pytest.mark.e2e

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
TIMEOUT = 15.0


def ami_args(ami: TestAMIServer) -> list[str]:
    return [
        "--ami.address",
        f"127.0.0.1:{ami.port}",
        "--ami.username",
        "exporter",
        "--ami.server-name",
        "pbx",
    ]


async def get(port: int, path: str = "/metrics") -> tuple[int, str]:
    return await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}{path}")


def events(body: str) -> float:
    return sum(metric_values(body, "asterisk_ami_events", "event").values())


async def test_two_listen_addresses_serve_the_same_exporter(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    ami = await ami_server()
    first, second = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "ami_exporter",
        *ami_args(ami),
        f"--web.listen-address=127.0.0.1:{first}",
        "--web.listen-address",
        f"127.0.0.1:{second}",
    ]
    exporter = Proc(argv, tmp_path, clean_env(AMI_SECRET=ami.secret), "exporter")
    procs.append(exporter)
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        assert exporter.proc.poll() is None, exporter.stderr
        try:
            status, body = await get(second, "/-/ready")
            if status == 200:
                break
        except OSError:
            pass
        assert asyncio.get_running_loop().time() < deadline, exporter.stderr
        await asyncio.sleep(0.05)
    for port in (first, second):
        assert f'msg="listening on http://127.0.0.1:{port}/metrics"' in exporter.stderr
    ami.connections[0].write(ev("PeerStatus", Peer="PJSIP/t", PeerStatus="Reachable"))

    async def both_count_it() -> tuple[float, float]:
        one, two = (await get(first))[1], (await get(second))[1]
        return events(one), events(two)

    counts = await both_count_it()
    while counts[0] != counts[1] or counts[0] < 3:  # FullyBooted, SuccessfulAuth, PeerStatus
        assert asyncio.get_running_loop().time() < deadline, (counts, exporter.stderr)
        await asyncio.sleep(0.05)
        counts = await both_count_it()
    # One session serves both addresses: the AMI server saw a single Login.
    assert len(ami.logins) == 1 and len(ami.connections) == 1
    for port in (first, second):
        status, body = await get(port)
        assert status == 200
        assert metric_values(body, "asterisk_ami_up", "server") == {"pbx": 1.0}
        assert (await get(port, "/"))[0] == 200
        assert (await get(port, "/-/healthy"))[0] == 200
    code, _ = await asyncio.to_thread(exporter.signal_and_wait, signal.SIGTERM)
    assert code == 0


def test_bad_listen_addresses_exit_2(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="listen-Secret-9", AMI_USERNAME="u")
    twice = ["--web.listen-address", "127.0.0.1:9999", "--web.listen-address", "127.0.0.1:9999"]
    line = one_error_line(run_exporter(twice, tmp_path, env))
    assert "--web.listen-address: 127.0.0.1:9999 is given twice" in line
    bad = ["--web.listen-address", "127.0.0.1:9999", "--web.listen-address", "nohost"]
    line = one_error_line(run_exporter(bad, tmp_path, env))
    assert "--web.listen-address: 'nohost' is not HOST:PORT" in line


def test_an_address_that_cannot_be_bound_exits_1_and_frees_the_others(tmp_path: Path) -> None:
    free, taken = free_port(), free_port()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        args = [
            "--ami.address",
            "127.0.0.1:1",
            "--web.listen-address",
            f"127.0.0.1:{free}",
            "--web.listen-address",
            f"127.0.0.1:{taken}",
        ]
        result = run_exporter(
            args, tmp_path, clean_env(AMI_SECRET="listen-Secret-9", AMI_USERNAME="u")
        )
    assert result.returncode == 1, result.stderr
    assert "cannot listen" in result.stderr and f"{taken}" in result.stderr
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    # The first address was closed again: it can be bound at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free))
