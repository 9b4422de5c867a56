"""Configuration and secrets under attack (issue #12): one line naming file:line, exit 2, no
traceback, no secret echoed; secrets redacted from what a server sends back; log lines that no
server text can forge.

* The YAML walker (``config/yaml.py``, shared by ``--config.file`` and ``--web.config.file``):
  tags, anchors and aliases refused with the advice to quote, keys that are lists, duplicate
  keys at every level (both lines), nesting, PyYAML's messages masked, both parsers (libyaml
  and PyYAML's own).
* The files read (``config/files.py``): regular files only, bounded in size; secret files
  UTF-8 and on one line.
* The CLI as a process, under a 1 GiB address-space limit and a time bound, for each input
  the issue lists.
* Redaction: a server that echoes the secret in its login error (status page, /metrics, logs,
  ``check``), and the log formatters (secrets in every field, control characters escaped).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from amiserver import AUTH_FAILED, Connection, TestAMIServer, reply
from helpers import (
    Exporter,
    clean_env,
    http_get,
    one_error_line,
    server_config,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ami_exporter.config.yaml as yaml_walker
from ami_exporter.ami.protocol import Message
from ami_exporter.cli import check
from ami_exporter.cli.logsetup import JSONFormatter, LogfmtFormatter, setup_logging
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.files import CONFIG_FILE_LIMIT, SECRET_FILE_LIMIT
from ami_exporter.config.servers import load_config_file
from ami_exporter.config.values import read_secret_file
from ami_exporter.config.web import load_web_config

pytestmark = pytest.mark.e2e

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
ExporterFactory = Callable[..., Awaitable[Exporter]]

SECRET = "Qx7-hunter2-Zk"  # distinctive: any substring of it in a message is a leak
DEFAULTS = {"ping_interval": 10.0, "resync_interval": 60.0, "connect_timeout": 5.0}
HEAD = "servers:\n  - name: a\n    address: 127.0.0.1:5038\n    username: u\n"  # lines 1-4


@pytest.fixture(params=["libyaml", "pyyaml"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every walker test runs with libyaml's parser and with PyYAML's own (the fallback)."""
    if request.param == "pyyaml":
        monkeypatch.setattr(yaml_walker, "_loader", yaml_walker._PyLoader)
    else:
        assert yaml_walker._loader.__name__ == "_CLoader", "PyYAML without libyaml"
    return str(request.param)


