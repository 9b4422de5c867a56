"""SIGHUP reloads the configuration files, as Prometheus does; the exporter runs as a process.

The AMI servers are :class:`~amiserver.TestAMIServer` instances in the test's event loop, so
each Login and Logoff the exporter sends is seen; every wait is on the loop (the servers keep
answering meanwhile), on what /metrics or the log shows.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import bcrypt
import pytest
from amiserver import TestAMIServer
from helpers import (
    PKI,
    STOP_BUDGET,
    FakeClock,
    Proc,
    Samples,
    clean_env,
    ev,
    http_get,
    samples_of,
    server_config,
    start_exporter_process,
    value,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.cli.fleet import Fleet
from ami_exporter.web.history import History

pytestmark = pytest.mark.e2e

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
T = TypeVar("T")

SUCCESSFUL = "ami_exporter_config_last_reload_successful"
SUCCESS_TIME = "ami_exporter_config_last_reload_success_timestamp_seconds"
TIMEOUT = 15.0  # generous: a shared 2-core machine; every wait ends at its event


# ---------------------------------------------------------------------------- helpers


def servers_yaml(*servers: tuple[str, TestAMIServer], extra: str = "") -> str:
    lines = ["servers:"]
    for name, ami in servers:
        lines += [
            f"  - name: {name}",
            f"    address: 127.0.0.1:{ami.port}",
            "    username: exporter",
            f"    secret: {ami.secret}",
        ]
        if extra:
            lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


async def get(port: int, path: str = "/metrics", scheme: str = "http") -> tuple[int, str]:
    return await asyncio.to_thread(http_get, f"{scheme}://127.0.0.1:{port}{path}")


async def scrape(port: int) -> Samples:
    status, body = await get(port)
    assert status == 200, (status, body)
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def servers_in(samples: Samples) -> set[str]:
    """Every ``server`` label value of the exposition."""
    return {v for (_, labels), _ in samples.items() for k, v in labels if k == "server"}


def events_of(samples: Samples, server: str) -> float:
    rows = samples_of(samples, "asterisk_ami_events_total")
    return sum(n for labels, n in rows.items() if ("server", server) in labels)


async def until(
    check: Callable[[], Awaitable[T | None]], what: str, exporter: Proc, timeout: float = TIMEOUT
) -> T:
    """Poll ``check`` on the loop until it returns a truthy value; fail if the exporter dies."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        code = exporter.proc.poll()
        if code is not None:
            how = (
                f"was killed by signal {-code} (exit {128 - code})"
                if code < 0
                else f"exited {code}"
            )
            pytest.fail(f"the exporter {how} waiting for {what}:\n{exporter.stderr}")
        try:
            result = await check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if result:
                return result
            last = result
        await asyncio.sleep(0.05)
    pytest.fail(
        f"timed out after {timeout} s waiting for {what} (last {last!r}):\n{exporter.stderr}"
    )


async def until_up(port: int, exporter: Proc, *names: str) -> Samples:
    async def check() -> Samples | None:
        samples = await scrape(port)
        up = all(value(samples, "asterisk_ami_up", server=n) == 1.0 for n in names)
        return samples if up else None

    return await until(check, f"{', '.join(names)} up", exporter)


async def until_logged(exporter: Proc, pattern: str, after: int = 0) -> str:
    """The first line of the exporter's log, from line ``after`` on, matching ``pattern``."""

    async def check() -> str | None:
        lines = exporter.stderr.splitlines()[after:]
        return next((ln for ln in lines if re.search(pattern, ln)), None)

    return await until(check, f"a log line matching {pattern!r}", exporter)


def log_length(exporter: Proc) -> int:
    return len(exporter.stderr.splitlines())


def logoffs(ami: TestAMIServer) -> int:
    return sum(1 for name in ami.actions if name.lower() == "logoff")


async def stop(exporter: Proc) -> int:
    """SIGTERM, waited on in a thread: the servers of this loop answer the Logoffs."""
    code, _ = await asyncio.to_thread(exporter.signal_and_wait, signal.SIGTERM)
    return code


# ---------------------------------------------------------------------------- servers


