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

Basic auth: bcrypt is slow on purpose (tens of milliseconds per check), so checks run in a
worker thread (the event loop keeps reading AMI meanwhile), at most a few at a time, and a
successful check is cached under ``(user, sha256(password))`` so that a scrape every 15 s costs
one dict lookup. Failures are never cached. An unknown user is checked against a dummy hash, so
the response time does not tell which user names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.model import compose_yaml_file

__all__ = ["BasicAuth", "WebConfig", "load_web_config"]

TLS_VERSIONS: Final = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES: Final = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_TLS_KEYS: Final = frozenset(
    {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
     "max_version"}
)  # fmt: skip
_TLS_UNSUPPORTED: Final = frozenset(
    {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
     "client_allowed_sans", "cert", "key", "client_ca"}
)  # fmt: skip
# Checks running at once: bcrypt costs CPU on purpose, a flood of bad passwords must not
# take every core (nor the default executor's every thread).
MAX_CONCURRENT_CHECKS: Final = 2
MAX_CACHED: Final = 256
# A valid bcrypt hash (cost 10) of a random string: what an unknown user is checked against.
_DUMMY_HASH: Final = b"$2b$10$PI0H2vrOrn/Dibb.vUCGge0rK1bvSxuSKFa8NWzITPjo0Wi7laJKO"


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = dict(users)
        self._cache: set[tuple[str, bytes]] = set()
        self._semaphore: asyncio.Semaphore | None = None
        self.checks = 0  # bcrypt computations done (cache misses), for tests and debugging

    @staticmethod
    def parse_header(header: str | None) -> tuple[str, bytes] | None:
        """``(user, password)`` from an ``Authorization`` value, or None if not Basic."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        return user.decode("utf-8", "surrogateescape"), password

    def check_password(self, user: str, password: bytes) -> bool:
        """Synchronous check (bcrypt cost included); cached on success."""
        key = (user, hashlib.sha256(password).digest())
        if key in self._cache:
            return True
        import bcrypt

        hashed = self._users.get(user)
        self.checks += 1
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else _DUMMY_HASH)
        except ValueError:
            ok = False
        ok = ok and hashed is not None
        if ok:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache.add(key)
        return ok

    async def authorize(self, header: str | None) -> bool:
        """True when ``header`` carries a known user and its password."""
        creds = self.parse_header(header)
        if creds is None:
            return False
        user, password = creds
        if (user, hashlib.sha256(password).digest()) in self._cache:
            return True
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        async with self._semaphore:
            return await asyncio.to_thread(self.check_password, user, password)


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None


def load_web_config(path: str, warn: Callable[[str], Any] | None = None) -> WebConfig:
    """Parse and check the file; every problem is a one-line ConfigError naming file:line."""
    what = "--web.config.file"
    root = compose_yaml_file(path, what)
    base = Path(path).resolve().parent

    def at(node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    if root is None:
        return WebConfig()  # an empty file: plain HTTP, no auth (as exporter-toolkit)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{at(root)}: the web config must be a mapping")
    sections = _mapping(root, at)
    for key, (key_node, _) in sections.items():
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(f"{at(key_node)}: unknown key {key!r}")

    ssl_context = None
    if "tls_server_config" in sections:
        ssl_context = _tls(sections["tls_server_config"], at, base, warn)
    basic_auth = None
    if "basic_auth_users" in sections:
        basic_auth = _users(sections["basic_auth_users"], at)
    if "http_server_config" in sections:
        _http(sections["http_server_config"], at)
    return WebConfig(ssl_context, basic_auth)


_At = Callable[[yaml.Node], str]


def _mapping(node: yaml.Node, at: _At) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{at(node)}: expected a mapping")
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in out:
            raise ConfigError(f"{at(key_node)}: duplicate key {key!r}")
        out[key] = (key_node, value_node)
    return out


def _scalar(node: yaml.Node, at: _At, key: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value):
        raise ConfigError(f"{at(node)}: {key} must be a non-empty string")
    return str(node.value)


def _tls(
    section: tuple[yaml.Node, yaml.Node], at: _At, base: Path, warn: Callable[[str], Any] | None
) -> ssl.SSLContext | None:
    key_node, node = section
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return None
    items = _mapping(node, at)
    values: dict[str, tuple[str, yaml.Node]] = {}
    for key, (k_node, v_node) in items.items():
        if key in _TLS_UNSUPPORTED:
            raise ConfigError(f"{at(k_node)}: tls_server_config.{key} is not supported")
        if key not in _TLS_KEYS:
            raise ConfigError(f"{at(k_node)}: unknown tls_server_config key {key!r}")
        values[key] = (_scalar(v_node, at, key), v_node)
    if "cert_file" not in values and "key_file" not in values:
        if values:
            raise ConfigError(f"{at(key_node)}: tls_server_config needs cert_file and key_file")
        return None  # an empty section: TLS off, as exporter-toolkit does
    for needed in ("cert_file", "key_file"):
        if needed not in values:
            raise ConfigError(f"{at(key_node)}: tls_server_config has no {needed}")

    def file(key: str) -> str:
        return str(base / values[key][0])

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in values:
            name, v_node = values[key]
            if name not in TLS_VERSIONS:
                raise ConfigError(
                    f"{at(v_node)}: {key} {name!r} is not one of {', '.join(TLS_VERSIONS)}"
                )
            setattr(ctx, attr, TLS_VERSIONS[name])
        elif key == "min_version":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ctx.maximum_version != ssl.TLSVersion.MAXIMUM_SUPPORTED and (
        ctx.maximum_version < ctx.minimum_version
    ):
        raise ConfigError(f"{at(key_node)}: max_version is lower than min_version")
    cert, key = file("cert_file"), file("key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        missing = cert if not os.path.exists(cert) else key
        raise ConfigError(
            f"{at(values['cert_file'][1])}: cannot read {missing!r}: {exc.strerror}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{at(values['cert_file'][1])}: cannot load the certificate {cert!r} and key "
            f"{key!r}: {getattr(exc, 'reason', None) or exc.strerror or 'invalid PEM'}"
        ) from None
    if warn is not None:
        with contextlib.suppress(OSError):
            if os.stat(key).st_mode & (stat.S_IRGRP | stat.S_IROTH):
                warn(f"TLS key file {key!r} is readable by other users; chmod 600 it")

    auth_type, auth_node = values.get("client_auth_type", ("NoClientCert", key_node))
    if auth_type not in CLIENT_AUTH_TYPES:
        raise ConfigError(
            f"{at(auth_node)}: client_auth_type {auth_type!r} is not one of "
            f"{', '.join(CLIENT_AUTH_TYPES)}"
        )
    if auth_type == "RequireAnyClientCert":
        raise ConfigError(
            f"{at(auth_node)}: client_auth_type RequireAnyClientCert (a certificate required "
            "but not verified) is not supported; use RequireAndVerifyClientCert with "
            "client_ca_file"
        )
    verifies = auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if "client_ca_file" in values:
        if not verifies:
            raise ConfigError(
                f"{at(values['client_ca_file'][1])}: client_ca_file is set but "
                f"client_auth_type is {auth_type}; use VerifyClientCertIfGiven or "
                "RequireAndVerifyClientCert"
            )
        ca = file("client_ca_file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except OSError as exc:
            raise ConfigError(
                f"{at(values['client_ca_file'][1])}: cannot read {ca!r}: {exc.strerror}"
            ) from None
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{at(values['client_ca_file'][1])}: {ca!r} holds no usable PEM certificate "
                f"({exc.reason or exc})"
            ) from None
    elif verifies:
        raise ConfigError(f"{at(auth_node)}: client_auth_type {auth_type} needs client_ca_file")
    ctx.verify_mode = {
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }.get(auth_type, ssl.CERT_NONE)
    return ctx


def _users(section: tuple[yaml.Node, yaml.Node], at: _At) -> BasicAuth | None:
    _, node = section
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return None
    import bcrypt

    users: dict[str, bytes] = {}
    for user, (k_node, v_node) in _mapping(node, at).items():
        if not user or ":" in user:
            raise ConfigError(f"{at(k_node)}: user name {user!r} is empty or has a ':'")
        hashed = _scalar(v_node, at, f"basic_auth_users.{user}").encode()
        # Never echo the value: a plain password pasted by mistake must not reach a log.
        if not hashed.startswith((b"$2a$", b"$2b$", b"$2y$")):
            raise ConfigError(
                f"{at(v_node)}: the password of {user!r} must be a bcrypt hash ($2b$...), "
                "not a plain password"
            )
        try:
            bcrypt.checkpw(b"", hashed)
        except ValueError:
            raise ConfigError(f"{at(v_node)}: the bcrypt hash of {user!r} is invalid") from None
        users[user] = hashed
    return BasicAuth(users) if users else None


def _http(section: tuple[yaml.Node, yaml.Node], at: _At) -> None:
    _, node = section
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return
    for key, (k_node, v_node) in _mapping(node, at).items():
        if key == "http2":
            if not (isinstance(v_node, yaml.ScalarNode) and v_node.value in ("true", "false")):
                raise ConfigError(f"{at(v_node)}: http2 must be true or false")
            continue  # HTTP/1.1 only here; Prometheus scrapes over HTTP/1.1 anyway
        if key == "headers":
            raise ConfigError(f"{at(k_node)}: http_server_config.headers is not supported")
        raise ConfigError(f"{at(k_node)}: unknown http_server_config key {key!r}")