def config_error(tmp_path: Path, text: str, name: str = "servers.yml") -> str:
    """The ConfigError that loading ``text`` as a servers file gives (it must give one)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path), DEFAULTS)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


def secret_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "servers.yml"
    path.write_text(text)
    (server,) = load_config_file(str(path), DEFAULTS)
    return server.secret


# ---------------------------------------------------------------------------- the YAML walker


@pytest.mark.parametrize(
    ("first", "what"), [("!", "YAML tag"), ("*", "YAML alias"), ("&", "YAML anchor")]
)
def test_secret_starting_with_an_indicator_is_refused_with_advice_never_echoed(
    tmp_path: Path, parser: str, first: str, what: str
) -> None:
    message = config_error(tmp_path, HEAD + f"    secret: {first}{SECRET}\n")
    assert message.startswith("FILE:5: "), message
    assert what in message
    assert "quote it in single quotes" in message
    for part in ("hunter2", "Qx7", "Zk"):
        assert part not in message, message


@pytest.mark.parametrize(
    "value", ["!!int hunter2", "!!float hunter2", "!!timestamp hunter2", "!!binary aHVudGVy"]
)
def test_explicit_tags_never_crash_a_constructor(tmp_path: Path, parser: str, value: str) -> None:
    message = config_error(tmp_path, HEAD + f"    secret: {value}\n")
    assert message.startswith("FILE:5: ") and "YAML tag" in message
    assert "hunter" not in message and "aHVudGVy" not in message


def test_quoted_secrets_are_taken_as_written(tmp_path: Path, parser: str) -> None:
    for written, secret in [
        (f"'!{SECRET}'", f"!{SECRET}"),
        (f"'*{SECRET}'", f"*{SECRET}"),
        ("'it''s'", "it's"),
        (f"!!str {SECRET}", SECRET),  # the one tag allowed
        ("0123", "0123"),  # YAML 1.1 would make it the octal 83
        ("12:30", "12:30"),  # ... and this the sexagesimal 750
        ("yes", "yes"),  # ... and this True
        ("'null'", "null"),
    ]:
        assert secret_of(tmp_path, HEAD + f"    secret: {written}\n") == secret, written


def test_a_secret_that_is_a_comment_says_so(tmp_path: Path, parser: str) -> None:
    message = config_error(tmp_path, HEAD + f"    secret: #{SECRET}\n")
    assert message.startswith("FILE:5: ") and "comment: quote it" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "value",
    [
        f"@{SECRET}",
        f"`{SECRET}",
        f"%{SECRET}",
        f"|{SECRET}",
        f">{SECRET}",
        f'"\\q{SECRET}"',
        f'"\\x{SECRET}"',
        f"!{SECRET}!x y",
        f"'{SECRET}",
        f"{SECRET}: x",
        f"[{SECRET}",
    ],
)
def test_yaml_syntax_errors_never_quote_the_value(tmp_path: Path, parser: str, value: str) -> None:
    message = config_error(tmp_path, HEAD + f"    secret: {value}\n")
    assert message.startswith(("FILE:5: ", "FILE:6: ")), message
    assert "hunter2" not in message and "Qx7" not in message, message
    assert "quote" in message


# What may start a YAML token other than a plain scalar, alone and in pairs.
YAML_INDICATORS = [*"!&*@`|>%[]{}'\"#-?:,", "!!", "&&", "*&", "- ", "? ", "'\\", '"\\']
SECRET_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=["Cs", "Cc", "Zl", "Zp"],
    exclude_characters="\x85\ufeff",
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(st.sampled_from(YAML_INDICATORS), st.text(SECRET_CHARS, min_size=1, max_size=3)),
    st.text(SECRET_CHARS, max_size=12),
)
def test_no_unquoted_secret_is_ever_echoed(tmp_path: Path, head: str, tail: str) -> None:
    """Whatever an unquoted one-line secret is, it loads or the error does not contain it."""
    secret = head + "Qx7" + tail  # Qx7: a part no message of ours or PyYAML's contains
    path = tmp_path / "servers.yml"
    path.write_text(HEAD + f"    secret: {secret}\n", encoding="utf-8")
    try:
        load_config_file(str(path), DEFAULTS)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert "Qx7" not in message, message


def test_a_sequence_as_a_key_is_named_plainly(tmp_path: Path, parser: str) -> None:
    message = config_error(tmp_path, HEAD + "    secret: x\n    [a, b]: c\n")
    assert message == "FILE:6: a key must be a plain value, not a list or mapping"
    message = config_error(tmp_path, "? {servers: 1}\n: x\n")
    assert message.startswith("FILE:1: a key must be a plain value")


@pytest.mark.parametrize(
    ("text", "line", "first", "key"),
    [
        (HEAD + "    secret: x\n" + HEAD.replace("name: a", "name: b"), 6, 1, "servers"),
        (HEAD + "    secret: x\n    username: v\n", 6, 4, "username"),
        (HEAD + "    secret: x\n    secret: y\n", 6, 5, "secret"),
        (HEAD + "    secret: x\n    tls: {a: 1, a: 2}\n", 6, 6, "a"),
    ],
    ids=["top-level-servers", "server-key", "secret", "nested-flow-mapping"],
)
def test_duplicate_keys_are_refused_at_every_level_with_both_lines(
    tmp_path: Path, parser: str, text: str, line: int, first: int, key: str
) -> None:
    message = config_error(tmp_path, text)
    assert message == f"FILE:{line}: duplicate key {key!r} (first at line {first})"


def alias_bomb() -> str:
    """About 600 bytes that expand to 9**10 strings: the "billion laughs" in a name."""
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return HEAD + "    secret: x\n    name: {" + ", ".join(levels) + "}\n"


def test_an_alias_bomb_is_refused_before_any_expansion(tmp_path: Path, parser: str) -> None:
    started = time.monotonic()
    message = config_error(tmp_path, alias_bomb())
    assert time.monotonic() - started < 2.0  # generous: it is refused at the first anchor
    assert message.startswith("FILE:6: a value starting with '&' is a YAML anchor")


def test_aliases_are_refused_even_small_ones(tmp_path: Path, parser: str) -> None:
    text = "servers:\n  - &one {address: '127.0.0.1:1', username: u, secret: x}\n  - *one\n"
    assert config_error(tmp_path, text).startswith("FILE:2: a value starting with '&'")
    text = HEAD + "    secret: x\n  - <<: *base\n"
    assert config_error(tmp_path, text).startswith("FILE:6: a value starting with '*'")


def test_nesting_is_bounded(tmp_path: Path, parser: str) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    message = config_error(tmp_path, f"servers: {deep}\n")
    assert message == f"FILE:1: nested deeper than {yaml_walker.MAX_DEPTH} levels"


def test_control_characters_and_bad_utf8_in_the_file(tmp_path: Path, parser: str) -> None:
    message = config_error(tmp_path, HEAD + f"    secret: ab\x07{SECRET}\n")
    assert message.startswith("FILE:5: invalid YAML: control character U+0007")
    assert "hunter2" not in message
    path = tmp_path / "latin1.yml"
    path.write_bytes(HEAD.encode() + b"    secret: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yml:5: the file is not UTF-8 text$"):
        load_config_file(str(path), DEFAULTS)


def test_config_files_are_bounded_in_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    with path.open("wb") as file:  # sparse: 100 MB to stat, nothing to write
        file.write(b"servers:\n")
        file.truncate(100 * 1024 * 1024)
    with pytest.raises(ConfigError, match="larger than 1 MiB, the limit"):
        load_config_file(str(path), DEFAULTS)
    server = "  - {address: '127.0.0.1:5038', username: u, secret: x, name: s%06d}\n"
    count = (CONFIG_FILE_LIMIT - 9) // len(server % 0)
    lines = ["servers:\n"] + [server % i for i in range(count)]
    path.write_text("".join(lines))
    assert path.stat().st_size <= CONFIG_FILE_LIMIT
    assert len(load_config_file(str(path), DEFAULTS)) == len(lines) - 1  # just under: fine
    path.write_text("".join(lines) + server % 999_999)
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config_file(str(path), DEFAULTS)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_config_file_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = special_file(tmp_path, kind)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config_file(path, DEFAULTS)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_web_config(path)


# ---------------------------------------------------------------------------- the web config


BCRYPT = "$2b$12$" + "a" * 53


def web_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    return str(info.value).replace(str(path), "FILE")


def test_web_config_has_the_same_yaml_rules(tmp_path: Path, parser: str) -> None:
    users = f"basic_auth_users:\n  prometheus: {BCRYPT}\n"
    message = web_error(tmp_path, users + f"  other: !{SECRET}\n")
    assert message.startswith("FILE:3: a value starting with '!' is a YAML tag")
    assert "hunter2" not in message
    message = web_error(tmp_path, users + "  prometheus: *x\n")
    assert message.startswith("FILE:3: a value starting with '*' is a YAML alias")
    assert web_error(tmp_path, users + "  prometheus: x\n") == (
        "FILE:3: duplicate key 'prometheus' (first at line 2)"
    )
    assert web_error(tmp_path, users + users) == (
        "FILE:3: duplicate key 'basic_auth_users' (first at line 1)"
    )
    assert web_error(tmp_path, "basic_auth_users:\n  [a]: x\n").startswith(
        "FILE:2: a key must be a plain value"
    )


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_web_certificates_must_be_regular_files(tmp_path: Path, kind: str) -> None:
    """OpenSSL would wait forever for a FIFO's writer and read /dev/zero without end."""
    special = special_file(tmp_path, kind)
    message = web_error(tmp_path, f"tls_server_config:\n  cert_file: {special}\n  key_file: k\n")
    assert message.startswith("FILE:2: cert_file") and "not a regular file" in message


