"""The configuration model: what the exporter and ``ami-exporter check`` run with.

Plain frozen data, validated up front from flags, environment and files
(:mod:`ami_exporter.config.flags`), so a bad deployment fails at start with exit code 2 instead
of misbehaving later. Secrets come from the environment or a file, never from a plain flag
(flags are visible to every user in the process list).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ami_exporter.config.web import WebConfig

DEFAULT_AMI_ADDRESS = "127.0.0.1:5038"
DEFAULT_LISTEN_ADDRESS = ":9815"
# Open HTTP connections at most (--web.max-connections). Prometheus needs one per scraper;
# 512 leaves room for many scrapers, proxies and browsers, and with the AMI sessions and
# files stays within half of the 1024 open-file limit that systemd and most containers give
# by default. At the cap the longest-idle connection is closed for the new one.
DEFAULT_MAX_CONNECTIONS = 512


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
    # Trunks: endpoints matching include (default: not all digits) and not exclude (re.search).
    trunks_include: str | None = None
    trunks_exclude: str | None = None
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
    web: WebConfig | None = None  # --web.config.file, parsed and checked once at start
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # --web.max-connections
