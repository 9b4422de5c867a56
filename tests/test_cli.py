"""The command line, run as a real process: bad input exits 2 with one stderr line, --version,
secrets kept out of the output, SIGTERM/SIGINT, --demo and a multi-server config file."""

from __future__ import annotations

import signal
import socket
import time
import urllib.error
from pathlib import Path

import pytest
from helpers import (
    STOP_BUDGET,
    Proc,
    clean_env,
    free_port,
    http_get,
    metric_values,
    one_error_line,
    run_exporter,
    secret_file,
    start_exporter_process,
    start_simulator_process,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from ami_exporter import __version__


def up_values(body: str) -> dict[str, float]:
    return metric_values(body, "asterisk_ami_up", "server")


# ---------------------------------------------------------------------------- bad input


def test_unknown_flag(tmp_path: Path) -> None:
    line = one_error_line(run_exporter(["--no-such-flag"], tmp_path))
    assert "--no-such-flag" in line


def test_bad_ami_address(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(["--ami.address", "nonsense", "--ami.username", "u"], tmp_path, env)
    )
    assert "--ami.address" in line
    assert "nonsense" in line


def test_ami_port_out_of_range(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(["--ami.address", "127.0.0.1:70000", "--ami.username", "u"], tmp_path, env)
    )
    assert "--ami.address" in line
    assert "70000" in line


def test_listen_port_out_of_range(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(["--web.listen-address", ":0", "--ami.username", "u"], tmp_path, env)
    )
    assert "--web.listen-address" in line


def test_missing_username(tmp_path: Path) -> None:
    line = one_error_line(run_exporter([], tmp_path, clean_env(AMI_SECRET="x")))
    assert "--ami.username" in line
    assert "AMI_USERNAME" in line


def test_missing_secret(tmp_path: Path) -> None:
    line = one_error_line(run_exporter(["--ami.username", "u"], tmp_path))
    assert "AMI_SECRET" in line
    assert "--ami.secret-file" in line


def test_negative_ping_interval(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(["--ami.username", "u", "--ami.ping-interval", "-1"], tmp_path, env)
    )
    assert "--ami.ping-interval" in line


def test_nonexistent_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = one_error_line(
        run_exporter(["--ami.username", "u", "--ami.secret-file", str(missing)], tmp_path)
    )
    assert "--ami.secret-file" in line
    assert str(missing) in line


def test_empty_secret_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "")
    line = one_error_line(
        run_exporter(["--ami.username", "u", "--ami.secret-file", str(path)], tmp_path)
    )
    assert "empty" in line


def test_telemetry_path_without_slash(tmp_path: Path) -> None:
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(["--ami.username", "u", "--web.telemetry-path", "nometrics"], tmp_path, env)
    )
    assert "--web.telemetry-path" in line
    assert "nometrics" in line


@pytest.mark.parametrize("path", ["/my metrics", "/metrics?format=x", "/metrics#x"])
def test_telemetry_path_that_no_request_can_match(tmp_path: Path, path: str) -> None:
    """A path with a space, '?' or '#' can never equal a request's path (the web server splits
    the request line on spaces and drops the query), so every scrape would get 404: reject it."""
    env = clean_env(AMI_SECRET="x")
    line = one_error_line(
        run_exporter(
            [
                "--ami.username",
                "u",
                "--web.telemetry-path",
                path,
                "--web.listen-address",
                f"127.0.0.1:{free_port()}",
            ],
            tmp_path,
            env,
            timeout=3,
        )
    )
    assert "--web.telemetry-path" in line


def test_version(tmp_path: Path) -> None:
    result = run_exporter(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"ami-exporter {__version__}")
    assert len(result.stdout.splitlines()) == 1


# ---------------------------------------------------------------------------- config files

GOOD_SERVER = """\
  - name: {name}
    address: 127.0.0.1:5038
    username: u
    secret: x
"""


