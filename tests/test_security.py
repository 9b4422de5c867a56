"""Security: --web.config.file (TLS, client certificates, basic auth), AMI over TLS, secrets
kept out of every output, and label cardinality under hostile input."""

from __future__ import annotations

import asyncio
import base64
import http.client
import shutil
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import pytest
from helpers import (
    PKI,
    Exporter,
    Proc,
    clean_env,
    ev,
    one_error_line,
    run_exporter,
    secret_file,
    server_config,
    start_exporter_process,
    start_simulator_process,
    value,
    wait_for,
    wait_until,
)

from ami_exporter.config.errors import ConfigError
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.auth import BasicAuth
from ami_exporter.web.security import load_web_security
from ami_exporter.web.server import WebServer
from ami_simulator.server import SimulatedAsterisk

PASSWORD = "Scrape-Pass-7c1f"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests
SimulatorFactory = Callable[..., Awaitable[SimulatedAsterisk]]
ExporterFactory = Callable[..., Awaitable[Exporter]]


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _client_ctx(pki: PKI, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.crt("ca"))
    if cert is not None:
        ctx.load_cert_chain(pki.crt(cert), pki.key(cert))
    return ctx


def _get(
    port: int, *, ctx: ssl.SSLContext | None = None, auth: str | None = None, path: str = "/metrics"
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if ctx is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


async def _web(config_path: Path) -> WebServer:
    states = [ServerState("test")]
    cfg = load_web_security(str(config_path))
    web = WebServer(
        build_registry(states),
        states,
        host="127.0.0.1",
        port=0,
        ssl_context=cfg.ssl_context,
        basic_auth=cfg.basic_auth,
    )
    await web.start()
    return web


# ---------------------------------------------------------------------------- web: basic auth


async def test_basic_auth_wrong_or_missing_password_gets_401(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: {HASH}\n")
    web = await _web(path)
    try:
        for auth in (
            None,
            _auth("prometheus", "wrong"),
            _auth("nobody", PASSWORD),
            "Basic !!notbase64",
            "Bearer x",
        ):
            status, headers, _ = await asyncio.to_thread(_get, web.port, auth=auth)
            assert status == 401, auth
            assert headers["WWW-Authenticate"].startswith("Basic ")
        for path_ in ("/", "/-/healthy", "/metrics"):
            status, _, _ = await asyncio.to_thread(_get, web.port, path=path_)
            assert status == 401, path_
        status, _, body = await asyncio.to_thread(
            _get, web.port, auth=_auth("prometheus", PASSWORD)
        )
        assert status == 200 and b"asterisk_ami_up" in body
        assert web.basic_auth is not None
        checks = web.basic_auth.checks
        for _ in range(5):  # cached: no more bcrypt work for the same credentials
            status, _, _ = await asyncio.to_thread(
                _get, web.port, auth=_auth("prometheus", PASSWORD)
            )
            assert status == 200
        assert web.basic_auth.checks == checks
    finally:
        await web.stop()


async def test_bcrypt_runs_off_the_event_loop() -> None:
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()  # ~0.2 s per check
    auth = BasicAuth({"u": slow.encode()})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    assert not await auth.authorize(_auth("u", "bad"))
    elapsed = time.monotonic() - start
    task.cancel()
    assert elapsed > 0.05
    # The loop kept running during the check (it would be ~0 if bcrypt blocked it).
    assert ticks >= elapsed / 0.01 * 0.5


# ---------------------------------------------------------------------------- web: TLS


async def test_tls_with_required_client_certificate(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.crt('server')}\n"
        f"  key_file: {pki.key('server')}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.crt('ca')}\n"
        "  min_version: TLS12\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n"
    )
    web = await _web(path)
    good = _client_ctx(pki, "client")
    try:
        status, _, body = await asyncio.to_thread(
            _get, web.port, ctx=good, auth=_auth("prometheus", PASSWORD)
        )
        assert status == 200 and b"asterisk_ami_up" in body
        status, _, _ = await asyncio.to_thread(_get, web.port, ctx=good)
        assert status == 401  # the certificate does not replace the password
        for ctx in (_client_ctx(pki), _client_ctx(pki, "rogue-client")):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                await asyncio.to_thread(_get, web.port, ctx=ctx, auth=_auth("prometheus", PASSWORD))
        # Plain HTTP to the TLS port: a quick, clean failure, never a hang or a 200.
        start = time.monotonic()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            await asyncio.to_thread(_get, web.port)
        assert time.monotonic() - start < 3
        # ...and the server still serves TLS afterwards.
        status, _, _ = await asyncio.to_thread(
            _get, web.port, ctx=good, auth=_auth("prometheus", PASSWORD)
        )
        assert status == 200
    finally:
        await web.stop()


async def test_tls_min_version_is_enforced(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.crt('server')}\n"
        f"  key_file: {pki.key('server')}\n  min_version: TLS13\n"
    )
    web = await _web(path)
    try:
        old = _client_ctx(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(_get, web.port, ctx=old)
        status, _, _ = await asyncio.to_thread(_get, web.port, ctx=_client_ctx(pki))
        assert status == 200
    finally:
        await web.stop()


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  bogus: 1\n", 4, "unknown"),
        ("nonsense: 1\n", 1, "unknown key"),
        ("basic_auth_users:\n  u: plain-password\n", 2, "bcrypt"),
        ("basic_auth_users:\n  u: $2b$10$short\n", 2, "invalid"),
        (
            "tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n"
            "  client_auth_type: RequireAnyClientCert\n",
            4,
            "RequireAnyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  client_ca_file: CA\n",
            4,
            "client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            4,
            "client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  min_version: SSL3\n",
            4,
            "min_version",
        ),
        ("tls_server_config:\n  cert_file: CERT\n", 1, "key_file"),
        ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: KEY\n", 2, "nonexistent"),
        (
            "tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  cipher_suites: [x]\n",
            4,
            "not supported",
        ),
        ("basic_auth_users: [\n", 2, "invalid YAML"),
    ],
)
def test_web_config_errors_name_file_and_line(
    pki: PKI, tmp_path: Path, body: str, line: int, needle: str
) -> None:
    path = tmp_path / "web.yml"
    body = body.replace("CERT", pki.crt("server")).replace("KEY", pki.key("server"))
    path.write_text(body.replace("CA\n", pki.crt("ca") + "\n"))
    with pytest.raises(ConfigError) as info:
        load_web_security(str(path))
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert needle in message, message
    assert "plain-password" not in message
    assert "\n" not in message


