"""``--config.shard=K/N``: N exporters share one servers file, each watching the servers whose
name hashes to K (Prometheus ``hashmod``: MD5 of the name, last 8 bytes big-endian, mod N).

The hash is computed in the tests from its definition (hashlib), and in the end-to-end test by
a real Prometheus itself: a ``hashmod`` metric relabel rule labels every series by the shard
Prometheus computes for its ``server``, which must be the shard of the exporter it came from.
Tiers per test: the parsing and selection are unit, the processes e2e.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    PROMETHEUS_HINT,
    Proc,
    clean_env,
    free_port,
    http_get,
    one_error_line,
    require_binary,
    run_exporter,
)

from ami_exporter import __version__
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.flags import build_arg_parser, config_from_args, parse_shard
from ami_exporter.config.model import Shard, shard_of
from ami_simulator.server import SimulatedAsterisk

SHARDS = 3
SERVERS = 30
DEADLINE = 60.0  # the whole end-to-end test, seconds


def hashmod(name: str, modulus: int) -> int:
    """Prometheus's hashmod (relabel.go): md5, the last 8 bytes as a big-endian uint64."""
    digest = hashlib.md5(name.encode()).digest()  # noqa: S324 - not for security
    return int.from_bytes(digest[8:16], byteorder="big", signed=False) % modulus


def servers_yaml(servers: list[tuple[str, int]]) -> str:
    lines = ["servers:"]
    for name, port in servers:
        lines += [
            f"  - name: {name}",
            f"    address: 127.0.0.1:{port}",
            "    username: exporter",
            "    secret: s3cret",
        ]
    return "\n".join(lines) + "\n"


def load(path: Path, *argv: str) -> list[str]:
    args = build_arg_parser(__version__).parse_args(["--config.file", str(path), *argv])
    return [s.name for s in config_from_args(args, {}).servers]


# ---------------------------------------------------------------------------- unit


@pytest.mark.unit
@pytest.mark.parametrize(("text", "shard"), [("0/1", (0, 1)), ("2/3", (2, 3)), (" 1/16 ", (1, 16))])
def test_parse_shard(text: str, shard: tuple[int, int]) -> None:
    assert parse_shard(text) == Shard(*shard)
    assert str(parse_shard(text)) == f"{shard[0]}/{shard[1]}"


