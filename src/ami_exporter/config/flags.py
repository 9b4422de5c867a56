"""Command-line flags, and the flags, environment and files turned into an ExporterConfig.

Go-style flags as other Prometheus exporters use them (``--web.listen-address`` ...), shared
by the exporter and ``ami-exporter check``. The AMI secret never comes from a flag, because
every local user can read process arguments: it comes from ``AMI_SECRET``,
``--ami.secret-file`` or the config file.

Also node_exporter's ``--collector.<name>`` / ``--no-collector.<name>`` /
``--collector.disable-defaults`` (each optional collector's default for every server),
repeatable ``--web.listen-address``, ``--web.enable-lifecycle`` and ``--config.shard=K/N``.
Durations are Go's (``10s``, ``1m30s``, ``500ms``) or bare seconds
(:mod:`ami_exporter.config.durations`).
"""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any, Final, NoReturn

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.files import CERTIFICATE_FILE_LIMIT, check_regular_file
from ami_exporter.config.model import (
    COLLECTORS,
    DEFAULT_AMI_ADDRESS,
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_MAX_CONNECTIONS,
    ExporterConfig,
    ServerConfig,
    Shard,
)
from ami_exporter.config.servers import load_config_file
from ami_exporter.config.values import (
    Warn,
    check_secret,
    check_username,
    parse_host_port,
    positive_seconds,
    read_secret_file,
)
from ami_exporter.config.web import load_web_config

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "build_arg_parser",
    "collectors_from_args",
    "config_from_args",
    "parse_shard",
]

LOG_LEVELS: Final = ("debug", "info", "warn", "error")
LOG_FORMATS: Final = ("logfmt", "json")
RESERVED_PATHS: Final = ("/", "/-/healthy", "/-/ready")
COLLECTOR_HELP: Final = {
    "peers": "peers, endpoints and registrations (SIPpeers, PJSIPShowContacts...)",
    "trunks": "per-trunk series for the peers selected as trunks",
    "rtp": "RTP call quality (RTCP reports) per trunk",
    "queues": "app_queue: poll QueueStatus/QueueSummary at every resync",
    "vicidial": "VICIdial call types from the call IDs in CallerIDName",
}
# The --ami.tls* flags that only make sense with --ami.tls, and their ServerConfig fields.
TLS_ONLY_FLAGS: Final = (
    ("--ami.tls-ca-file", "tls_ca_file"),
    ("--ami.tls-server-name", "tls_server_name"),
    ("--ami.tls-insecure-skip-verify", "tls_insecure_skip_verify"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, naming the problem; exit 2 like every bad flag or config.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_arg_parser(version: str) -> argparse.ArgumentParser:
    """The exporter's flags; ``version`` is what ``--version`` prints after the name."""
    p = _Parser(
        prog="ami-exporter",
        description="Prometheus exporter for the Asterisk Manager Interface (AMI).",
        epilog="'ami-exporter check [same flags]' diagnoses each AMI server once and exits "
        "(0: all well; see README).",
    )
    _add_ami_flags(p)
    _add_tls_flags(p)
    _add_web_flags(p)
    _add_collector_flags(p)
    p.add_argument(
        "--config.file",
        dest="config_file",
        metavar="FILE",
        help="YAML file with a 'servers:' list (one exporter, many Asterisks)",
    )
    p.add_argument(
        "--config.shard",
        dest="config_shard",
        metavar="K/N",
        help="watch only the servers of --config.file whose name hashes to shard K of N "
        "(0 <= K < N; Prometheus hashmod of the name: N exporters share one file)",
    )
    p.add_argument("--log.level", dest="log_level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=LOG_FORMATS)
    p.add_argument(
        "--demo", action="store_true", help="start a simulated Asterisk in-process and monitor it"
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"ami-exporter {version} (python {platform.python_version()})",
    )
    return p


def _add_ami_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ami.address",
        dest="ami_address",
        default=DEFAULT_AMI_ADDRESS,
        metavar="HOST:PORT",
        help="AMI address (default %(default)s)",
    )
    p.add_argument(
        "--ami.username",
        dest="ami_username",
        default=os.environ.get("AMI_USERNAME"),
        help="AMI user (default: $AMI_USERNAME)",
    )
    p.add_argument(
        "--ami.secret-file",
        dest="ami_secret_file",
        metavar="FILE",
        help="file holding the AMI secret (default: $AMI_SECRET)",
    )
    p.add_argument(
        "--ami.server-name",
        dest="ami_server_name",
        help="value of the 'server' label (default: the AMI address)",
    )
    p.add_argument(
        "--ami.ping-interval",
        dest="ping_interval",
        default="10s",
        metavar="DURATION",
        help="Ping period; no answer within it means a dead session (default 10s; "
        "durations: 10s, 1m30s, 500ms, or seconds)",
    )
    p.add_argument(
        "--ami.resync-interval",
        dest="resync_interval",
        default="1m",
        metavar="DURATION",
        help="CoreShowChannels resync period (default 1m)",
    )
    p.add_argument(
        "--ami.connect-timeout",
        dest="connect_timeout",
        default="5s",
        metavar="DURATION",
        help="TCP connect and banner timeout (default 5s)",
    )


def _add_tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ami.tls",
        dest="ami_tls",
        action="store_true",
        default=None,
        help="connect to AMI over TLS (manager.conf tlsenable, usually port 5039)",
    )
    p.add_argument(
        "--ami.tls-ca-file",
        dest="ami_tls_ca_file",
        metavar="FILE",
        help="CA certificates (PEM) to verify the AMI server with (default: the system's)",
    )
    p.add_argument(
        "--ami.tls-server-name",
        dest="ami_tls_server_name",
        metavar="NAME",
        help="name expected in the AMI server's certificate (default: the host)",
    )
    p.add_argument(
        "--ami.tls-insecure-skip-verify",
        dest="ami_tls_insecure_skip_verify",
        action="store_true",
        default=None,
        help="TLS without checking the AMI server's certificate (testing only)",
    )


def _add_web_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for the HTTP side (exporter-toolkit web config format)",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        action="append",
        metavar="[HOST]:PORT",
        help="HTTP listen address; repeat it to listen on several "
        f"(default {DEFAULT_LISTEN_ADDRESS})",
    )
    p.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="serve POST /-/reload (the same reload as SIGHUP), as Prometheus does",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path of the metrics endpoint (default %(default)s)",
    )
    p.add_argument(
        "--web.max-connections",
        dest="max_connections",
        default=str(DEFAULT_MAX_CONNECTIONS),
        metavar="N",
        help="open HTTP connections at most; at the limit the longest idle one is closed "
        "for a new one (default %(default)s)",
    )