def test_ami_ca_file_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = special_file(tmp_path, "fifo")
    text = HEAD + f"    secret: x\n    tls: true\n    tls_ca_file: {fifo}\n"
    message = config_error(tmp_path, text)
    assert message.startswith("FILE:7: tls_ca_file: CA file") and "FIFO" in message


# ---------------------------------------------------------------------------- secret files


def special_file(tmp_path: Path, kind: str) -> str:
    if kind == "fifo":
        path = tmp_path / "fifo"
        if not path.exists():
            os.mkfifo(path)
        return str(path)
    if kind == "dev-zero":
        return "/dev/zero"
    return str(tmp_path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("fifo", r"is a FIFO \(named pipe\), not a regular file"), ("dev-zero", "is a device")],
)
def test_secret_file_must_be_a_regular_file(tmp_path: Path, kind: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=expected):
        read_secret_file(special_file(tmp_path, kind), "--ami.secret-file")
    assert time.monotonic() - started < 1.0  # no wait for a FIFO writer, no endless read


def test_secret_file_contents(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"caf\xe9-" + SECRET.encode() + b"\n")
    with pytest.raises(ConfigError) as info:
        read_secret_file(str(path), "--ami.secret-file")
    assert str(info.value).endswith("is not UTF-8 text (byte 4)")
    assert "hunter2" not in str(info.value)
    path.write_text(f"{SECRET}\nAction: Originate\n")  # would be a second header of the Login
    with pytest.raises(ConfigError, match="line break or a NUL, which AMI cannot carry"):
        read_secret_file(str(path), "--ami.secret-file")
    path.write_text("x" * (SECRET_FILE_LIMIT + 1))
    with pytest.raises(ConfigError, match="larger than 64 KiB, the limit"):
        read_secret_file(str(path), "--ami.secret-file")
    path.write_text(f"{SECRET}\r\n\n")
    assert read_secret_file(str(path), "--ami.secret-file") == SECRET