@pytest.mark.unit
@pytest.mark.parametrize("text", ["3/3", "-1/3", "1/0", "0/0", "a/b", "1", "", "1/2/3", "1.0/2"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_shard(text)
    assert str(err.value).startswith(f"--config.shard: {text!r}")


@pytest.mark.unit
def test_the_hash_is_prometheus_hashmod() -> None:
    names = [f"pbx-{i:02d}" for i in range(200)] + ["", "dialer/1", "\u00e9t\u00e9", "a" * 300]
    for modulus in (1, 2, 3, 7, 64):
        for name in names:
            assert shard_of(name, modulus) == hashmod(name, modulus), (name, modulus)
    # Stable: pinned values (of the formula above), the same on every run and machine;
    # Python's hash() of a str would change at every start (PYTHONHASHSEED).
    assert [shard_of(f"pbx-{i:02d}", 3) for i in range(10)] == [1, 0, 0, 0, 2, 0, 2, 2, 0, 2]


@pytest.mark.unit
def test_shards_partition_the_file(tmp_path: Path) -> None:
    names = [f"pbx-{i:02d}" for i in range(SERVERS)]
    path = tmp_path / "servers.yml"
    path.write_text(servers_yaml([(n, 5038) for n in names]))
    seen: list[str] = []
    for k in range(SHARDS):
        mine = load(path, "--config.shard", f"{k}/{SHARDS}")
        assert mine == [n for n in names if hashmod(n, SHARDS) == k]  # in file order
        seen += mine
    assert sorted(seen) == names  # each exactly once
    assert load(path, "--config.shard", "0/1") == names


@pytest.mark.unit
def test_the_whole_file_is_checked_by_every_shard(tmp_path: Path) -> None:
    """A bad entry fails every shard alike, not only the one it hashes to."""
    path = tmp_path / "servers.yml"
    text = servers_yaml([("pbx-00", 5038), ("pbx-01", 5039)])
    path.write_text(text.replace("address: 127.0.0.1:5039", "address: nowhere"))
    for k in range(SHARDS):
        with pytest.raises(ConfigError) as err:
            load(path, "--config.shard", f"{k}/{SHARDS}")
        assert str(err.value).startswith(f"{path}:7: address")


@pytest.mark.e2e
def test_bad_shard_flags_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(servers_yaml([("pbx-00", 5038)]))
    env = clean_env(AMI_SECRET="shard-Secret-1", AMI_USERNAME="u")
    line = one_error_line(
        run_exporter(["--config.file", str(path), "--config.shard", "3/3"], tmp_path, env)
    )
    assert "--config.shard: '3/3': K must be 0 to N-1" in line
    line = one_error_line(run_exporter(["--config.shard=1/2"], tmp_path, env))
    assert "--config.shard needs --config.file" in line


# ---------------------------------------------------------------------------- end to end


def prom_get(base: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus API answer; None while it starts (503: not ready yet)."""
    query = urllib.parse.urlencode(params)
    status, body = http_get(f"{base}{path}?{query}", timeout=5)
    if status == 503:
        return None
    assert status == 200, body
    return json.loads(body)["data"]


@pytest.mark.e2e
@pytest.mark.timeout(DEADLINE + 30)
async def test_three_shards_and_a_real_prometheus_see_every_server_once(
    tmp_path: Path,
    procs: list[Proc],
    make_simulator: Callable[..., Awaitable[SimulatedAsterisk]],
) -> None:
    prometheus = require_binary("prometheus", install=PROMETHEUS_HINT)
    started = time.monotonic()
    sims = [await make_simulator() for _ in range(SERVERS)]
    names = [f"pbx-{i:02d}" for i in range(SERVERS)]
    config = tmp_path / "servers.yml"
    config.write_text(servers_yaml([(n, s.port) for n, s in zip(names, sims, strict=True)]))
    ports = []
    for k in range(SHARDS):
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "ami_exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={config}",
            f"--config.shard={k}/{SHARDS}",
        ]
        exporter = Proc(argv, tmp_path, clean_env(), f"shard{k}")
        procs.append(exporter)
        ports.append((exporter, port))

    prom_port = free_port()
    prom_config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "ami",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"exporter_shard": str(k)}}
                    for k, (_, port) in enumerate(ports)
                ],
                # Prometheus computes the shard of each series' server itself.
                "metric_relabel_configs": [
                    {
                        "source_labels": ["server"],
                        "regex": "(.+)",
                        "modulus": SHARDS,
                        "target_label": "prometheus_shard",
                        "action": "hashmod",
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
    prom = Proc(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path,
        clean_env(),
        "prometheus",
    )
    procs.append(prom)
    base = f"http://127.0.0.1:{prom_port}"

    def all_up() -> list[dict[str, Any]] | None:
        try:
            data = prom_get(base, "/api/v1/query", query="asterisk_ami_up == 1")
        except OSError:  # not listening yet
            return None
        result = data["result"] if data is not None else []
        return result if len(result) >= SERVERS else None

    result = None
    while result is None:
        for exporter, _ in ports:
            assert exporter.proc.poll() is None, exporter.stderr
        assert prom.proc.poll() is None, prom.stderr[-3000:]
        assert time.monotonic() - started < DEADLINE, (
            f"not every server up in Prometheus within {DEADLINE} s:\n{prom.stderr[-2000:]}"
        )
        await asyncio.sleep(0.25)  # the simulators are served by this loop meanwhile
        result = await asyncio.to_thread(all_up)

    # Every server exactly once, from the exporter of its shard, as Prometheus hashes it.
    servers = [r["metric"]["server"] for r in result]
    assert sorted(servers) == names, servers
    for series in result:
        labels = series["metric"]
        assert labels["exporter_shard"] == labels["prometheus_shard"], labels
        assert int(labels["exporter_shard"]) == hashmod(labels["server"], SHARDS)
    # Each shard says what it watches.
    total = 0
    for k, (exporter, _) in enumerate(ports):
        mine = [n for n in names if hashmod(n, SHARDS) == k]
        assert f'msg="shard {k}/{SHARDS}: watching {len(mine)} servers' in exporter.stderr
        total += len(mine)
    assert total == SERVERS
    assert time.monotonic() - started < DEADLINE