def _add_collector_flags(p: argparse.ArgumentParser) -> None:
    """node_exporter's ``--collector.<name>`` / ``--no-collector.<name>`` for each optional
    collector, and ``--collector.disable-defaults``; the last of a pair given wins."""
    for name, default in COLLECTORS.items():
        what = COLLECTOR_HELP[name]
        p.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action="store_const",
            const=True,
            default=None,
            help=f"{what} (default {'on' if default else 'off'}; a server's '{name}:' key "
            "in --config.file overrides it)",
        )
        p.add_argument(
            f"--no-collector.{name}",
            dest=f"collector_{name}",
            action="store_const",
            const=False,
            help=argparse.SUPPRESS,
        )
    p.add_argument(
        "--collector.disable-defaults",
        dest="collector_disable_defaults",
        action="store_true",
        help="turn every collector off but those enabled with --collector.<name> "
        "(and --no-collector.<name> turns one off)",
    )


def collectors_from_args(args: argparse.Namespace) -> dict[str, bool]:
    """Each optional collector's default for every server, from the ``--collector.*`` flags.

    ``--demo`` shows every feature: there each collector is on unless turned off.
    """
    out: dict[str, bool] = {}
    demo = bool(getattr(args, "demo", False))
    for name, usual in COLLECTORS.items():
        default = usual or demo
        flag = getattr(args, f"collector_{name}", None)
        on = default and not getattr(args, "collector_disable_defaults", False)
        out[name] = on if flag is None else bool(flag)
    return out


def parse_shard(value: str) -> Shard:
    """``K/N`` with ``0 <= K < N``; a ConfigError naming ``--config.shard`` otherwise."""
    index_text, sep, total_text = value.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        index, total = int(index_text), int(total_text)
    except ValueError:
        raise ConfigError(
            f"--config.shard: {value!r} is not K/N (e.g. 0/3: the first of 3 shards)"
        ) from None
    if total < 1 or not 0 <= index < total:
        raise ConfigError(
            f"--config.shard: {value!r}: K must be 0 to N-1 and N at least 1 "
            f"(shards are numbered from 0, as Prometheus hashmod and StatefulSet ordinals)"
        )
    return Shard(index, total)


def _listen_addresses(args: argparse.Namespace) -> tuple[tuple[str, int], ...]:
    given = args.listen_address or [DEFAULT_LISTEN_ADDRESS]
    addresses = [parse_host_port(a, "--web.listen-address") for a in given]
    for address in addresses:
        if addresses.count(address) > 1:
            raise ConfigError(f"--web.listen-address: {address[0]}:{address[1]} is given twice")
    return tuple(addresses)