def test_web_config_relative_paths_and_key_permissions(pki: PKI, tmp_path: Path) -> None:
    for name in ("server.crt", "server.key"):
        shutil.copy(Path(pki.dir) / name, tmp_path / name)
    (tmp_path / "server.key").chmod(0o644)
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "http_server_config:\n  http2: true\n"
    )
    warnings: list[str] = []
    cfg = load_web_security(str(tmp_path / "web.yml"), warnings.append)
    assert cfg.ssl_context is not None and cfg.basic_auth is None
    assert any("readable by other users" in w for w in warnings), warnings


@pytest.mark.e2e
def test_web_config_flag_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  u: hunter2-plain\n")
    result = run_exporter(
        ["--ami.username", "u", "--web.config.file", str(path)],
        tmp_path,
        env=clean_env(AMI_SECRET="x"),
    )
    line = one_error_line(result)
    assert f"{path}:2" in line and "hunter2-plain" not in line


# ---------------------------------------------------------------------------- AMI over TLS


def _server_ctx(pki: PKI, name: str = "server") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt(name), pki.key(name))
    return ctx


@pytest.fixture
async def tls_simulator(pki: PKI, make_simulator: SimulatorFactory) -> SimulatedAsterisk:
    return await make_simulator(seed=5, ssl_context=_server_ctx(pki))


