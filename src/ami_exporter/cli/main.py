"""Command line: flags, start-up, signal handling and the ``--demo`` mode.

Go-style flags as other Prometheus exporters use them (``--web.listen-address`` ...). The AMI
secret never comes from a flag, because every local user can read process arguments: it comes
from ``AMI_SECRET``, ``--ami.secret-file`` or the config file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import secrets
import signal
import sys
from typing import Any, NoReturn

from ami_exporter import __version__
from ami_exporter.cli.logsetup import LEVEL_NAMES, setup_logging
from ami_exporter.client.connection import AMIClient
from ami_exporter.client.tls import client_ssl_context
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.model import (
    DEFAULT_AMI_ADDRESS,
    DEFAULT_LISTEN_ADDRESS,
    ExporterConfig,
    ServerConfig,
    load_config_file,
    parse_host_port,
    positive_seconds,
    read_secret_file,
)
from ami_exporter.metrics.collector import build_registry
from ami_exporter.state.server import ServerState
from ami_exporter.web.history import History
from ami_exporter.web.server import WebServer
from ami_exporter.web.webconfig import load_web_config

log = logging.getLogger("ami_exporter")

# Leave time for Logoff and closing within the 2 s an orchestrator usually grants.
SHUTDOWN_BUDGET = 1.0
DEMO_CALLS_PER_SECOND = 2.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, naming the problem; exit 2 like every bad flag or config.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_arg_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ami-exporter",
        description="Prometheus exporter for the Asterisk Manager Interface (AMI).",
        epilog="'ami-exporter check [same flags]' diagnoses each AMI server once and exits "
        "(0: all well; see README).",
    )
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
        default="10",
        metavar="SECONDS",
        help="Ping period; no answer within it means a dead session (default 10)",
    )
    p.add_argument(
        "--ami.resync-interval",
        dest="resync_interval",
        default="60",
        metavar="SECONDS",
        help="CoreShowChannels resync period (default 60)",
    )
    p.add_argument(
        "--ami.connect-timeout",
        dest="connect_timeout",
        default="5",
        metavar="SECONDS",
        help="TCP connect and banner timeout (default 5)",
    )
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
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for the HTTP side (exporter-toolkit web config format)",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN_ADDRESS,
        metavar="[HOST]:PORT",
        help="HTTP listen address (default %(default)s)",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path of the metrics endpoint (default %(default)s)",
    )
    p.add_argument(
        "--config.file",
        dest="config_file",
        metavar="FILE",
        help="YAML file with a 'servers:' list (one exporter, many Asterisks)",
    )
    p.add_argument("--log.level", dest="log_level", default="info", choices=LEVEL_NAMES)
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=("logfmt", "json"))
    p.add_argument(
        "--demo", action="store_true", help="start a simulated Asterisk in-process and monitor it"
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"ami-exporter {__version__} (python {platform.python_version()})",
    )
    return p  # fmt: skip


def config_from_args(
    args: argparse.Namespace, env: dict[str, str], warn: Any = None
) -> ExporterConfig:
    """Validate the flags and the config file into an :class:`ExporterConfig`."""
    listen_host, listen_port = parse_host_port(args.listen_address, "--web.listen-address")
    if not args.telemetry_path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: {args.telemetry_path!r} must start with '/'")
    if any(c.isspace() or c in "?#" for c in args.telemetry_path):
        raise ConfigError(
            f"--web.telemetry-path: {args.telemetry_path!r} may not contain spaces, '?' or '#'"
        )
    if args.telemetry_path in ("/", "/-/healthy", "/-/ready"):
        raise ConfigError(f"--web.telemetry-path: {args.telemetry_path!r} is a reserved path")
    intervals: dict[str, Any] = {
        "ping_interval": positive_seconds(args.ping_interval, "--ami.ping-interval"),
        "resync_interval": positive_seconds(args.resync_interval, "--ami.resync-interval"),
        "connect_timeout": positive_seconds(args.connect_timeout, "--ami.connect-timeout"),
    }
    secret = env.get("AMI_SECRET") or None
    if args.ami_secret_file:
        secret = read_secret_file(args.ami_secret_file, "--ami.secret-file", warn)

    tls = {
        "tls": bool(args.ami_tls),
        "tls_ca_file": args.ami_tls_ca_file,
        "tls_server_name": args.ami_tls_server_name,
        "tls_insecure_skip_verify": bool(args.ami_tls_insecure_skip_verify),
    }
    if not args.ami_tls:
        for flag, key in (
            ("--ami.tls-ca-file", "tls_ca_file"),
            ("--ami.tls-server-name", "tls_server_name"),
            ("--ami.tls-insecure-skip-verify", "tls_insecure_skip_verify"),
        ):
            if tls[key] and not args.config_file:
                raise ConfigError(f"{flag} needs --ami.tls")
    # Loaded now, so a bad file exits 2 before anything listens.
    web = load_web_config(args.web_config_file, warn) if args.web_config_file else None

    servers: list[ServerConfig]
    if args.demo:
        servers = []  # filled in once the simulator listens
    elif args.config_file:
        defaults = {"username": args.ami_username, "secret": secret, **intervals, **tls}
        servers = load_config_file(args.config_file, defaults, warn)
    else:
        host, port = parse_host_port(args.ami_address, "--ami.address", "127.0.0.1")
        if not args.ami_username:
            raise ConfigError("no AMI user: set --ami.username or AMI_USERNAME")
        if not secret:
            raise ConfigError("no AMI secret: set AMI_SECRET or --ami.secret-file")
        name = args.ami_server_name or args.ami_address
        servers = [ServerConfig(name, host, port, args.ami_username, secret, **intervals, **tls)]
    for server in servers:
        flag = "--ami.tls-ca-file" if not args.config_file else ""
        client_ssl_context(server, flag)  # a bad CA file exits 2 now, not at each reconnect
    return ExporterConfig(tuple(servers), listen_host, listen_port, args.telemetry_path, web)


async def serve(config: ExporterConfig, *, demo: bool = False) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    simulator = None
    servers = list(config.servers)
    if demo:
        from ami_simulator.server import SimulatedAsterisk, SimulatorConfig

        secret = secrets.token_urlsafe(16)
        simulator = SimulatedAsterisk(
            SimulatorConfig(port=0, username="exporter", secret=secret,
                            calls_per_second=DEMO_CALLS_PER_SECOND)
        )  # fmt: skip
        await simulator.start()
        servers = [ServerConfig("demo", "127.0.0.1", simulator.port, "exporter", secret)]
        log.info("demo: simulated Asterisk on 127.0.0.1:%d", simulator.port)

    states = [ServerState(s.name) for s in servers]
    registry = build_registry(states)
    history = History(states)  # status page sparklines; sampled off the event path
    web_config = config.web
    web = WebServer(registry, states, host=config.listen_host, port=config.listen_port,
                    telemetry_path=config.telemetry_path,
                    ssl_context=web_config.ssl_context if web_config else None,
                    basic_auth=web_config.basic_auth if web_config else None,
                    history=history)  # fmt: skip
    try:
        await web.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.listen_host, config.listen_port,
                  exc.strerror or exc)  # fmt: skip
        if simulator is not None:
            await simulator.stop()
        return 1
    where = config.listen_host or "0.0.0.0"  # what ":PORT" means
    scheme = "https" if web_config is not None and web_config.ssl_context else "http"
    log.info("listening on %s://%s:%d%s", scheme, where, web.port, config.telemetry_path)

    clients = [AMIClient(s, st) for s, st in zip(servers, states, strict=True)]
    tasks = [asyncio.create_task(c.run(), name=f"ami:{c.config.name}") for c in clients]
    tasks.append(asyncio.create_task(history.run(), name="history"))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await asyncio.wait([asyncio.create_task(c.stop()) for c in clients], timeout=SHUTDOWN_BUDGET)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await web.stop()
    if simulator is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(simulator.stop(), 0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["check"]:
        # `ami-exporter check [same flags]`: a one-shot diagnosis (ami_exporter.check).
        from ami_exporter.cli.check import main as check_main

        return check_main(argv[1:])
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = config_from_args(args, dict(os.environ), warn=log.warning)
    except ConfigError as exc:
        print(f"ami-exporter: error: {exc}", file=sys.stderr)
        return 2
    # Mask the secrets in every log line, in case a library ever echoes one.
    setup_logging(args.log_level, args.log_format, [s.secret for s in config.servers])
    try:
        return asyncio.run(serve(config, demo=args.demo))
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before the handler was set
        return 0