def config_from_args(
    args: argparse.Namespace, env: dict[str, str], warn: Warn | None = None
) -> ExporterConfig:
    """Validate the flags, the environment and the config files into an ExporterConfig.

    Plain data: the files named in it (TLS certificates, CA files) are loaded by the layers
    that use them, :func:`ami_exporter.cli.prepare.prepare` at start.
    """
    addresses = _listen_addresses(args)
    collectors = collectors_from_args(args)
    shard = _shard(args)
    _check_telemetry_path(args.telemetry_path)
    max_connections = _max_connections(args.max_connections)
    intervals: dict[str, Any] = {
        "ping_interval": positive_seconds(args.ping_interval, "--ami.ping-interval"),
        "resync_interval": positive_seconds(args.resync_interval, "--ami.resync-interval"),
        "connect_timeout": positive_seconds(args.connect_timeout, "--ami.connect-timeout"),
    }
    secret = env.get("AMI_SECRET") or None
    if secret is not None:
        check_secret(secret, "AMI_SECRET")
    if args.ami_secret_file:
        secret = read_secret_file(args.ami_secret_file, "--ami.secret-file", warn)
    tls = _tls_flags(args)
    # Parsed now, so a bad file exits 2 before anything listens.
    web = load_web_config(args.web_config_file) if args.web_config_file else None
    servers: list[ServerConfig]
    if args.demo:
        servers = []  # filled in once the simulator listens
    elif args.config_file:
        defaults = {
            "username": args.ami_username,
            "secret": secret,
            **intervals,
            **tls,
            **collectors,
        }
        servers = load_config_file(args.config_file, defaults, warn)
        if shard is not None:  # the whole file is checked first: every shard rejects it alike
            servers = [s for s in servers if shard.owns(s.name)]
    else:
        servers = [_flag_server(args, secret, {**intervals, **tls, **collectors})]
    return ExporterConfig(
        tuple(servers),
        addresses[0][0],
        addresses[0][1],
        args.telemetry_path,
        web,
        max_connections=max_connections,
        listen_addresses=addresses,
        enable_lifecycle=bool(getattr(args, "enable_lifecycle", False)),
        collectors=collectors,
        shard=shard,
    )


def _shard(args: argparse.Namespace) -> Shard | None:
    value = getattr(args, "config_shard", None)
    if value is None:
        return None
    shard = parse_shard(value)
    if not args.config_file or args.demo:
        raise ConfigError("--config.shard needs --config.file (it selects among its servers)")
    return shard


def _max_connections(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"--web.max-connections: {value!r} is not a whole number") from None
    if number < 1:
        raise ConfigError(f"--web.max-connections: {value!r} must be at least 1")
    return number


def _check_telemetry_path(path: str) -> None:
    if not path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: {path!r} must start with '/'")
    if any(c.isspace() or c in "?#" for c in path):
        raise ConfigError(f"--web.telemetry-path: {path!r} may not contain spaces, '?' or '#'")
    if path in RESERVED_PATHS:
        raise ConfigError(f"--web.telemetry-path: {path!r} is a reserved path")


def _tls_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--ami.tls*`` flags as ServerConfig fields (defaults for the servers file)."""
    tls = {
        "tls": bool(args.ami_tls),
        "tls_ca_file": args.ami_tls_ca_file,
        "tls_server_name": args.ami_tls_server_name,
        "tls_insecure_skip_verify": bool(args.ami_tls_insecure_skip_verify),
    }
    if not args.ami_tls and not args.config_file:
        for flag, key in TLS_ONLY_FLAGS:
            if tls[key]:
                raise ConfigError(f"{flag} needs --ami.tls")
    if tls["tls_ca_file"]:  # OpenSSL reads it later, and would hang on a FIFO
        check_regular_file(
            tls["tls_ca_file"], "--ami.tls-ca-file", "CA file", CERTIFICATE_FILE_LIMIT
        )
    return tls


def _flag_server(
    args: argparse.Namespace, secret: str | None, options: dict[str, Any]
) -> ServerConfig:
    """The one server the ``--ami.*`` flags describe (no ``--config.file``)."""
    host, port = parse_host_port(args.ami_address, "--ami.address", "127.0.0.1")
    if not args.ami_username:
        raise ConfigError("no AMI user: set --ami.username or AMI_USERNAME")
    check_username(args.ami_username, "--ami.username")
    if not secret:
        raise ConfigError("no AMI secret: set AMI_SECRET or --ami.secret-file")
    name = args.ami_server_name or args.ami_address
    return ServerConfig(name, host, port, args.ami_username, secret, **options)