@pytest.mark.e2e
async def test_ami_over_tls_verified(
    pki: PKI, tls_simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    exp = await exporter(server_config(tls_simulator.port, tls=True, tls_ca_file=pki.crt("ca")))
    await wait_for(lambda: exp.state.up, what="login over TLS")
    tls_simulator.start_call("answered", hold_time=30)
    await wait_for(lambda: exp.live() == 2, what="call")
    m = await exp.scrape()
    assert value(m, "asterisk_ami_up", server="test") == 1
    assert value(m, "asterisk_active_calls", server="test") == 1


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"tls_server_name": "pbx.example"}, "tls"),  # name mismatch
        ({}, "tls"),  # system CAs do not know the test CA
    ],
)
async def test_ami_tls_verification_failures(
    pki: PKI,
    tls_simulator: SimulatedAsterisk,
    exporter: ExporterFactory,
    options: dict[str, str],
    error: str,
) -> None:
    kw: dict[str, object] = {"tls": True, **options}
    if options:
        kw["tls_ca_file"] = pki.crt("ca")
    exp = await exporter(server_config(tls_simulator.port, **kw))
    await wait_for(lambda: exp.state.connection_errors[error] >= 1, what="tls error")
    m = await exp.scrape()
    assert value(m, "asterisk_ami_connection_errors_total", server="test", reason="tls") >= 1
    assert value(m, "asterisk_ami_up", server="test") == 0
    assert "certificate" in exp.state.last_error.lower()


@pytest.mark.e2e
async def test_ami_tls_insecure_skip_verify(
    tls_simulator: SimulatedAsterisk, exporter: ExporterFactory
) -> None:
    exp = await exporter(server_config(tls_simulator.port, tls=True, tls_insecure_skip_verify=True))
    await wait_for(lambda: exp.state.up, what="login without verification")


@pytest.mark.e2e
async def test_ami_tls_client_against_plain_server_and_back(
    pki: PKI,
    tls_simulator: SimulatedAsterisk,
    make_simulator: SimulatorFactory,
    exporter: ExporterFactory,
) -> None:
    plain = await make_simulator()
    a = await exporter(server_config(plain.port, tls=True, tls_ca_file=pki.crt("ca")))
    b = await exporter(server_config(tls_simulator.port, connect_timeout=0.3))
    await wait_for(lambda: a.state.connection_errors["tls"] >= 1, what="tls error")
    await wait_for(lambda: b.state.connection_errors["timeout"] >= 1, what="no banner")
    assert not a.state.up and not b.state.up


@pytest.mark.e2e
def test_ami_tls_config_errors(tmp_path: Path) -> None:
    line = one_error_line(
        run_exporter(
            ["--ami.username", "u", "--ami.tls", "--ami.tls-ca-file", str(tmp_path / "none.pem")],
            tmp_path,
            env=clean_env(AMI_SECRET="x"),
        )
    )
    assert "--ami.tls-ca-file" in line and "none.pem" in line
    line = one_error_line(
        run_exporter(
            ["--ami.username", "u", "--ami.tls-server-name", "x"],
            tmp_path,
            env=clean_env(AMI_SECRET="x"),
        )
    )
    assert "--ami.tls" in line
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "servers:\n  - address: 127.0.0.1:5039\n    username: u\n    secret: x\n"
        "    tls: yes please\n"
    )
    line = one_error_line(run_exporter(["--config.file", str(cfg)], tmp_path))
    assert f"{cfg}:5" in line


# ---------------------------------------------------------------------------- secrets


@pytest.mark.e2e
def test_secrets_never_in_logs_metrics_pages_errors_or_argv(
    pki: PKI, tmp_path: Path, procs: list[Proc]
) -> None:
    ami_secret = "Ami-Secret-3b9d0e"
    sim_port = start_simulator_process(procs, tmp_path, "u", ami_secret)
    web_cfg = tmp_path / "web.yml"
    web_cfg.write_text(
        f"tls_server_config:\n  cert_file: {pki.crt('server')}\n"
        f"  key_file: {pki.key('server')}\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n"
    )
    path = secret_file(tmp_path, ami_secret)
    args = [
        "--ami.address",
        f"127.0.0.1:{sim_port}",
        "--ami.username",
        "u",
        "--ami.secret-file",
        str(path),
        "--web.config.file",
        str(web_cfg),
        "--log.level",
        "debug",
    ]
    exporter, port = start_exporter_process(procs, tmp_path, args)
    ctx = _client_ctx(pki)
    auth = _auth("prometheus", PASSWORD)

    def logged_in() -> bool:
        status, _, body = _get(port, ctx=ctx, auth=auth)
        return (
            status == 200
            and b'asterisk_ami_up{server="127.0.0.1:' in body
            and (b"} 1.0" in body.split(b"asterisk_ami_up{", 1)[1][:80])
        )

    wait_until(logged_in, 15, "login behind TLS + basic auth", exporter.proc)
    pages = [_get(port, ctx=ctx, auth=auth, path=p)[2] for p in ("/metrics", "/", "/-/ready")]
    pages.append(_get(port, ctx=ctx, auth=_auth("prometheus", "wrong"))[2])
    cmdline = Path(f"/proc/{exporter.proc.pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{exporter.proc.pid}/environ").read_bytes()
    code, _ = exporter.signal_and_wait(signal.SIGTERM)
    assert code == 0
    out = exporter.stdout + exporter.stderr
    assert "debug" in out
    for secret in (ami_secret, PASSWORD):
        assert secret.encode() not in cmdline
        assert secret.encode() not in environ
        assert secret not in out
        for page in pages:
            assert secret.encode() not in page