def test_a_secret_file_path_that_may_be_the_secret_is_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = config_error(tmp_path, HEAD + f"    secret_file: {SECRET}\n")
    assert message.startswith("FILE:5: secret_file: cannot read secret file (not shown")
    assert "hunter2" not in message
    message = config_error(tmp_path, HEAD + f"    secret_file: {tmp_path}/missing\n")
    assert f"'{tmp_path}/missing'" in message  # a path is still named


# ---------------------------------------------------------------------------- the CLI, a process

MEMORY_LIMIT_KB = 1024 * 1024  # 1 GiB of address space: an expansion dies, not the machine
CLI_TIMEOUT = 10.0


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The exporter as a process under ``ulimit -v`` that must exit (with a config error)."""
    command = f'ulimit -v {MEMORY_LIMIT_KB} && exec "$0" -m ami_exporter "$@"'
    try:
        return subprocess.run(
            ["/bin/sh", "-c", command, sys.executable, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args!r}: still running after {CLI_TIMEOUT} s (a hang or a slow load)")


def big_config(path: Path) -> None:
    """4 MiB of valid servers (flow style): PyYAML took about 17 s to compose this."""
    line = "  - {address: '127.0.0.1:%d', username: u, secret: x, name: s%d}\n"
    with path.open("w") as file:
        file.write("servers:\n")
        for i in range(4 * 1024 * 1024 // len(line)):
            file.write(line % (1000 + i % 60000, i))


def cli_case(  # noqa: PLR0911 - one return per case of the issue
    tmp_path: Path, case: str
) -> tuple[list[str], dict[str, str], str]:
    """``(args, env, the start of the expected error)`` of each input the issue lists."""
    env = clean_env()
    cfg = tmp_path / "servers.yml"
    args = ["--config.file", str(cfg)]
    bad_secret = {"bang": f"!{SECRET}", "star": f"*{SECRET}", "amp": f"&{SECRET}"}
    if case in bad_secret:
        cfg.write_text(HEAD + f"    secret: {bad_secret[case]}\n")
        return args, env, f"{cfg}:5: a value starting with"
    files = {"not-utf8": tmp_path / "latin1", "dev-zero": "/dev/zero", "fifo": tmp_path / "p"}
    if case in files:
        if case == "not-utf8":
            (tmp_path / "latin1").write_bytes(b"\xff\xfe" + SECRET.encode())
        if case == "fifo":
            os.mkfifo(tmp_path / "p")
        cfg.write_text(HEAD + f"    secret_file: {files[case]}\n")
        return args, env, f"{cfg}:5: secret_file: secret file"
    if case == "sequence-key":
        cfg.write_text(HEAD + "    secret: x\n    [a, b]: c\n")
        return args, env, f"{cfg}:6: a key must be a plain value"
    if case == "alias-bomb":
        cfg.write_text(alias_bomb())
        return args, env, f"{cfg}:6: a value starting with '&'"
    if case == "4-mib-config":
        big_config(cfg)
        return args, env, "--config.file: file"
    if case == "duplicate-servers":
        cfg.write_text(HEAD + "    secret: x\n" + HEAD.replace("5038", "5039") + "    secret: y\n")
        return args, env, f"{cfg}:6: duplicate key 'servers' (first at line 1)"
    env = clean_env(AMI_SECRET=SECRET)
    flags = ["--ami.username", "u"]
    if case == "secret-file-flag-fifo":
        os.mkfifo(tmp_path / "p")
        return [*flags, "--ami.secret-file", str(tmp_path / "p")], env, "--ami.secret-file:"
    if case == "env-secret-newline":
        env["AMI_SECRET"] = f"{SECRET}\nAction: Originate"
        return flags, env, "AMI_SECRET: the secret contains a line break"
    assert case == "web-cert-fifo", case
    os.mkfifo(tmp_path / "p")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'p'}\n  key_file: k\n")
    return [*flags, "--web.config.file", str(web)], env, f"{web}:2: cert_file"


CLI_CASES = [
    "bang",
    "star",
    "amp",
    "not-utf8",
    "sequence-key",
    "dev-zero",
    "fifo",
    "alias-bomb",
    "4-mib-config",
    "duplicate-servers",
    "secret-file-flag-fifo",
    "env-secret-newline",
    "web-cert-fifo",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_in_one_line_exit_2(tmp_path: Path, case: str) -> None:
    args, env, expected = cli_case(tmp_path, case)
    started = time.monotonic()
    result = run_cli(args, tmp_path, env)
    elapsed = time.monotonic() - started
    line = one_error_line(result)  # exit 2, nothing on stdout, one stderr line
    assert line.startswith(f"ami-exporter: error: {expected}"), line
    for part in ("hunter2", "Qx7"):
        assert part not in line
    assert elapsed < CLI_TIMEOUT


# ---------------------------------------------------------------------------- redaction


async def echo_secret(conn: Connection, msg: Message) -> bool:
    """A Login answer that quotes the secret it got, as some AMI proxies do."""
    text = f"login error: bad secret {msg.get('Secret')} for {msg.get('Username')}"
    conn.write(reply(msg, AUTH_FAILED, Message=text))
    await conn.drain()
    return False


async def test_a_secret_echoed_by_the_server_is_shown_nowhere(
    ami_server: AMIServerFactory, exporter: ExporterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ami = await ami_server(on_action={"Login": echo_secret})
    exp = await exporter(server_config(ami.port, secret=SECRET), backoff_scale=0.01)
    await wait_for(lambda: exp.state.login_failures["error"] >= 1, what="the echoed login error")
    assert ami.received[0].get("Secret") == SECRET  # it was sent, and echoed
    state = exp.state
    assert "bad secret <redacted> for exporter" in state.last_error
    assert SECRET not in state.last_error and SECRET not in state.last_problem
    status, page = await asyncio.to_thread(http_get, f"http://127.0.0.1:{exp.web.port}/")
    assert status == 200 and "bad secret &lt;redacted&gt;" in page
    metrics = await exp.scrape_text()
    for shown in (page, metrics, caplog.text):
        assert SECRET not in shown
        assert "hunter2" not in shown
    assert "bad secret <redacted>" in caplog.text


async def test_check_masks_a_secret_echoed_by_the_server(ami_server: AMIServerFactory) -> None:
    ami = await ami_server(on_action={"Login": echo_secret})
    report = await check.check_server(server_config(ami.port, secret=SECRET), events_wait=0.1)
    text = report.render()
    assert "bad secret ********" in text
    assert SECRET not in text and "hunter2" not in text
    assert report.exit_code == check.EXIT_LOGIN


def record(msg: str, *args: object, server: str | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("ami_exporter.client", logging.WARNING, __file__, 1, msg, args, None)
    if server is not None:
        rec.server = server
    return rec


EVIL = "evil\r\x1b[31mlevel=error msg=forged\n\x9b2J\u202edesrever\u2028\x7f\ud800"


def test_logfmt_escapes_control_characters() -> None:
    line = LogfmtFormatter().format(record("AMI session lost: %s", EVIL, server="pbx\x1b"))
    assert "\n" not in line and "\r" not in line
    for raw in ("\x1b", "\x9b", "\u202e", "\u2028", "\x7f", "\ud800"):
        assert raw not in line, repr(raw)
    assert 'server="pbx\\u001b"' in line
    msg = line.split(" msg=", 1)[1]
    assert msg.startswith('"') and msg.endswith('"')
    assert "\\u009b" in msg and "\\u202e" in msg and "\\u2028" in msg and "\\ud800" in msg
    assert json.loads(msg) == f"AMI session lost: {EVIL}"  # nothing lost, only escaped
    plain = LogfmtFormatter().format(record("no quotes needed"))
    assert 'msg="no quotes needed"' in plain
    assert LogfmtFormatter().format(record("x")).endswith(" msg=x")


def test_json_escapes_control_characters() -> None:
    line = JSONFormatter().format(record("got %s", EVIL))
    assert not any(c in line for c in "\x1b\x9b\u202e\u2028\x7f\ud800")
    assert "\n" not in line
    assert json.loads(line)["msg"] == f"got {EVIL}"
    assert json.loads(JSONFormatter().format(record("Müller")))["msg"] == "Müller"
    assert "Müller" in JSONFormatter().format(record("Müller"))  # readable, not \u00fc


@pytest.mark.parametrize("formatter", [LogfmtFormatter, JSONFormatter])
def test_every_field_of_a_record_is_redacted(formatter: type[logging.Formatter]) -> None:
    fmt = formatter([SECRET, "hunter2", ""])  # type: ignore[call-arg]
    try:
        raise ValueError(f"invalid literal: {SECRET!r}")
    except ValueError:
        rec = record("login with %s failed", SECRET, server=f"srv-{SECRET}")
        rec.exc_info = sys.exc_info()
    line = fmt.format(rec)
    assert SECRET not in line and "hunter2" not in line and "Qx7-" not in line
    assert line.count("<redacted>") == 3  # message, server, traceback (longest secret first)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_setup_logging_masks_the_configured_secrets(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("info", "logfmt", [SECRET])
    logging.getLogger("ami_exporter.test").warning("server said %r\r\n", SECRET)
    (line,) = stream.getvalue().splitlines()
    assert SECRET not in line and "msg=\"server said '<redacted>'\\r\\n\"" in line