async def test_sighup_adds_removes_and_keeps_servers_and_rejects_bad_files(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    kept, gone, new = await ami_server(), await ami_server(), await ami_server()
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx-kept", kept), ("pbx-gone", gone)))
    exporter, port = start_exporter_process(procs, tmp_path, ["--config.file", str(config)])
    before = await until_up(port, exporter, "pbx-kept", "pbx-gone")

    # Keep one, remove one, add one.
    config.write_text(servers_yaml(("pbx-kept", kept), ("pbx-new", new)))
    exporter.proc.send_signal(signal.SIGHUP)

    async def reloaded() -> Samples | None:
        samples = await scrape(port)
        done = value(samples, "asterisk_ami_up", server="pbx-new") == 1.0
        return samples if done and "pbx-gone" not in servers_in(samples) else None

    after = await until(reloaded, "pbx-new up and pbx-gone gone", exporter)
    assert exporter.proc.poll() is None  # today: killed by SIGHUP, exit 129
    assert servers_in(after) == {"pbx-kept", "pbx-new"}
    assert value(before, SUCCESSFUL) == value(after, SUCCESSFUL) == 1.0  # start counts
    started, success_time = value(before, SUCCESS_TIME), value(after, SUCCESS_TIME)
    assert started is not None and success_time is not None and success_time >= started
    # The kept server: the same session (no reconnect, no new Login), the same counters.
    assert len(kept.logins) == 1 and len(kept.connections) == 1
    assert logoffs(kept) == 0
    attempts = value(after, "asterisk_ami_connection_attempts_total", server="pbx-kept")
    assert attempts == 1.0
    assert events_of(after, "pbx-kept") == events_of(before, "pbx-kept") > 0
    kept.connections[0].write(ev("PeerStatus", Peer="PJSIP/trunk", PeerStatus="Reachable"))
    counted = events_of(before, "pbx-kept") + 1

    async def kept_counting() -> bool:
        return events_of(await scrape(port), "pbx-kept") == counted

    await until(kept_counting, "the kept session's next event counted on", exporter)
    # The removed one logged off; the added one logged in once.
    assert logoffs(gone) == 1
    assert len(new.logins) == 1
    _, page = await get(port, "/")
    assert "pbx-new" in page and "pbx-gone" not in page
    assert (await get(port, "/-/ready"))[0] == 200

    # Bad files: each rejected with its file:line, the running configuration kept.
    bad_files = {
        "servers:\n  - name: pbx-x\n    address: [127.0.0.1\n": r"servers\.yml:\d+: invalid YAML",
        servers_yaml(
            ("pbx-kept", kept), ("pbx-kept", new)
        ): r"servers\.yml:\d+: name: duplicate server name",
        servers_yaml(("pbx-kept", kept)).replace(
            "address", "adress"
        ): r"servers\.yml:\d+: unknown server key",
    }
    for text, pattern in bad_files.items():
        config.write_text(text)
        mark = log_length(exporter)
        exporter.proc.send_signal(signal.SIGHUP)
        line = await until_logged(exporter, "reload failed", after=mark)
        assert "level=error" in line and re.search(pattern, line), line
        samples = await scrape(port)
        assert value(samples, SUCCESSFUL) == 0.0
        assert value(samples, SUCCESS_TIME) == success_time
        assert servers_in(samples) == {"pbx-kept", "pbx-new"}
        assert value(samples, "asterisk_ami_up", server="pbx-kept") == 1.0
    config.unlink()  # unreadable
    mark = log_length(exporter)
    exporter.proc.send_signal(signal.SIGHUP)
    line = await until_logged(exporter, "reload failed", after=mark)
    assert "level=error" in line and "cannot read" in line and str(config) in line, line
    assert len(kept.logins) == len(new.logins) == 1  # nothing reconnected meanwhile
    assert "Traceback" not in exporter.stderr

    # A good file again: the gauge recovers; SIGTERM still logs every server off, exit 0.
    config.write_text(servers_yaml(("pbx-kept", kept), ("pbx-new", new)))
    exporter.proc.send_signal(signal.SIGHUP)

    async def recovered() -> bool:
        return value(await scrape(port), SUCCESSFUL) == 1.0

    await until(recovered, "a successful reload", exporter)
    assert len(kept.logins) == len(new.logins) == 1  # an unchanged file changes nothing
    assert await stop(exporter) == 0
    assert logoffs(kept) == logoffs(new) == 1


async def test_sighup_restarts_a_changed_server_with_fresh_state(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    changed, other = await ami_server(), await ami_server()
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx", changed), ("other", other)))
    exporter, port = start_exporter_process(procs, tmp_path, ["--config.file", str(config)])
    await until_up(port, exporter, "pbx", "other")

    # Any field of the server's entry differs: here its options.
    text = servers_yaml(("pbx", changed), extra="queues: true") + servers_yaml(
        ("other", other)
    ).removeprefix("servers:\n")
    config.write_text(text)
    exporter.proc.send_signal(signal.SIGHUP)

    async def relogged() -> Samples | None:
        if len(changed.logins) < 2:
            return None
        return await until_up(port, exporter, "pbx")

    after = await until(relogged, "a second Login of the changed server", exporter)
    # The old session logged off before the new one logged in.
    names = [name.lower() for name in changed.actions]
    assert names.index("logoff") < len(names) - names[::-1].index("login") - 1
    assert len(changed.connections) == 2
    # Fresh state: its counters start again (one connection attempt, the new session's).
    assert value(after, "asterisk_ami_connection_attempts_total", server="pbx") == 1.0
    assert "QueueStatus" in changed.actions  # the new options apply
    # The other server was not touched.
    assert len(other.logins) == 1 and logoffs(other) == 0
    assert await stop(exporter) == 0


async def test_sighup_without_files_has_nothing_to_reload(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    ami = await ami_server()
    args = ["--ami.address", f"127.0.0.1:{ami.port}", "--ami.username", "exporter"]
    env = clean_env(AMI_SECRET=ami.secret)
    exporter, port = start_exporter_process(
        procs, tmp_path, [*args, "--ami.server-name", "pbx"], env
    )
    await until_up(port, exporter, "pbx")
    exporter.proc.send_signal(signal.SIGHUP)
    line = await until_logged(exporter, "nothing to reload")
    assert "level=info" in line
    samples = await until_up(port, exporter, "pbx")
    assert value(samples, SUCCESSFUL) == 1.0
    assert len(ami.logins) == 1 and logoffs(ami) == 0
    assert await stop(exporter) == 0
    assert logoffs(ami) == 1


async def test_sighup_rereads_the_secret_file(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    ami = await ami_server(secret="old-Secret-5a1f")
    secret = tmp_path / "secret"
    secret.write_text("old-Secret-5a1f\n")
    secret.chmod(0o600)
    args = ["--ami.address", f"127.0.0.1:{ami.port}", "--ami.username", "exporter"]
    exporter, port = start_exporter_process(
        procs, tmp_path, [*args, "--ami.server-name", "pbx", "--ami.secret-file", str(secret)]
    )
    await until_up(port, exporter, "pbx")
    # The secret is rotated: on the server, then in the file.
    ami.secret = "new-Secret-77c2"
    secret.write_text("new-Secret-77c2\n")
    exporter.proc.send_signal(signal.SIGHUP)

    async def relogged() -> bool:
        return any(login.ok for login in ami.logins[1:])

    await until(relogged, "a Login with the new secret", exporter)
    await until_up(port, exporter, "pbx")
    assert await stop(exporter) == 0
    assert "Secret-" not in exporter.stderr + exporter.stdout


# ---------------------------------------------------------------------------- web config


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _web_config(pki: PKI, cert: str, users: dict[str, str]) -> str:
    lines = [
        "tls_server_config:",
        f"  cert_file: {pki.crt(cert)}",
        f"  key_file: {pki.key(cert)}",
        "basic_auth_users:",
        *(f"  {user}: '{_hash(password)}'" for user, password in users.items()),
    ]
    return "\n".join(lines) + "\n"


def _https_get(port: int, pki: PKI, auth: tuple[str, str]) -> tuple[int, bytes]:
    """Status of /metrics over TLS with basic auth, and the server certificate (DER)."""
    import base64
    import http.client

    ctx = ssl.create_default_context(cafile=pki.crt("ca"))
    ctx.check_hostname = False  # "other-host" is for pbx.example; the CA is what counts here
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        token = base64.b64encode(":".join(auth).encode()).decode()
        conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
        status = conn.getresponse().status
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return status, der
    finally:
        conn.close()


def _der(pem_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())


async def test_sighup_reloads_web_users_and_certificate(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory, pki: PKI
) -> None:
    ami = await ami_server()
    web = tmp_path / "web.yml"
    web.write_text(_web_config(pki, "server", {"prom": "first-pass"}))
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx", ami)))
    exporter, port = start_exporter_process(
        procs, tmp_path, ["--config.file", str(config), "--web.config.file", str(web)]
    )

    async def served(auth: tuple[str, str]) -> tuple[int, bytes]:
        return await asyncio.to_thread(_https_get, port, pki, auth)

    async def listening() -> bool:
        return (await served(("prom", "first-pass")))[0] == 200

    await until(listening, "https /metrics", exporter)
    assert (await served(("prom", "first-pass")))[1] == _der(pki.crt("server"))

    web.write_text(_web_config(pki, "other-host", {"prom": "second-pass"}))
    exporter.proc.send_signal(signal.SIGHUP)
    await until_logged(exporter, "configuration reloaded")
    status, der = await served(("prom", "second-pass"))
    assert status == 200 and der == _der(pki.crt("other-host"))  # the next connection's
    assert (await served(("prom", "first-pass")))[0] == 401

    # TLS cannot be turned off without a restart: refused, and still served over TLS.
    web.write_text("basic_auth_users:\n  prom: '" + _hash("third") + "'\n")
    mark = log_length(exporter)
    exporter.proc.send_signal(signal.SIGHUP)
    line = await until_logged(exporter, "reload failed", after=mark)
    assert "level=error" in line and f"{web}: turning TLS off takes a restart" in line, line
    assert (await served(("prom", "second-pass")))[0] == 200
    assert len(ami.logins) == 1  # the servers file did not change: nothing reconnected
    assert await stop(exporter) == 0


async def test_sigterm_during_a_reload_that_never_ends_still_exits_at_once(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    ami = await ami_server()
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx", ami)))
    exporter, port = start_exporter_process(procs, tmp_path, ["--config.file", str(config)])
    await until_up(port, exporter, "pbx")
    fifo = tmp_path / "secret.fifo"  # nobody ever writes it: reading it blocks for good
    os.mkfifo(fifo)
    config.write_text(
        servers_yaml(("pbx", ami)).replace(f"secret: {ami.secret}", f"secret_file: {fifo}")
    )
    exporter.proc.send_signal(signal.SIGHUP)
    await until_logged(exporter, "SIGHUP: reloading")
    # Whether the file is refused or still being read, the exporter serves the old servers...
    samples = await until_up(port, exporter, "pbx")
    assert len(ami.logins) == 1
    # ...and stops within the orchestrator's grace period, its server logged off.
    code, elapsed = await asyncio.to_thread(exporter.signal_and_wait, signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert elapsed < STOP_BUDGET
    assert logoffs(ami) == 1
    assert value(samples, SUCCESSFUL) is not None


async def test_fleet_keeps_the_history_of_kept_servers_and_drops_the_removed(
    ami_server: AMIServerFactory,
) -> None:
    kept, gone = await ami_server(), await ami_server()
    fleet = Fleet()
    history = History(fleet.states, clock=FakeClock())
    fleet.start([server_config(kept.port, "kept"), server_config(gone.port, "gone")])
    try:
        await wait_for(lambda: all(s.up for s in fleet.states), what="both up")
        kept_state, gone_state = fleet.states
        history.sample()
        changes = await fleet.apply([server_config(kept.port, "kept")], budget=1.0)
        assert (changes.unchanged, changes.removed) == (("kept",), ("gone",))
        assert fleet.states == [kept_state]  # the same object, in the same shared list
        history.sample()
        assert len(history.series(kept_state)) == 2  # its sparkline goes on
        assert history.series(gone_state) == []  # dropped with the server
        assert logoffs(gone) == 1 and logoffs(kept) == 0
    finally:
        await fleet.stop(1.0)
    assert logoffs(kept) == 1