def config_error(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "servers.yml"
    path.write_text(text)
    line = one_error_line(run_exporter(["--config.file", str(path)], tmp_path))
    return line, str(path)


def test_config_invalid_yaml(tmp_path: Path) -> None:
    text = (
        "servers:\n"  # 1
        "  - name: a\n"  # 2
        "    address: a: b\n"  # 3: mapping values are not allowed here
        "    username: u\n"  # 4
        "    secret: x\n"  # 5
    )
    line, path = config_error(tmp_path, text)
    assert f"{path}:3:" in line
    assert "invalid YAML" in line


def test_config_unknown_server_key(tmp_path: Path) -> None:
    text = "servers:\n" + GOOD_SERVER.format(name="a") + "    colour: blue\n"  # line 6
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line
    assert "colour" in line


def test_config_unknown_top_level_key(tmp_path: Path) -> None:
    text = "servers:\n" + GOOD_SERVER.format(name="a") + "server:\n  - {}\n"  # line 6
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line
    assert "'server'" in line


def test_config_missing_address(tmp_path: Path) -> None:
    text = (
        "servers:\n"  # 1
        + GOOD_SERVER.format(name="a")  # 2-5
        + "  - name: b\n"  # 6
        "    username: u\n"  # 7
        "    secret: x\n"  # 8
    )
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line
    assert "address" in line


def test_config_duplicate_server_names(tmp_path: Path) -> None:
    text = "servers:\n" + GOOD_SERVER.format(name="a") + GOOD_SERVER.format(name="a")
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line  # the second "- name: a"
    assert "duplicate" in line
    assert "'a'" in line


def test_config_secret_and_secret_file(tmp_path: Path) -> None:
    secret_file(tmp_path, "x")
    text = (
        "servers:\n"  # 1
        + GOOD_SERVER.format(name="a")  # 2-5
        + "  - name: b\n"  # 6
        "    address: 127.0.0.1:5039\n"  # 7
        "    username: u\n"  # 8
        "    secret: x\n"  # 9
        f"    secret_file: {tmp_path / 'secret'}\n"  # 10
    )
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line
    assert "secret_file" in line


def test_config_bad_interval(tmp_path: Path) -> None:
    text = "servers:\n" + GOOD_SERVER.format(name="a") + "    ping_interval: -3\n"  # line 6
    line, path = config_error(tmp_path, text)
    assert f"{path}:6:" in line
    assert "ping_interval" in line


def test_config_bad_address(tmp_path: Path) -> None:
    text = (
        "servers:\n"  # 1
        "  - name: a\n"  # 2
        "    address: 127.0.0.1:99999\n"  # 3
        "    username: u\n"  # 4
        "    secret: x\n"  # 5
    )
    line, path = config_error(tmp_path, text)
    assert f"{path}:3:" in line
    assert "99999" in line


def test_config_error_never_echoes_secret(tmp_path: Path) -> None:
    text = (
        "servers:\n"
        "  - name: a\n"
        "    address: 127.0.0.1:5038\n"
        "    username: u\n"
        "    secret: TopSecretValue123\n"
        "    bogus: 1\n"
    )
    line, _ = config_error(tmp_path, text)
    assert "TopSecretValue123" not in line


def test_config_missing_file(tmp_path: Path) -> None:
    line = one_error_line(run_exporter(["--config.file", str(tmp_path / "none.yml")], tmp_path))
    assert "none.yml" in line


# ---------------------------------------------------------------------------- secrets


def test_secret_never_logged_on_login_failure(tmp_path: Path, procs: list[Proc]) -> None:
    sim_port = start_simulator_process(procs, tmp_path, "u", "the-right-one")
    wrong = "Wr0ng-S3cret-4f9c2b7e"
    path = secret_file(tmp_path, wrong)
    exporter, port = start_exporter_process(
        procs,
        tmp_path,
        [
            "--ami.address",
            f"127.0.0.1:{sim_port}",
            "--ami.username",
            "u",
            "--ami.secret-file",
            str(path),
            "--log.level",
            "debug",
        ],
    )

    def login_failure_counted() -> bool:
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        for family in text_string_to_metric_families(body):
            if family.name == "asterisk_ami_login_failures":
                return any(s.labels["reason"] == "auth" and s.value >= 1 for s in family.samples)
        return False

    wait_until(login_failure_counted, 10, "a counted auth failure", exporter.proc)
    _, page = http_get(f"http://127.0.0.1:{port}/")
    _, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    code, _ = exporter.signal_and_wait(signal.SIGTERM)
    assert code == 0
    out, err = exporter.stdout, exporter.stderr
    assert "failed" in err.lower(), err  # the failure is logged...
    assert wrong not in out + err  # ...without the secret
    assert wrong not in page + metrics
    assert "debug" in err  # debug logging was really on


def test_world_readable_secret_file_warns(tmp_path: Path, procs: list[Proc]) -> None:
    secret = "Readable-By-All-8d1e"
    path = secret_file(tmp_path, secret, mode=0o644)
    exporter, port = start_exporter_process(
        procs,
        tmp_path,
        [
            "--ami.address",
            f"127.0.0.1:{free_port()}",
            "--ami.username",
            "u",
            "--ami.secret-file",
            str(path),
        ],
    )
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{port}/-/healthy")[0] == 200,
        10,
        "/-/healthy",
        exporter.proc,
    )
    code, _ = exporter.signal_and_wait(signal.SIGTERM)
    assert code == 0
    err = exporter.stderr
    warnings = [ln for ln in err.splitlines() if str(path) in ln]
    assert warnings, err
    assert any("warn" in ln for ln in warnings), warnings
    assert secret not in err + exporter.stdout


def test_private_secret_file_does_not_warn(tmp_path: Path) -> None:
    # Stops at the missing user, after the secret file was read and its mode checked: the
    # same command warns about a world-readable file, and says nothing more for a 0600 one.
    path = secret_file(tmp_path, "x", mode=0o644)
    readable = run_exporter(["--ami.secret-file", str(path)], tmp_path)
    assert any(str(path) in ln and "warn" in ln for ln in readable.stderr.splitlines())
    path.chmod(0o600)
    line = one_error_line(run_exporter(["--ami.secret-file", str(path)], tmp_path))
    assert "--ami.username" in line


