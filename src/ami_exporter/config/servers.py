"""``--config.file``: the YAML ``servers:`` list, one exporter for many Asterisks.

Keys a server leaves out default to the ``--ami.*`` and ``--collector.*`` flags (and
``AMI_SECRET``); durations are Go's (``10s``, ``1m30s``) or seconds. Every problem
is a one-line :class:`~ami_exporter.config.errors.ConfigError` naming ``file:line``, and never
quotes a secret. Names, addresses, users, secrets and paths are taken as written (``0123`` stays
``0123``); the YAML rules (no anchors, aliases or tags, no duplicate keys) are
:mod:`ami_exporter.config.yaml`'s.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.files import CERTIFICATE_FILE_LIMIT, check_regular_file
from ami_exporter.config.model import COLLECTORS, ServerConfig
from ami_exporter.config.values import (
    Warn,
    check_secret,
    check_username,
    parse_host_port,
    positive_seconds,
    read_secret_file,
)
from ami_exporter.config.yaml import Node, compose_file

__all__ = ["SERVER_KEYS", "load_config_file"]

SERVER_KEYS: Final = frozenset(
    {
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
        "trunks_include",
        "trunks_exclude",
        "queues",
        "vicidial",
        # the other optional collectors (their defaults: the --collector.* flags)
        "peers",
        "trunks",
        "rtp",
    }
)
_INTERVALS: Final = ("ping_interval", "resync_interval", "connect_timeout")


def load_config_file(
    path: str, defaults: dict[str, Any], warn: Warn | None = None
) -> list[ServerConfig]:
    """Parse the YAML ``servers:`` list; errors name the file and the line."""
    names: set[str] = set()  # taken so far, in file order
    return [_Entry(item, defaults).server(names, warn) for item in _server_items(path)]


def _server_items(path: str) -> list[Node]:
    root = compose_file(path, "--config.file")
    if root is None or not root.is_mapping:
        where = root.where if root is not None else path
        raise ConfigError(f"{where}: the file must be a mapping with a 'servers:' list")
    servers: Node | None = None
    for key_node, value_node in root.pairs():
        if key_node.key != "servers":
            raise key_node.error(f"unknown top-level key {key_node.key!r}")
        servers = value_node
    items = servers.sequence() if servers is not None else None
    if not items:
        where = servers.where if servers is not None else path
        raise ConfigError(f"{where}: 'servers' must be a non-empty list")
    return items


class _Entry:
    """One item of the ``servers:`` list: its values, over the defaults from the flags."""

    def __init__(self, item: Node, defaults: dict[str, Any]) -> None:
        self.item = item
        self.defaults = defaults
        mapping = item.mapping(
            "each server must be a mapping (name, address, ...)",
            known=SERVER_KEYS,
            unknown="unknown server key",
        )
        self.nodes = {key: node for key, (_, node) in mapping.items()}

    def has(self, key: str) -> bool:
        return key in self.nodes

    def where(self, key: str) -> str:
        """``file:line: key`` for error messages (the server's line for a default)."""
        return f"{self.nodes.get(key, self.item).where}: {key}"

    def get(self, key: str) -> tuple[Any, str]:
        """The YAML value of ``key`` (or its default), for numbers and booleans."""
        node = self.nodes.get(key)
        return (node.value() if node is not None else self.defaults.get(key)), self.where(key)

    def text(self, key: str) -> tuple[str | None, str]:
        """A string key as written (None: absent or empty), or its default.

        As written, because YAML 1.1 types would change a secret or a name: ``0123`` is the
        octal 83, ``12:30`` the sexagesimal 750, ``yes`` a boolean.
        """
        node = self.nodes.get(key)
        if node is None:
            default = self.defaults.get(key)
            return (None if default is None else str(default)), self.where(key)
        if node.is_null:
            return None, self.where(key)
        if node.scalar is None:
            raise ConfigError(f"{self.where(key)} must be a string, not a list or a mapping")
        return node.scalar, self.where(key)

    def server(self, names: set[str], warn: Warn | None) -> ServerConfig:
        """The server; its name must not be in ``names`` (the earlier ones), and is added."""
        host, port = self._address()
        username = self._username()
        secret = self._secret(warn)
        name_text, where = self.text("name")
        name = name_text or f"{host}:{port}"
        if name in names:
            raise ConfigError(f"{where}: duplicate server name {name!r}")
        names.add(name)
        intervals: dict[str, Any] = {key: self._duration(key) for key in _INTERVALS}
        return ServerConfig(
            name=name,
            host=host,
            port=port,
            username=username,
            secret=secret,
            **intervals,
            **self._tls_options(),
            **self._feature_options(),
        )

    def _address(self) -> tuple[str, int]:
        address, where = self.text("address")
        if address is None:
            raise self.item.error("server has no 'address'")
        return parse_host_port(address, where, "127.0.0.1")

    def _username(self) -> str:
        username, where = self.text("username")
        if not username:
            raise ConfigError(f"{where}: a non-empty username is required")
        return check_username(username, where)

    def _secret(self, warn: Warn | None) -> str:
        if self.has("secret") and self.has("secret_file"):
            raise self.item.error("give either 'secret' or 'secret_file', not both")
        if self.has("secret_file"):
            secret_path, where = self.text("secret_file")
            if not secret_path:
                raise ConfigError(f"{where}: secret_file must be the path of a file")
            return read_secret_file(secret_path, where, warn)
        if self.has("secret"):
            secret, where = self.text("secret")
            if not secret:
                raise ConfigError(
                    f"{where}: secret must be a non-empty string (a value starting with '#' "
                    "is a comment: quote it)"
                )
            return check_secret(secret, where)
        default = self.defaults.get("secret") or ""
        if not default:
            raise self.item.error("server has no 'secret' or 'secret_file'")
        return str(default)

    def _duration(self, key: str) -> float:
        """A positive duration (``10s``, ``1m30s``, ``2.5``) as written, or its default."""
        node = self.nodes.get(key)
        # As written: YAML 1.1 would read 1:30 as the sexagesimal 90, and 1h30m as a string.
        value = node.scalar if node is not None and not node.is_null else None
        if node is not None and value is None and not node.is_null:
            value = node.value()  # a list or a mapping: refused with its repr
        return positive_seconds(
            value if node is not None else self.defaults.get(key), self.where(key)
        )

    def _bool(self, key: str) -> bool:
        """A true/false server option; absent means false."""
        value, where = self.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true or false")
        return value

    def _tls_options(self) -> dict[str, Any]:
        """The per-server ``tls*`` keys (defaults from the ``--ami.tls*`` flags), validated."""
        out: dict[str, Any] = {key: self._bool(key) for key in ("tls", "tls_insecure_skip_verify")}
        for key in ("tls_ca_file", "tls_server_name"):
            value, where = self.text(key)
            if value is None and self.has(key):
                raise ConfigError(f"{where}: must be a non-empty string")
            out[key] = value
        if not out["tls"]:
            for key in ("tls_ca_file", "tls_server_name", "tls_insecure_skip_verify"):
                if out[key] and self.has(key):
                    raise ConfigError(f"{self.where(key)}: needs 'tls: true'")
        elif out["tls_ca_file"] is not None:  # OpenSSL reads it later, and would hang on a FIFO
            where = self.where("tls_ca_file")
            check_regular_file(out["tls_ca_file"], where, "CA file", CERTIFICATE_FILE_LIMIT)
        return out

    def _feature_options(self) -> dict[str, Any]:
        """``peers_*``/``trunks_*`` (regular expressions), ``queues``, ``vicidial``."""
        out: dict[str, Any] = {}
        for key in ("peers_include", "peers_exclude", "trunks_include", "trunks_exclude"):
            value, where = self.text(key)
            if value is not None or self.has(key):
                _check_regex(value, where)
            out[key] = value
        for key in ("queues", "vicidial"):
            out[key] = self._bool(key)
        out.update(self._collector_options())
        return out

    def _collector_options(self) -> dict[str, bool]:
        """``peers``, ``trunks``, ``rtp``: true or false, else the ``--collector.*`` default."""
        out: dict[str, bool] = {}
        for key in ("peers", "trunks", "rtp"):
            out[key] = (
                self._bool(key) if self.has(key) else bool(self.defaults.get(key, COLLECTORS[key]))
            )
        return out


def _check_regex(value: str | None, where: str) -> None:
    if not value:
        raise ConfigError(f"{where}: must be a non-empty regular expression")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression {value!r}: {exc}") from None
