"""``ami-exporter check``: the verdict line and exit code of every failure mode.

Servers that fail each way, all on loopback: the simulator (success, wrong secret, unknown
user), a port nothing listens on (refused), a listener whose accept queue is full (SYNs dropped,
like a firewall), scripted AMI servers answering from the real captures (no banner, another
service's banner, Login Already In Use, no answer to Login, Permission denied, no events), and
a TLS handshake with a plain AMI port. The secret must never appear in the output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from amiserver import (
    CAPTURED_CHANNELS,
    SUCCESSFUL_AUTH,
    TestAMIServer,
    close_at_once,
    greet_and_ignore,
    login_in_use,
    permission_denied,
    silence,
)
from helpers import REPO, clean_env, closed_port, firewalled_port, server_config, wait_for

from ami_exporter.cli import check
from ami_exporter.cli.check import check_servers
from ami_exporter.config.model import ServerConfig
from ami_simulator.server import SimulatedAsterisk

SECRET = "Sup3r-S3cret-Value"
WRONG = "Wr0ng-S3cret-Value"


async def run_check(*servers: ServerConfig, events_wait: float = 0.5) -> tuple[int, str]:
    out = io.StringIO()
    code = await check_servers(servers, out, events_wait=events_wait)
    text = out.getvalue()
    for server in servers:
        assert server.secret not in text
    return code, text


def step(output: str, name: str) -> str:
    """The line of step ``name`` (``tcp``, ``banner``, ``login``, ``action CoreStatus``...)."""
    for line in output.splitlines():
        if line[:6] in ("[ OK ]", "[WARN]", "[FAIL]", "[INFO]") and line[7:].startswith(name):
            return line
    raise AssertionError(f"no {name!r} step in:\n{output}")


def cfg(port: int, secret: str = SECRET, **kw: float) -> ServerConfig:
    kw.setdefault("connect_timeout", 2.0)
    return server_config(port, name="pbx1", secret=secret, **kw)


@pytest.fixture
async def simulator(
    make_simulator: Callable[..., Awaitable[SimulatedAsterisk]],
) -> SimulatedAsterisk:
    return await make_simulator(secret=SECRET, seed=7)


@pytest.fixture
def scripted(
    ami_server: Callable[..., Awaitable[TestAMIServer]],
) -> Callable[..., Awaitable[TestAMIServer]]:
    """The test AMI server answering from the captures, with the 10 captured channels."""

    async def start(**options: Any) -> TestAMIServer:
        options.setdefault("channels", CAPTURED_CHANNELS)
        return await ami_server(secret=SECRET, **options)

    return start


Scripted = Callable[..., Awaitable[TestAMIServer]]


# ---------------------------------------------------------------------------- success


async def test_success_against_the_simulator(simulator: SimulatedAsterisk) -> None:
    simulator.start_call("answered", hold_time=30)
    await wait_for(
        lambda: [c["ChannelStateDesc"] for c in simulator.active_channels()] == ["Up", "Up"],
        what="the call answered",
    )
    code, out = await run_check(cfg(simulator.port))
    assert code == 0, out
    assert step(out, "tcp").startswith(f"[ OK ] tcp 127.0.0.1:{simulator.port} connected in ")
    assert step(out, "banner") == (
        "[ OK ] banner 'Asterisk Call Manager/11.0.0': AMI 11.0.0 (Asterisk 22)"
    )
    assert step(out, "login").startswith("[ OK ] login as 'exporter': Authentication accepted")
    for name in ("CoreSettings", "CoreStatus", "CoreShowChannels", "Ping"):
        assert step(out, f"action {name}").startswith(f"[ OK ] action {name}: allowed")
    assert "Asterisk 22.10.1" in step(out, "action CoreSettings")
    assert step(out, "events").startswith("[ OK ] events: FullyBooted received")
    summary = step(out, "summary")
    assert summary.startswith("[INFO] summary: 2 active channels in 1 calls, Asterisk up ")
    assert "last reload" in summary
    assert out.rstrip().endswith("OK: 1 of 1 servers passed")
    # No caller data in the output, though CoreShowChannel items carry it.
    assert "5551000" not in out and "AMI Test" not in out


# ---------------------------------------------------------------------------- connection


async def test_connection_refused() -> None:
    with closed_port() as port:
        code, out = await run_check(cfg(port))
    assert code == check.EXIT_CONNECT == 3
    line = step(out, "tcp")
    assert line.startswith(f"[FAIL] tcp 127.0.0.1:{port}: connection refused - ")
    assert "enabled = yes" in line and "bindaddr" in line
    assert out.rstrip().endswith("exit 3")


async def test_connect_timeout_like_a_firewall() -> None:
    with firewalled_port() as port:
        code, out = await run_check(cfg(port, connect_timeout=0.5))
    assert code == check.EXIT_CONNECT
    line = step(out, "tcp")
    assert line.startswith(f"[FAIL] tcp 127.0.0.1:{port}: no TCP connection within 0.5 s - ")
    assert "firewall" in line and f"TCP port {port}" in line


async def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*args: object, **kw: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # No resolver is asked: the loop's getaddrinfo is replaced for this test.
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fail)
    server = dataclasses.replace(cfg(5038), host="ami.example.invalid")
    code, out = await run_check(server)
    assert code == check.EXIT_CONNECT
    assert step(out, "dns").startswith(
        "[FAIL] dns: cannot resolve 'ami.example.invalid': Name or service not known - "
    )


async def test_tls_to_a_plain_ami_port(simulator: SimulatedAsterisk) -> None:
    server = dataclasses.replace(cfg(simulator.port), tls=True, tls_insecure_skip_verify=True)
    code, out = await run_check(server)
    assert code == check.EXIT_CONNECT
    line = step(out, "tls")
    assert line.startswith(f"[FAIL] tls 127.0.0.1:{simulator.port}: TLS handshake failed: ")
    assert "tlsenable" in line


# ---------------------------------------------------------------------------- banner


async def test_no_banner(scripted: Scripted) -> None:
    server = await scripted(banner=None)
    code, out = await run_check(cfg(server.port, connect_timeout=0.5))
    assert code == check.EXIT_NOT_AMI == 4
    line = step(out, "banner")
    assert line.startswith("[FAIL] banner: connected, but no AMI banner within 0.5 s - ")
    assert "--ami.tls" in line


async def test_closed_before_banner(scripted: Scripted) -> None:
    server = await scripted(on_connect=close_at_once)
    code, out = await run_check(cfg(server.port))
    assert code == check.EXIT_NOT_AMI
    assert "authlimit" in step(out, "banner")


async def test_not_ami(scripted: Scripted) -> None:
    server = await scripted(on_connect=greet_and_ignore("SSH-2.0-OpenSSH_9.2"))
    code, out = await run_check(cfg(server.port))
    assert code == check.EXIT_NOT_AMI
    assert step(out, "banner").startswith(
        "[FAIL] banner: 'SSH-2.0-OpenSSH_9.2' is not AMI - another service listens on port "
    )
    assert "login" not in out


# ---------------------------------------------------------------------------- login


@pytest.mark.parametrize("username", ["exporter", "nosuchuser"])
async def test_authentication_failed(simulator: SimulatedAsterisk, username: str) -> None:
    server = dataclasses.replace(cfg(simulator.port, secret=WRONG), username=username)
    code, out = await run_check(server)
    assert code == check.EXIT_LOGIN == 5
    line = step(out, "login")
    assert line.startswith(f"[FAIL] login as '{username}': Authentication failed - ")
    for part in ("wrong secret", "unknown user", "permit/deny ACL", "security log", "NOTICE"):
        assert part in line
    assert WRONG not in out and SECRET not in out
    assert "action" not in out


async def test_login_already_in_use(scripted: Scripted) -> None:
    server = await scripted(on_action={"Login": login_in_use})
    code, out = await run_check(cfg(server.port))
    assert code == check.EXIT_LOGIN
    line = step(out, "login")
    assert line.startswith("[FAIL] login as 'exporter': Login Already In Use - ")
    assert "allowmultiplelogin" in line


async def test_login_timeout(monkeypatch: pytest.MonkeyPatch, scripted: Scripted) -> None:
    monkeypatch.setattr(check, "LOGIN_TIMEOUT_MIN", 0.5)
    server = await scripted(on_action={"Login": silence})
    code, out = await run_check(cfg(server.port, connect_timeout=0.5))
    assert code == check.EXIT_LOGIN
    assert step(out, "login").startswith("[FAIL] login as 'exporter': no answer within 0.5 s")


# ---------------------------------------------------------------------------- permissions


async def test_permission_denied_names_the_write_class(scripted: Scripted) -> None:
    server = await scripted(on_action={"CoreShowChannels": permission_denied})
    code, out = await run_check(cfg(server.port))
    assert code == check.EXIT_PERMISSION == 6
    assert step(out, "action CoreShowChannels") == (
        "[FAIL] action CoreShowChannels: Permission denied - the user lacks a write class for "
        "it: add 'write = reporting' (or system) to [exporter] in manager.conf, then "
        "'manager reload'"
    )
    assert step(out, "action CoreSettings").startswith("[ OK ]")
    assert step(out, "action Ping").startswith("[ OK ]")
    assert "active channels unknown" in step(out, "summary")


async def test_captured_answers_give_channels_and_uptime(scripted: Scripted) -> None:
    server = await scripted()
    code, out = await run_check(cfg(server.port))
    assert code == 0, out
    # 10 channels of 3 calls in the real CoreShowChannels capture; Uptime 0 in FullyBooted.
    assert step(out, "action CoreShowChannels").startswith(
        "[ OK ] action CoreShowChannels: allowed, 10 channels"
    )
    summary = step(out, "summary")
    assert "10 active channels in " in summary and "Asterisk up 0 s" in summary
    assert "39 calls processed" in summary
    assert [m.name for m in server.received][-1] == "Logoff"
    login = next(m for m in server.received if m.name == "Login")
    assert login.get("Events") == "on"


async def test_no_fully_booted_is_a_warning(scripted: Scripted) -> None:
    server = await scripted(events=[SUCCESSFUL_AUTH])  # read = security only
    code, out = await run_check(cfg(server.port))
    assert code == 0, out
    line = step(out, "events")
    assert line.startswith(
        "[WARN] events: no FullyBooted within 0.5 s (1 events, classes security)"
    )
    assert "read = system,call,security" in line
    assert out.rstrip().endswith("OK: 1 of 1 servers passed (1 warnings)")


async def test_no_events_at_all(scripted: Scripted) -> None:
    server = await scripted(events=[])
    code, out = await run_check(cfg(server.port))
    assert code == check.EXIT_PERMISSION
    line = step(out, "events")
    assert line.startswith("[FAIL] events: none within 0.5 s, not even FullyBooted - ")
    assert "read = system,call,security" in line


# ---------------------------------------------------------------------------- command line


async def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ami_exporter",
        "check",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_cli_wrong_secret_exit_code_and_no_secret(simulator: SimulatedAsterisk) -> None:
    code, out, err = await _run_cli(
        "--ami.address",
        f"127.0.0.1:{simulator.port}",
        env=clean_env(AMI_USERNAME="exporter", AMI_SECRET=WRONG),
    )
    assert code == 5, (out, err)
    assert "[FAIL] login as 'exporter': Authentication failed - " in out
    assert WRONG not in out + err


async def test_cli_success(simulator: SimulatedAsterisk, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    code, out, err = await _run_cli(
        "--ami.address",
        f"127.0.0.1:{simulator.port}",
        "--ami.secret-file",
        str(secret_file),
        "--ami.server-name",
        "dialer1",
        env=clean_env(AMI_USERNAME="exporter"),
    )
    assert code == 0, (out, err)
    assert out.startswith(f"== dialer1 (127.0.0.1:{simulator.port}), user 'exporter'\n")
    assert SECRET not in out + err


async def test_cli_several_servers(simulator: SimulatedAsterisk, tmp_path: Path) -> None:
    with closed_port() as port:
        config = tmp_path / "servers.yml"
        config.write_text(
            "servers:\n"
            f"  - {{name: good, address: '127.0.0.1:{simulator.port}', username: exporter}}\n"
            f"  - {{name: gone, address: '127.0.0.1:{port}', username: exporter}}\n"
        )
        code, out, err = await _run_cli(
            "--config.file", str(config), env=clean_env(AMI_SECRET=SECRET)
        )
    assert code == 3, (out, err)
    good, gone = out.split("== gone")
    assert "[ OK ] events: FullyBooted received" in good
    assert "[FAIL] tcp" in gone and "connection refused" in gone
    assert out.rstrip().endswith("FAILED: 1 of 2 servers (gone); exit 3")


@pytest.mark.parametrize(
    "args",
    [["--ami.address", "nope"], ["--demo"], ["--check.events-wait", "0"], ["--no-such-flag"]],
)
async def test_cli_bad_flags_exit_2(args: list[str]) -> None:
    code, out, err = await _run_cli(*args, env=clean_env(AMI_USERNAME="u", AMI_SECRET=SECRET))
    assert code == 2, (out, err)
    assert out == ""
    assert len(err.splitlines()) == 1 and "error:" in err