def test_world_readable_secret_file_in_config_warns(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "x", mode=0o644)
    conf = tmp_path / "servers.yml"
    conf.write_text(
        "servers:\n"
        "  - name: a\n"
        "    address: 127.0.0.1:5038\n"
        "    username: u\n"
        f"    secret_file: {path}\n"
        "  - name: a\n"  # duplicate name: stop after the secret file was read
        "    address: 127.0.0.1:5039\n"
        "    username: u\n"
        "    secret: y\n"
    )
    result = run_exporter(["--config.file", str(conf)], tmp_path)
    assert result.returncode == 2
    assert any(str(path) in ln and "warn" in ln for ln in result.stderr.splitlines())


# ---------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero(tmp_path: Path, procs: list[Proc], signum: int) -> None:
    sim_port = start_simulator_process(procs, tmp_path, "u", "sesame")
    exporter, port = start_exporter_process(
        procs,
        tmp_path,
        [
            "--ami.address",
            f"127.0.0.1:{sim_port}",
            "--ami.username",
            "u",
            "--ami.server-name",
            "pbx",
        ],
        clean_env(AMI_SECRET="sesame"),
    )
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200,
        10,
        "/-/ready",
        exporter.proc,
    )
    _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert up_values(body) == {"pbx": 1.0}
    code, took = exporter.signal_and_wait(signum)
    assert code == 0, exporter.stderr
    assert took < STOP_BUDGET
    assert "Traceback" not in exporter.stderr


def test_ami_address_without_host(tmp_path: Path, procs: list[Proc]) -> None:
    """``--ami.address :PORT`` must either be refused at start (exit 2) or mean localhost; it
    must not start an exporter that can never connect ("cannot resolve ''")."""
    sim_port = start_simulator_process(procs, tmp_path, "u", "sesame")
    exporter, port = start_exporter_process(
        procs,
        tmp_path,
        ["--ami.address", f":{sim_port}", "--ami.username", "u"],
        clean_env(AMI_SECRET="sesame"),
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if exporter.proc.poll() is not None:
            assert exporter.proc.returncode == 2, exporter.stderr
            assert len(exporter.stderr.splitlines()) == 1, exporter.stderr
            assert "--ami.address" in exporter.stderr
            return
        try:
            if http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    pytest.fail(f"--ami.address :{sim_port} neither refused nor connected:\n{exporter.stderr}")


def test_demo_mode(tmp_path: Path, procs: list[Proc]) -> None:
    exporter, port = start_exporter_process(procs, tmp_path, ["--demo"])

    def demo_up() -> bool:
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        return status == 200 and 'asterisk_ami_up{server="demo"} 1.0' in body

    wait_until(demo_up, 10, 'asterisk_ami_up{server="demo"} 1.0', exporter.proc)

    def calls_in_progress() -> bool:
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        for family in text_string_to_metric_families(body):
            if family.name == "asterisk_active_channels":
                return sum(s.value for s in family.samples) > 0
        return False

    # Stop in the middle of traffic, with live calls in the simulator.
    wait_until(calls_in_progress, 10, "live channels in the demo", exporter.proc)
    code, took = exporter.signal_and_wait(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert took < STOP_BUDGET
    assert "Traceback" not in exporter.stderr


def test_listen_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_exporter(
            ["--web.listen-address", f"127.0.0.1:{port}", "--ami.username", "u"],
            tmp_path,
            clean_env(AMI_SECRET="x"),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(port) in result.stderr


# ---------------------------------------------------------------------------- many servers


def test_multi_server_config(tmp_path: Path, procs: list[Proc]) -> None:
    port_a = start_simulator_process(procs, tmp_path, "ua", "secret-a", name="sim-a")
    port_b = start_simulator_process(procs, tmp_path, "ub", "secret-b", name="sim-b")
    path_b = secret_file(tmp_path, "secret-b", name="secret-b")
    conf = tmp_path / "servers.yml"
    conf.write_text(
        "servers:\n"
        "  - name: a\n"
        f"    address: 127.0.0.1:{port_a}\n"
        "    username: ua\n"
        "    secret: secret-a\n"
        "  - name: b\n"
        f"    address: 127.0.0.1:{port_b}\n"
        "    username: ub\n"
        f"    secret_file: {path_b}\n"
    )
    exporter, port = start_exporter_process(procs, tmp_path, ["--config.file", str(conf)])
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200,
        10,
        "/-/ready",
        exporter.proc,
    )
    _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert up_values(body) == {"a": 1.0, "b": 1.0}
    code, took = exporter.signal_and_wait(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert took < STOP_BUDGET
    err = exporter.stderr + exporter.stdout
    assert "secret-a" not in err
    assert "secret-b" not in err.replace(str(path_b), "")
