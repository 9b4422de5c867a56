"""``--web.config.file``: TLS and basic auth for the HTTP side, in the exporter-toolkit format.

The same YAML file the Go exporters (node_exporter, blackbox_exporter...) accept::

    tls_server_config:
      cert_file: server.crt            # paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS12               # TLS10, TLS11, TLS12 (default), TLS13
      max_version: TLS13
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hashes only, e.g. `htpasswd -nBC 12 ""`
    http_server_config:
      http2: true                      # accepted and ignored: this server speaks HTTP/1.1

Differences, each refused with a clear error rather than silently ignored:

* ``client_auth_type: RequireAnyClientCert`` (require a certificate but verify nothing) cannot
  be expressed with Python's ``ssl`` module; use ``RequireAndVerifyClientCert``.
  ``RequestClientCert`` verifies nothing in Go either, so it is served as ``NoClientCert``:
  the access decision is the same.
* ``cipher_suites``, ``curve_preferences``, ``prefer_server_cipher_suites``,
  ``client_allowed_sans``, the inline ``cert``/``key``/``client_ca`` and
  ``http_server_config.headers`` are not supported.
* YAML anchors, aliases and tags are refused, as in the servers file (:mod:`.yaml`), and a
  duplicate key is an error at every level (Go's YAML refuses those too).
* ``cert_file``, ``key_file`` and ``client_ca_file`` must be regular files (OpenSSL would wait
  forever on a FIFO), of at most 4 MiB.

This module only parses and checks the file into plain data (:class:`WebConfig`); the web
layer loads the certificates into an ``SSLContext`` (:mod:`ami_exporter.web.tls`) and checks
the bcrypt hashes (:mod:`ami_exporter.web.auth`), naming ``file:line`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ami_exporter.config.files import CERTIFICATE_FILE_LIMIT, check_regular_file
from ami_exporter.config.yaml import Node, compose_file

__all__ = [
    "CLIENT_AUTH_TYPES",
    "TLS_VERSION_NAMES",
    "TLSServerConfig",
    "WebConfig",
    "WebUser",
    "load_web_config",
]

FLAG: Final = "--web.config.file"
# Oldest first: a max_version earlier in this tuple than min_version is an error.
TLS_VERSION_NAMES: Final = ("TLS10", "TLS11", "TLS12", "TLS13")
DEFAULT_MIN_VERSION: Final = "TLS12"
CLIENT_AUTH_TYPES: Final = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
VERIFYING_AUTH_TYPES: Final = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_SECTIONS: Final = ("tls_server_config", "basic_auth_users", "http_server_config")
_TLS_KEYS: Final = frozenset(
    {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
)
_TLS_UNSUPPORTED: Final = frozenset(
    {
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
        "client_allowed_sans",
        "cert",
        "key",
        "client_ca",
    }
)
_BCRYPT_PREFIXES: Final = (b"$2a$", b"$2b$", b"$2y$")


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """``tls_server_config``: file paths resolved against the web config file's directory."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"  # one of CLIENT_AUTH_TYPES, not RequireAnyClientCert
    client_ca_file: str | None = None  # set exactly when client_auth_type verifies
    min_version: str = DEFAULT_MIN_VERSION  # one of TLS_VERSION_NAMES
    max_version: str | None = None  # None: the newest the ssl library supports
    # ``file:line`` of cert_file and client_ca_file, for the errors of loading them.
    cert_file_at: str = ""
    client_ca_file_at: str = ""

    @property
    def verifies_clients(self) -> bool:
        return self.client_auth_type in VERIFYING_AUTH_TYPES


