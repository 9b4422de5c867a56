"""``POST /-/reload`` (``--web.enable-lifecycle``): the SIGHUP reload over HTTP, as Prometheus.

The status codes and texts are Prometheus 2.42's (Debian's), observed with curl: GET and HEAD
405 ``Only POST or PUT requests allowed``, POST and PUT 403 ``Lifecycle API is not enabled.``
without the flag, 200 with an empty body after a good reload, 500 ``failed to reload config:
...`` after a bad one; other methods 405. The exporter runs as a process against
:class:`~amiserver.TestAMIServer` instances of the test's loop (as in ``test_reload.py``).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import pytest
from amiserver import TestAMIServer
from helpers import (
    Proc,
    Samples,
    ev,
    http_get,
    require_binary,
    running_exporter,
    samples_of,
    server_config,
    start_exporter_process,
    value,
    wait_for,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter import __version__

pytestmark = pytest.mark.e2e

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
SUCCESSFUL = "ami_exporter_config_last_reload_successful"
TIMEOUT = 15.0


def request(
    port: int, method: str, path: str = "/-/reload", auth: tuple[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


async def call(port: int, method: str, **kw: object) -> tuple[int, str, dict[str, str]]:
    return await asyncio.to_thread(request, port, method, **kw)  # type: ignore[arg-type]


async def scrape(port: int, auth: tuple[str, str] | None = None) -> Samples:
    status, body, _ = await call(port, "GET", path="/metrics", auth=auth)
    assert status == 200, (status, body)
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def events_of(samples: Samples, server: str) -> float:
    rows = samples_of(samples, "asterisk_ami_events_total")
    return sum(n for labels, n in rows.items() if ("server", server) in labels)


def servers_yaml(*servers: tuple[str, TestAMIServer, str]) -> str:
    lines = ["servers:"]
    for name, ami, extra in servers:
        lines += [
            f"  - name: {name}",
            f"    address: 127.0.0.1:{ami.port}",
            "    username: exporter",
            f"    secret: {ami.secret}",
        ]
        if extra:
            lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


async def until(check: Callable[[], Awaitable[object]], what: str, exporter: Proc) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        assert exporter.proc.poll() is None, exporter.stderr
        try:
            if await check():
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{exporter.stderr}")


async def stop(exporter: Proc) -> int:
    code, _ = await asyncio.to_thread(exporter.signal_and_wait, signal.SIGTERM)
    return code


async def test_post_reload_keeps_unchanged_counters_restarts_changed_and_rejects_bad(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    kept, changed = await ami_server(), await ami_server()
    users = {"prom": "pw-Reload-1"}
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(users["prom"].encode(), bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    auth = ("prom", users["prom"])
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx-kept", kept, ""), ("pbx-changed", changed, "")))
    args = ["--config.file", str(config), "--web.config.file", str(web), "--web.enable-lifecycle"]
    exporter, port = start_exporter_process(procs, tmp_path, args)

    async def both_up() -> bool:
        samples = await scrape(port, auth)
        return all(
            value(samples, "asterisk_ami_up", server=n) == 1.0 for n in ("pbx-kept", "pbx-changed")
        )

    await until(both_up, "both servers up", exporter)
    # Counters of each server, above what a fresh session would count.
    for ami in (kept, changed):
        for _ in range(3):
            ami.connections[0].write(ev("PeerStatus", Peer="PJSIP/t", PeerStatus="Reachable"))

    async def counted() -> bool:
        samples = await scrape(port, auth)
        return events_of(samples, "pbx-kept") >= 5 and events_of(samples, "pbx-changed") >= 5

    await until(counted, "the extra events counted", exporter)
    before = await scrape(port, auth)

    # Behind the same basic auth as every path; GET is not a reload.
    assert (await call(port, "POST"))[0] == 401
    status, body, headers = await call(port, "GET", auth=auth)
    assert (status, body) == (405, "Only POST or PUT requests allowed")
    assert headers["allow"] == "POST, PUT"
    assert (await call(port, "DELETE", auth=auth))[0] == 405

    # One server changes (an option), the other does not.
    config.write_text(
        servers_yaml(("pbx-kept", kept, ""), ("pbx-changed", changed, "queues: true"))
    )
    status, body, _ = await call(port, "POST", auth=auth)
    assert (status, body) == (200, "")
    assert "POST /-/reload: reloading --config.file" in exporter.stderr

    async def relogged() -> bool:
        samples = await scrape(port, auth)
        return (
            len(changed.logins) == 2
            and value(samples, "asterisk_ami_up", server="pbx-changed") == 1.0
        )

    await until(relogged, "the changed server logged in again", exporter)
    after = await scrape(port, auth)
    # The unchanged server: the same session and counters, counting on.
    assert len(kept.logins) == 1 and len(kept.connections) == 1
    assert events_of(after, "pbx-kept") == events_of(before, "pbx-kept")
    # The changed one: a new session with fresh counters (fewer than before the reload).
    assert events_of(after, "pbx-changed") < events_of(before, "pbx-changed")
    assert value(after, "asterisk_ami_connection_attempts_total", server="pbx-changed") == 1.0
    assert value(after, SUCCESSFUL) == 1.0

    # A bad file: 500 naming file:line; the running configuration stays.
    config.write_text(servers_yaml(("pbx-kept", kept, ""), ("pbx-changed", changed, "bogus: 1")))
    status, body, _ = await call(port, "PUT", auth=auth)
    assert status == 500
    assert body.startswith(f"failed to reload config: {config}:")
    assert "unknown server key 'bogus'" in body
    samples = await scrape(port, auth)
    assert value(samples, SUCCESSFUL) == 0.0
    assert value(samples, "asterisk_ami_up", server="pbx-kept") == 1.0
    assert value(samples, "asterisk_ami_up", server="pbx-changed") == 1.0
    assert len(kept.logins) == 1 and len(changed.logins) == 2
    assert "Traceback" not in exporter.stderr
    # SIGHUP is still the same reload.
    config.write_text(servers_yaml(("pbx-kept", kept, "")))
    exporter.proc.send_signal(signal.SIGHUP)

    async def removed() -> bool:
        return "pbx-changed" not in str(await scrape(port, auth))

    await until(removed, "the removed server's series gone", exporter)
    assert await stop(exporter) == 0


async def test_reload_is_forbidden_without_the_flag(
    tmp_path: Path, procs: list[Proc], ami_server: AMIServerFactory
) -> None:
    ami = await ami_server()
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml(("pbx", ami, "")))
    exporter, port = start_exporter_process(procs, tmp_path, ["--config.file", str(config)])

    async def up() -> bool:
        return value(await scrape(port), "asterisk_ami_up", server="pbx") == 1.0

    await until(up, "pbx up", exporter)
    for method in ("POST", "PUT"):
        assert (await call(port, method))[:2] == (403, "Lifecycle API is not enabled.")
    for method in ("GET", "HEAD"):
        status, _, headers = await call(port, method)
        assert status == 405 and headers["allow"] == "POST, PUT"
    assert len(ami.logins) == 1  # nothing was reloaded
    assert "reloading" not in exporter.stderr
    assert await stop(exporter) == 0


async def test_the_landing_page_lists_reload_only_when_enabled(
    ami_server: AMIServerFactory,
) -> None:
    ami = await ami_server()
    async with running_exporter(server_config(ami.port, name="pbx")) as exporter:
        await wait_for(lambda: exporter.state.up, 5, "login")
        web = exporter.web
        page = (await call(web.port, "GET", path="/"))[1]
        assert "/-/reload" not in page

        async def reload() -> str | None:
            return None

        web.reload = reload
        page = (await call(web.port, "GET", path="/"))[1]
        assert "<code>/-/reload</code>" in page
        assert (await call(web.port, "POST"))[:2] == (200, "")

        async def refused() -> str | None:
            return "servers.yml:3: unknown server key 'x'"

        web.reload = refused
        status, body, _ = await call(web.port, "POST")
        assert (status, body) == (
            500,
            "failed to reload config: servers.yml:3: unknown server key 'x'\n",
        )


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
]


def test_landing_page_fields_in_headless_chromium(tmp_path: Path, procs: list[Proc]) -> None:
    """exporter-toolkit's landing page fields (name, description, version, links) at the top of
    the status page, as a browser renders it: with --web.enable-lifecycle, the reload too."""
    browser = require_binary(
        "chromium",
        "chromium-browser",
        install="apt-get install -y --no-install-recommends chromium (Debian); .ci/run does",
    )
    exporter, port = start_exporter_process(
        procs, tmp_path, ["--demo", "--web.enable-lifecycle", "--collector.queues"]
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_get(base + "/-/ready")[0] == 200, 30, "the demo ready", exporter.proc)
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", base + "/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "landing.png"
    screenshot = subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,900", base + "/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    page = dom.stdout
    about = page.split('<section class="about"')[1].split("</section>")[0]
    assert "<h2>AMI Exporter</h2>" in about
    assert "Prometheus exporter for the Asterisk Manager Interface (AMI)" in about
    assert f"<div>Version: {__version__}</div>" in about
    links = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>: ([^<]+)</li>', about)
    assert [(href, text) for href, text, _ in links] == [
        ("/metrics", "Metrics"),
        ("/-/healthy", "Health"),
        ("/-/ready", "Readiness"),
    ]
    assert "<li><code>/-/reload</code>: POST or PUT" in about
    # The demo server's collectors, as --collector.queues set them.
    assert "collectors on: peers, trunks, rtp, queues" in page
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
