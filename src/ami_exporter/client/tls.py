"""AMI over TLS: the client-side :class:`ssl.SSLContext` built from a server's configuration.

Asterisk serves AMI over TLS when ``manager.conf`` has ``tlsenable = yes`` (usually on port
5039). The exporter verifies the server's certificate against the system's trusted CAs, or only
against ``tls_ca_file`` when one is given, and checks the name in the certificate against
``tls_server_name`` (default: the configured host, an IP address being checked against the
certificate's IP SANs). ``tls_insecure_skip_verify`` keeps the encryption but accepts any
certificate: it protects against passive sniffing only, never against a man in the middle.
"""

from __future__ import annotations

import ssl

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.model import ServerConfig

__all__ = ["client_ssl_context"]


def client_ssl_context(cfg: ServerConfig, what: str = "") -> ssl.SSLContext | None:
    """The context to connect to ``cfg`` with, or ``None`` for plain TCP.

    A CA file that cannot be read or parsed is a :class:`ConfigError` naming ``what`` (the
    flag or the YAML line) and the file, never its content.
    """
    if not cfg.tls:
        return None
    where = what or f"server {cfg.name!r}: tls_ca_file"
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.tls_ca_file)
    except FileNotFoundError:
        raise ConfigError(f"{where}: CA file {cfg.tls_ca_file!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read CA file {cfg.tls_ca_file!r}: {exc.strerror or exc}"
        ) from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: CA file {cfg.tls_ca_file!r} holds no usable PEM certificate "
            f"({exc.reason or exc})"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls_insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
