"""The HTTP side's TLS: an ``ssl.SSLContext`` from ``tls_server_config`` of ``--web.config.file``.

The file was parsed and checked by :mod:`ami_exporter.config.web`; loading the certificate,
key and client CA files happens here, and their errors name the web config file's line too.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
from collections.abc import Callable
from typing import Any, Final

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.web import TLSServerConfig

__all__ = ["TLS_VERSIONS", "server_ssl_context"]

# By the names of config.web.TLS_VERSION_NAMES.
TLS_VERSIONS: Final = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_VERIFY_MODES: Final = {
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


def server_ssl_context(
    tls: TLSServerConfig, warn: Callable[[str], Any] | None = None
) -> ssl.SSLContext:
    """The server context: versions, certificate chain, client certificate verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version is not None:
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    _load_chain(ctx, tls)
    if warn is not None:
        with contextlib.suppress(OSError):
            if os.stat(tls.key_file).st_mode & (stat.S_IRGRP | stat.S_IROTH):
                warn(f"TLS key file {tls.key_file!r} is readable by other users; chmod 600 it")
    if tls.client_ca_file is not None:
        _load_client_ca(ctx, tls.client_ca_file, tls.client_ca_file_at)
    ctx.verify_mode = _VERIFY_MODES.get(tls.client_auth_type, ssl.CERT_NONE)
    return ctx


def _load_chain(ctx: ssl.SSLContext, tls: TLSServerConfig) -> None:
    cert, key = tls.cert_file, tls.key_file
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        missing = cert if not os.path.exists(cert) else key
        raise ConfigError(f"{tls.cert_file_at}: cannot read {missing!r}: {exc.strerror}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{tls.cert_file_at}: cannot load the certificate {cert!r} and key {key!r}: "
            f"{getattr(exc, 'reason', None) or exc.strerror or 'invalid PEM'}"
        ) from None


def _load_client_ca(ctx: ssl.SSLContext, ca: str, at: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except OSError as exc:
        raise ConfigError(f"{at}: cannot read {ca!r}: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{at}: {ca!r} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None