@dataclass(frozen=True, slots=True)
class WebUser:
    """One of ``basic_auth_users``: a name and its bcrypt hash (checked for form only here)."""

    name: str
    bcrypt_hash: bytes = field(repr=False)
    at: str = ""  # file:line of the hash


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The parsed file: no TLS and no users means plain HTTP without auth."""

    path: str
    tls: TLSServerConfig | None = None
    users: tuple[WebUser, ...] = ()


def load_web_config(path: str) -> WebConfig:
    """Parse and check the file; every problem is a one-line ConfigError naming file:line."""
    root = compose_file(path, FLAG)
    if root is None:
        return WebConfig(path)  # an empty file: plain HTTP, no auth (as exporter-toolkit)
    if not root.is_mapping:
        raise root.error("the web config must be a mapping")
    sections = root.mapping()
    for key, (key_node, _) in sections.items():
        if key not in _SECTIONS:
            raise key_node.error(f"unknown key {key!r}")
    tls = None
    if "tls_server_config" in sections:
        tls = _tls(*sections["tls_server_config"], Path(path).resolve().parent)
    users: tuple[WebUser, ...] = ()
    if "basic_auth_users" in sections:
        users = _users(sections["basic_auth_users"][1])
    if "http_server_config" in sections:
        _http(sections["http_server_config"][1])
    return WebConfig(path, tls, users)


_Values = dict[str, tuple[str, Node]]


def _tls(key_node: Node, node: Node, base: Path) -> TLSServerConfig | None:
    if node.is_null:
        return None
    values = _tls_values(node)
    if "cert_file" not in values and "key_file" not in values:
        if values:
            raise key_node.error("tls_server_config needs cert_file and key_file")
        return None  # an empty section: TLS off, as exporter-toolkit does
    for needed in ("cert_file", "key_file"):
        if needed not in values:
            raise key_node.error(f"tls_server_config has no {needed}")
    min_version, max_version = _versions(values, key_node)
    auth_type = _client_auth_type(values, key_node)

    def file(key: str) -> str:
        path = str(base / values[key][0])
        # OpenSSL loads these later: it would hang on a FIFO and read /dev/zero forever.
        check_regular_file(path, values[key][1].where, key, CERTIFICATE_FILE_LIMIT)
        return path

    ca = values.get("client_ca_file")
    return TLSServerConfig(
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        client_auth_type=auth_type,
        client_ca_file=file("client_ca_file") if ca is not None else None,
        min_version=min_version,
        max_version=max_version,
        cert_file_at=values["cert_file"][1].where,
        client_ca_file_at=ca[1].where if ca is not None else "",
    )


def _tls_values(node: Node) -> _Values:
    values: _Values = {}
    for key, (k_node, v_node) in node.mapping().items():
        if key in _TLS_UNSUPPORTED:
            raise k_node.error(f"tls_server_config.{key} is not supported")
        if key not in _TLS_KEYS:
            raise k_node.error(f"unknown tls_server_config key {key!r}")
        values[key] = (v_node.text(key), v_node)
    return values


def _versions(values: _Values, key_node: Node) -> tuple[str, str | None]:
    for key in ("min_version", "max_version"):
        if key in values:
            name, v_node = values[key]
            if name not in TLS_VERSION_NAMES:
                raise v_node.error(f"{key} {name!r} is not one of {', '.join(TLS_VERSION_NAMES)}")
    min_version = values["min_version"][0] if "min_version" in values else DEFAULT_MIN_VERSION
    max_version = values["max_version"][0] if "max_version" in values else None
    order = TLS_VERSION_NAMES.index
    if max_version is not None and order(max_version) < order(min_version):
        raise key_node.error("max_version is lower than min_version")
    return min_version, max_version


def _client_auth_type(values: _Values, key_node: Node) -> str:
    auth_type, auth_node = values.get("client_auth_type", ("NoClientCert", key_node))
    if auth_type not in CLIENT_AUTH_TYPES:
        raise auth_node.error(
            f"client_auth_type {auth_type!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}"
        )
    if auth_type == "RequireAnyClientCert":
        raise auth_node.error(
            "client_auth_type RequireAnyClientCert (a certificate required but not verified) "
            "is not supported; use RequireAndVerifyClientCert with client_ca_file"
        )
    verifies = auth_type in VERIFYING_AUTH_TYPES
    if "client_ca_file" in values:
        if not verifies:
            raise values["client_ca_file"][1].error(
                f"client_ca_file is set but client_auth_type is {auth_type}; use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )
    elif verifies:
        raise auth_node.error(f"client_auth_type {auth_type} needs client_ca_file")
    return auth_type


def _users(node: Node) -> tuple[WebUser, ...]:
    if node.is_null:
        return ()
    users: list[WebUser] = []
    for user, (k_node, v_node) in node.mapping().items():
        if not user or ":" in user:
            raise k_node.error(f"user name {user!r} is empty or has a ':'")
        hashed = v_node.text(f"basic_auth_users.{user}").encode()
        # Never echo the value: a plain password pasted by mistake must not reach a log.
        if not hashed.startswith(_BCRYPT_PREFIXES):
            raise v_node.error(
                f"the password of {user!r} must be a bcrypt hash ($2b$...), not a plain password"
            )
        users.append(WebUser(user, hashed, v_node.where))
    return tuple(users)


def _http(node: Node) -> None:
    if node.is_null:
        return
    for key, (k_node, v_node) in node.mapping().items():
        if key == "http2":
            if v_node.scalar not in ("true", "false"):
                raise v_node.error("http2 must be true or false")
            continue  # HTTP/1.1 only here; Prometheus scrapes over HTTP/1.1 anyway
        if key == "headers":
            raise k_node.error("http_server_config.headers is not supported")
        raise k_node.error(f"unknown http_server_config key {key!r}")
