"""What ``--web.config.file`` becomes on the HTTP side: a TLS context and a basic auth checker."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ami_exporter.config.web import WebConfig, load_web_config
from ami_exporter.web.auth import BasicAuth, basic_auth_from_users
from ami_exporter.web.tls import server_ssl_context

__all__ = ["WebSecurity", "build_web_security", "load_web_security"]


@dataclass(frozen=True)
class WebSecurity:
    """The live objects of a web config: None for each that the file does not ask for."""

    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None


def build_web_security(
    config: WebConfig | None, warn: Callable[[str], Any] | None = None
) -> WebSecurity:
    """Load the certificates and check the hashes; a problem is a ConfigError naming file:line."""
    if config is None:
        return WebSecurity()
    ssl_context = server_ssl_context(config.tls, warn) if config.tls is not None else None
    return WebSecurity(ssl_context, basic_auth_from_users(config.users))


def load_web_security(path: str, warn: Callable[[str], Any] | None = None) -> WebSecurity:
    """Parse the web config file at ``path`` and build its security (tests and tools)."""
    return build_web_security(load_web_config(path), warn)
