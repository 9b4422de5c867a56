"""The configuration model: what the exporter and ``ami-exporter check`` run with.

Plain frozen data, validated up front from flags, environment and files
(:mod:`ami_exporter.config.flags`), so a bad deployment fails at start with exit code 2 instead
of misbehaving later. Secrets come from the environment or a file, never from a plain flag
(flags are visible to every user in the process list).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.config.web import WebConfig

DEFAULT_AMI_ADDRESS = "127.0.0.1:5038"
DEFAULT_LISTEN_ADDRESS = ":9815"
# Open HTTP connections at most (--web.max-connections). Prometheus needs one per scraper;
# 512 leaves room for many scrapers, proxies and browsers, and with the AMI sessions and
# files stays within half of the 1024 open-file limit that systemd and most containers give
# by default. At the cap the longest-idle connection is closed for the new one.
DEFAULT_MAX_CONNECTIONS = 512
# The optional collectors, each a --collector.<name> / --no-collector.<name> flag (the default
# of every server) and a per-server YAML key of the same name, and whether it is on by default.
COLLECTORS: Final = {
    "peers": True,
    "trunks": True,
    "rtp": True,
    "queues": False,
    "vicidial": False,
}


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
    # The other optional collectors (--collector.<name>, per-server YAML keys): peers and
    # registrations, trunks, RTP call quality.
    peers: bool = True
    trunks: bool = True
    rtp: bool = True

    @property
    def collectors(self) -> dict[str, bool]:
        """Each optional collector (:data:`COLLECTORS`) and whether it is on."""
        return {name: bool(getattr(self, name)) for name in COLLECTORS}

    @property
    def collectors_text(self) -> str:
        """``peers, trunks, rtp on; queues, vicidial off``: for ``check`` and the status page."""
        on = [name for name, enabled in self.collectors.items() if enabled]
        off = [name for name, enabled in self.collectors.items() if not enabled]
        parts = [f"{', '.join(on)} on"] if on else []
        parts += [f"{', '.join(off)} off"] if off else []
        return "; ".join(parts)

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
    # Every --web.listen-address, the first one (listen_host, listen_port) included.
    listen_addresses: tuple[tuple[str, int], ...] = ()
    enable_lifecycle: bool = False  # --web.enable-lifecycle: POST /-/reload
    # The --collector.* flags: each collector's default for every server (demo included).
    collectors: dict[str, bool] = field(default_factory=lambda: dict(COLLECTORS))
    shard: Shard | None = None  # --config.shard: which servers of the file this one watches

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return self.listen_addresses or ((self.listen_host, self.listen_port),)


@dataclass(frozen=True, slots=True)
class Shard:
    """``--config.shard=K/N``: this exporter watches the servers whose name hashes to ``K``.

    The hash is Prometheus's ``hashmod``: the MD5 of the name, its last 8 bytes read as a
    big-endian unsigned 64-bit number, modulo ``N``. So shard ``K`` of ``N`` watches exactly the
    servers a ``hashmod`` relabel rule with ``modulus: N`` maps to ``K`` (0-based, as a
    StatefulSet's pod ordinals), the same on every start and on every machine.
    """

    index: int
    total: int

    def owns(self, name: str) -> bool:
        return shard_of(name, self.total) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def shard_of(name: str, total: int) -> int:
    """Prometheus ``hashmod`` of ``name`` (UTF-8) with modulus ``total``."""
    digest = hashlib.md5(name.encode("utf-8", "surrogateescape"), usedforsecurity=False)
    return int.from_bytes(digest.digest()[8:], "big") % total
