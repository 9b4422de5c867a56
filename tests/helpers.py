"""What the tests share: captures, ports, AMI messages, subprocesses and the exporter harness.

Fixtures built on these live in ``conftest.py``; the test AMI server in ``amiserver.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter.ami.protocol import AMIParser, Message
from ami_exporter.client.connection import AMIClient
from ami_exporter.config.model import ServerConfig
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.server import WebServer
from ami_simulator.server import SimulatorConfig

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STOP_BUDGET = 2.0  # an orchestrator's usual grace period before SIGKILL

T = TypeVar("T")

# ---------------------------------------------------------------------------- captures


def read_capture(name: str) -> bytes:
    """Bytes of a capture in ``tests/fixtures``; ``*.gz`` files are gunzipped transparently."""
    data = (FIXTURES / name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data


@functools.cache
def _parsed(name: str) -> tuple[str | None, tuple[Message, ...]]:
    parser = AMIParser(expect_banner=not name.endswith((".sent", ".sent.gz")))
    messages = parser.feed(read_capture(name))
    return parser.banner, tuple(messages)


def capture_messages(name: str) -> list[Message]:
    """Every message of a capture, parsed (cached: treat the messages as read-only)."""
    return list(_parsed(name)[1])


def capture_events(name: str) -> list[Message]:
    return [m for m in _parsed(name)[1] if m.kind == "event"]


def capture_banner(name: str) -> str:
    banner = _parsed(name)[0]
    assert banner is not None, f"{name} has no banner line"
    return banner


def captured(name: str, predicate: Callable[[Message], bool], what: str = "") -> Message:
    """The first message of capture ``name`` that matches ``predicate``."""
    for msg in _parsed(name)[1]:
        if predicate(msg):
            return msg
    raise AssertionError(f"no {what or 'matching message'} in {name}")


class Capture:
    """The ``capture`` fixture: ``capture.raw(name)``, ``.messages(name)``, ``.events(name)``."""

    raw = staticmethod(read_capture)
    messages = staticmethod(capture_messages)
    events = staticmethod(capture_events)
    banner = staticmethod(capture_banner)
    find = staticmethod(captured)
    dir = FIXTURES


def replay_events(state: ServerState, name: str) -> ServerState:
    """Feed every event of capture ``name`` to ``state`` (and its banner, if any)."""
    banner = _parsed(name)[0]
    if banner is not None:
        state.apply_banner(banner)
    for msg in capture_events(name):
        state.handle_event(msg)
    return state


def core_settings_answer() -> Message:
    """The real CoreSettings answer (05-commands.admin): Asterisk 22.10.1, AMI 11.0.0."""
    return captured("05-commands.admin.raw", lambda m: m.get("AsteriskVersion") is not None)


# ---------------------------------------------------------------------------- messages


def ev(name: str, **fields: str) -> Message:
    """An ``Event: <name>`` message with ``fields`` in order (for feeding a ServerState)."""
    return Message("event", name, [("Event", name), *fields.items()])


def newchannel(
    uid: str, channel: str = "", linkedid: str = "", state: str = "Up", **fields: str
) -> Message:
    return ev(
        "Newchannel",
        Channel=channel or f"PJSIP/trunk-{uid}",
        ChannelStateDesc=state,
        Uniqueid=uid,
        Linkedid=linkedid or uid,
        **fields,
    )


def hangup(uid: str, channel: str = "", cause: str = "16", **fields: str) -> Message:
    return ev(
        "Hangup",
        Channel=channel or f"PJSIP/trunk-{uid}",
        Uniqueid=uid,
        Linkedid=uid,
        Cause=cause,
        **fields,
    )


def listed_channel(uid: str, channel: str = "", linkedid: str = "", state: str = "Up") -> Message:
    """A ``CoreShowChannel`` list item (its ActionID is added when it is sent)."""
    return ev(
        "CoreShowChannel",
        Channel=channel or f"PJSIP/trunk-{uid}",
        ChannelStateDesc=state,
        Uniqueid=uid,
        Linkedid=linkedid or uid,
    )


class FakeClock:
    """A settable clock: wall and monotonic time in one, moved by hand.

    A :class:`~ami_exporter.state.clock.Clock` for ``ServerState(clock=...)``, and callable
    for the status page's history.
    """

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- ports


def free_port() -> int:
    """A loopback port free right now (for a process that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, not listening: connect gets refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def firewalled_port() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered, like a firewall that drops packets.

    A listening socket that never accepts, its accept queue filled: Linux then drops further
    SYNs, so a connect neither succeeds nor is refused; it times out.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ---------------------------------------------------------------------------- simulator


def simulator_config(**overrides: Any) -> SimulatorConfig:
    """The tests' simulator: any free port, no generated traffic, fast logins and calls."""
    settings: dict[str, Any] = {
        "port": 0,
        "calls_per_second": 0,
        "auth_delay": 0.05,
        "ring_time": 0.05,
        "seed": 1,
    }
    settings.update(overrides)
    return SimulatorConfig(**settings)


# ---------------------------------------------------------------------------- exporter harness

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def server_config(port: int, name: str = "test", secret: str = "s3cret", **kw: Any) -> ServerConfig:
    kw.setdefault("ping_interval", 5.0)
    kw.setdefault("resync_interval", 60.0)
    kw.setdefault("connect_timeout", 2.0)
    return ServerConfig(name, "127.0.0.1", port, "exporter", secret, **kw)


@dataclass
class Exporter:
    """The real exporter pieces (clients, state, collector, HTTP) in the test's event loop."""

    states: list[ServerState]
    clients: list[AMIClient]
    web: WebServer

    @property
    def state(self) -> ServerState:
        return self.states[0]

    @property
    def client(self) -> AMIClient:
        return self.clients[0]

    def live(self) -> int:
        """Live channels of the first server, from the aggregates."""
        return sum(self.state.channels_by_tech.values())

    async def scrape_text(self, accept: str = "") -> str:
        url = f"http://127.0.0.1:{self.web.port}/metrics"
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})

        def fetch() -> str:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
                return str(resp.read().decode())

        return await asyncio.to_thread(fetch)

    async def scrape(self) -> Samples:
        out: Samples = {}
        for family in text_string_to_metric_families(await self.scrape_text()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    async def timed_scrape(self) -> tuple[float, Samples]:
        start = time.monotonic()
        samples = await self.scrape()
        return time.monotonic() - start, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def samples_of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` on the loop until it is true (the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def client_buffered(exp: Exporter) -> int | None:
    """Bytes the first client's parser holds (None between sessions)."""
    return exp.client.buffered_bytes


def client_write_buffer(exp: Exporter) -> int:
    protocol = exp.client._protocol
    assert protocol is not None and protocol.transport is not None
    return protocol.transport.get_write_buffer_size()


@contextlib.asynccontextmanager
async def running_exporter(
    *servers: ServerConfig, resync_grace: float = 0.2, backoff_scale: float = 1.0
) -> AsyncIterator[Exporter]:
    states = [ServerState(s.name, resync_grace=resync_grace) for s in servers]
    web = WebServer(build_registry(states), states, host="127.0.0.1", port=0)
    await web.start()
    clients = [
        AMIClient(s, st, backoff_scale=backoff_scale) for s, st in zip(servers, states, strict=True)
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        yield Exporter(states, clients, web)
    finally:
        await asyncio.wait([asyncio.create_task(c.stop()) for c in clients], timeout=2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await web.stop()


# ---------------------------------------------------------------------------- processes

PROMETHEUS_HINT = "apt-get install prometheus (Debian's package, as .ci/run does)"


def require_binary(*names: str, install: str) -> str:
    """The path of the first of ``names`` found on PATH (or beside this interpreter, for a
    virtualenv that is not activated); a missing tool fails the test, never skips it."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if path is not None:
            return path
    pytest.fail(f"{names[0]} not found on PATH: {install}", pytrace=False)


def clean_env(**extra: str) -> dict[str, str]:
    """No AMI_* from the developer's shell; the package importable from this checkout.

    Coverage's own variables pass through, so ``pytest --cov`` measures the subprocesses too.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    env.update(extra)
    return env


def run_exporter(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    """``python -m ami_exporter ARGS`` that must exit by itself (bad input, --version)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "ami_exporter", *args],
            cwd=cwd,
            env=env or clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"{args!r} was accepted: still running after {timeout} s\n{err}")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, nothing on stdout, one ``ami-exporter: error:`` line on stderr: that line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("ami-exporter: error: "), lines[0]
    return lines[0]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> T:
    """Poll ``predicate`` (blocking) until it is truthy; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} while waiting for {what}")
        try:
            result = predicate()
            if result:
                return result
            last = result
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Proc:
    """A background process whose stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.out_path = cwd / f"{name}.stdout"
        self.err_path = cwd / f"{name}.stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def signal_and_wait(self, signum: int, timeout: float = STOP_BUDGET) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {timeout} s of signal {signum}; stderr:\n{self.stderr}")
        return code, time.monotonic() - start

    def stop(self) -> None:
        """SIGTERM (so coverage data is written), then SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_simulator_process(
    procs: list[Proc], cwd: Path, username: str, secret: str, name: str = "sim"
) -> int:
    """``python -m ami_simulator`` on a free port, once it accepts connections."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ami_simulator",
        "--listen",
        f"127.0.0.1:{port}",
        "--username",
        username,
        "--calls-per-second",
        "0",
    ]
    sim = Proc(argv, cwd, clean_env(AMI_SECRET=secret), name)
    procs.append(sim)

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_until(listening, 10, f"simulator {name} on port {port}", sim.proc)
    return port


def start_exporter_process(
    procs: list[Proc], cwd: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[Proc, int]:
    """``python -m ami_exporter --web.listen-address 127.0.0.1:<free> ARGS``, not waited on."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ami_exporter",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        *args,
    ]
    exp = Proc(argv, cwd, env or clean_env(), "exporter")
    procs.append(exp)
    return exp, port


def secret_file(directory: Path, secret: str, mode: int = 0o600, name: str = "secret") -> Path:
    path = directory / name
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


def metric_values(body: str, family_name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of one family in an exposition."""
    for family in text_string_to_metric_families(body):
        if family.name == family_name:
            return {s.labels[label]: s.value for s in family.samples}
    return {}


# ---------------------------------------------------------------------------- certificates


@dataclass
class PKI:
    dir: Path

    def crt(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")


def _write_leaf(directory: Path, name: str, cert: trustme.LeafCert) -> None:
    cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}.crt"))
    key = directory / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)


def make_pki(directory: Path) -> PKI:
    """``ca``; ``server`` (127.0.0.1 and localhost), ``other-host`` (pbx.example) and
    ``client``, issued by ``ca``; ``rogue-ca`` and ``rogue-client`` (a client certificate from a
    CA nobody trusts). Files ``<name>.crt`` and ``<name>.key`` (mode 0600) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ami-exporter tests")
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    _write_leaf(directory, "server", ca.issue_cert("127.0.0.1", "localhost"))
    _write_leaf(directory, "other-host", ca.issue_cert("pbx.example"))
    _write_leaf(directory, "client", ca.issue_cert("scraper.example", common_name="client"))
    rogue = trustme.CA(organization_name="nobody trusts this CA")
    rogue.cert_pem.write_to_path(str(directory / "rogue-ca.crt"))
    _write_leaf(directory, "rogue-client", rogue.issue_cert("scraper.example"))
    return PKI(directory)
