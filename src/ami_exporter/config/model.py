"""Configuration: command-line flags, environment and the YAML file, validated up front.

Every problem is a :class:`~ami_exporter.config.errors.ConfigError` with a one-line message
that names the flag or the YAML line, so a bad deployment fails at start with exit code 2 instead of
misbehaving later. Secrets come from the environment or a file, never from a plain flag (flags
are visible to every user in the process list).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ami_exporter.config.errors import ConfigError

if TYPE_CHECKING:  # webconfig imports this module; the type is only for annotations
    from ami_exporter.web.webconfig import WebConfig

DEFAULT_AMI_ADDRESS = "127.0.0.1:5038"
DEFAULT_LISTEN_ADDRESS = ":9815"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One Asterisk server to watch."""

    name: str
    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    ping_interval: float = 10.0
    resync_interval: float = 60.0
    connect_timeout: float = 5.0
    # AMI over TLS (Asterisk's manager.conf tlsenable, usually port 5039).
    tls: bool = False
    tls_ca_file: str | None = None  # None: the system's trusted CAs
    tls_server_name: str | None = None  # None: the host; checked against the certificate
    tls_insecure_skip_verify: bool = False  # encrypt but accept any certificate (testing only)
    # Trunks and peers: export only peers whose name matches include and not exclude (re.search).
    peers_include: str | None = None
    peers_exclude: str | None = None
    queues: bool = False  # poll QueueStatus/QueueSummary (app_queue) on every resync
    vicidial: bool = False  # VICIdial call types from the call IDs in CallerIDName

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    servers: tuple[ServerConfig, ...]
    listen_host: str
    listen_port: int
    telemetry_path: str
    web: WebConfig | None = None  # --web.config.file, loaded and checked once at start


def parse_host_port(value: str, what: str, default_host: str = "") -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port``; the port must be 1-65535."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"{what}: {value!r} is not HOST:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{what}: {value!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what}: port {port_text!r} in {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: port {port} in {value!r} is out of range 1-65535")
    return (host or default_host), port


def positive_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what}: {value!r} is not a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a number of seconds") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ConfigError(f"{what}: {value!r} must be a positive number of seconds")
    return number


def read_secret_file(path: str, what: str, warn: Any = None) -> str:
    """Read a secret from a file (trailing newline stripped); warn when others can read it."""
    try:
        st = os.stat(path)
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path!r}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWOTH) and warn is not None:
        warn(f"secret file {path!r} is readable by other users; chmod 600 it")
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{what}: secret file {path!r} is empty")
    return secret


_SERVER_KEYS = {
    "name",
    "address",
    "username",
    "secret",
    "secret_file",
    "ping_interval",
    "resync_interval",
    "connect_timeout",
    "tls",
    "tls_ca_file",
    "tls_server_name",
    "tls_insecure_skip_verify",
    "peers_include",
    "peers_exclude",
    "queues",
    "vicidial",
}