# ---------------------------------------------------------------------------- cardinality


def _series(states: list[ServerState]) -> dict[str, int]:
    out: dict[str, int] = {}
    for family in build_registry(states).collect():
        out[family.name] = out.get(family.name, 0) + len(family.samples)
    return out


def test_hostile_label_values_keep_cardinality_bounded() -> None:
    state = ServerState("test")
    n = 100_000
    start = time.monotonic()
    for i in range(n):
        uid = f"1.{i}"
        tech = f"Tech{i}"
        state.handle_event(
            ev(
                "Newchannel",
                Channel=f"{tech}/x-{i}",
                Uniqueid=uid,
                Linkedid=uid,
                ChannelStateDesc=f"State {i}",
            )
        )
        state.handle_event(
            ev("Newstate", Channel=f"{tech}/x-{i}", Uniqueid=uid, ChannelStateDesc=f"Weird{i}")
        )
        state.handle_event(ev("DialEnd", DialStatus=f"STATUS{i}"))
        state.handle_event(ev("OriginateResponse", Response="Failure", Reason=str(i)))
        state.handle_event(ev("InvalidPassword", Service=f"Svc{i}"))
        state.handle_event(ev(f"Event{i}"))  # parsed path
        state.count_events([f"Raw{i}".encode()])  # the client's name-only fast path
        state.count_events([b"\xff\xfe" + str(i).encode()])
        state.handle_event(
            ev("Hangup", Channel=f"{tech}/x-{i}", Uniqueid=uid, Cause=str(i % 1000 - 100))
        )
    elapsed = time.monotonic() - start
    series = _series([state])
    total = sum(series.values())
    print(f"{n} hostile values of each kind in {elapsed:.1f} s -> {total} series: {series}")
    assert not state.channels and state.active_calls == 0
    # Open-ended values fold into 'other' past small per-server caps.
    assert series["asterisk_active_channels"] <= 33
    assert series["asterisk_channels_created"] <= 33 * 2  # _total and _created
    assert series["asterisk_ami_events"] <= 20 * 2
    assert series["asterisk_dials"] <= 11 * 2
    assert series["asterisk_originates"] <= 9 * 2
    assert series["asterisk_security_events"] <= 17 * 2
    assert series["asterisk_active_channels_by_state"] <= 66  # the cap found by this test
    assert total < 1000
    # Memory bound on raw names kept for counting.
    assert len(state.event_counts) <= 513


def test_hostile_values_one_kind_at_a_time_stay_small() -> None:
    """Each kind alone (100,000 distinct technologies / causes / event names) adds a few
    dozen series at most."""
    kinds = {
        "techs": lambda i: [ev("Hangup", Channel=f"T{i}/x", Uniqueid=f"u{i}", Cause="16")],
        "causes": lambda i: [ev("Hangup", Channel="PJSIP/x", Uniqueid=f"u{i}", Cause=str(i))],
        "events": lambda i: [ev(f"E{i}")],
    }
    for kind, make in kinds.items():
        state = ServerState("test")
        for i in range(100_000):
            for msg in make(i):
                state.handle_event(msg)
            if kind == "events":
                state.count_events([f"R{i}".encode()])
        total = sum(_series([state]).values())
        assert total < 300, (kind, total)
