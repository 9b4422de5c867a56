"""Flags, environment and files into what the exporter and ``check`` run with, checked at start.

:func:`~ami_exporter.config.flags.config_from_args` gives the plain configuration; this loads
the files it names (web TLS certificates and bcrypt hashes, AMI CA files) once, so that any
problem exits 2 before anything connects or listens, not at the first scrape or reconnect.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ami_exporter.client.tls import client_ssl_context
from ami_exporter.config.flags import config_from_args
from ami_exporter.config.model import ExporterConfig
from ami_exporter.config.values import Warn
from ami_exporter.web.security import WebSecurity, build_web_security

__all__ = ["Prepared", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """The plain configuration and the live web security objects built from it."""

    config: ExporterConfig
    web: WebSecurity


def prepare(args: argparse.Namespace, env: dict[str, str], warn: Warn | None = None) -> Prepared:
    """The checked configuration and the web side's TLS context and basic auth."""
    config = config_from_args(args, env, warn)
    web = build_web_security(config.web, warn)
    flag = "" if args.config_file else "--ami.tls-ca-file"
    for server in config.servers:
        client_ssl_context(server, flag)  # a bad CA file exits 2 now, not at each reconnect
    return Prepared(config, web)