def compose_yaml_file(path: str, what: str) -> yaml.Node | None:
    """Read a YAML file into nodes, which keep their line numbers for error messages."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path!r} is not UTF-8 text") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def load_config_file(path: str, defaults: dict[str, Any], warn: Any = None) -> list[ServerConfig]:
    """Parse the YAML ``servers:`` list; errors name the file and the line."""
    root = compose_yaml_file(path, "--config.file")

    def at(node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    if not isinstance(root, yaml.MappingNode):
        where = at(root) if root is not None else path
        raise ConfigError(f"{where}: the file must be a mapping with a 'servers:' list")
    servers_node: yaml.Node | None = None
    for key_node, value_node in root.value:
        if key_node.value != "servers":
            raise ConfigError(f"{at(key_node)}: unknown top-level key {key_node.value!r}")
        servers_node = value_node
    if not isinstance(servers_node, yaml.SequenceNode) or not servers_node.value:
        where = at(servers_node) if servers_node is not None else path
        raise ConfigError(f"{where}: 'servers' must be a non-empty list")

    loader = yaml.SafeLoader("")
    servers: list[ServerConfig] = []
    names: set[str] = set()
    for item in servers_node.value:
        if not isinstance(item, yaml.MappingNode):
            raise ConfigError(f"{at(item)}: each server must be a mapping (name, address, ...)")
        values: dict[str, tuple[Any, yaml.Node]] = {}
        for key_node, value_node in item.value:
            key = key_node.value
            if key not in _SERVER_KEYS:
                raise ConfigError(f"{at(key_node)}: unknown server key {key!r}")
            if key in values:
                raise ConfigError(f"{at(key_node)}: duplicate key {key!r}")
            values[key] = (loader.construct_object(value_node, deep=True), value_node)

        def get(
            key: str, values: dict[str, tuple[Any, yaml.Node]] = values, item: yaml.Node = item
        ) -> tuple[Any, str]:
            if key in values:
                value, node = values[key]
                return value, f"{at(node)}: {key}"
            return defaults.get(key), f"{at(item)}: {key}"

        address, where = get("address")
        if address is None:
            raise ConfigError(f"{at(item)}: server has no 'address'")
        host, port = parse_host_port(str(address), where, "127.0.0.1")
        username, where = get("username")
        if not isinstance(username, str) or not username:
            raise ConfigError(f"{where}: a non-empty username is required")
        if "secret" in values and "secret_file" in values:
            raise ConfigError(f"{at(item)}: give either 'secret' or 'secret_file', not both")
        if "secret_file" in values:
            secret_path, where = get("secret_file")
            secret = read_secret_file(str(secret_path), where, warn)
        elif "secret" in values:
            secret, where = get("secret")
            if not isinstance(secret, str | int) or str(secret) == "":
                raise ConfigError(f"{where}: secret must be a non-empty string")
            secret = str(secret)
        else:
            secret = defaults.get("secret") or ""
            if not secret:
                raise ConfigError(f"{at(item)}: server has no 'secret' or 'secret_file'")
        name_value, where = get("name")
        name = str(name_value) if name_value else (f"{host}:{port}")
        if name in names:
            raise ConfigError(f"{where}: duplicate server name {name!r}")
        names.add(name)
        intervals: dict[str, Any] = {
            key: positive_seconds(get(key)[0], get(key)[1])
            for key in ("ping_interval", "resync_interval", "connect_timeout")
        }
        servers.append(
            ServerConfig(name=name, host=host, port=port, username=username, secret=secret,
                         **intervals, **_tls_options(get, values), **_feature_options(get))
        )  # fmt: skip
    return servers


def _bool_option(get: Any, key: str) -> bool:
    """A true/false server option; absent means false."""
    value, where = get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} must be true or false")
    return value


def _tls_options(get: Any, explicit: dict[str, Any]) -> dict[str, Any]:
    """The per-server ``tls*`` keys (defaults from the ``--ami.tls*`` flags), validated."""
    out: dict[str, Any] = {}
    for key in ("tls", "tls_insecure_skip_verify"):
        out[key] = _bool_option(get, key)
    for key in ("tls_ca_file", "tls_server_name"):
        value, where = get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}: {value!r} must be a non-empty string")
        out[key] = value
    if not out["tls"]:
        for key in ("tls_ca_file", "tls_server_name", "tls_insecure_skip_verify"):
            if out[key] and key in explicit:
                _, where = get(key)
                raise ConfigError(f"{where}: needs 'tls: true'")
    return out


def _feature_options(get: Any) -> dict[str, Any]:
    """``peers_include``/``peers_exclude`` (regular expressions), ``queues``, ``vicidial``."""
    out: dict[str, Any] = {}
    for key in ("peers_include", "peers_exclude"):
        value, where = get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {value!r} must be a non-empty regular expression")
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(f"{where}: invalid regular expression {value!r}: {exc}") from None
        out[key] = value
    for key in ("queues", "vicidial"):
        out[key] = _bool_option(get, key)
    return out
