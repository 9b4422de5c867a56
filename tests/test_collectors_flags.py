"""``--collector.<name>`` / ``--no-collector.<name>`` / ``--collector.disable-defaults``, as in
node_exporter: each optional collector's default for every server, which a server's YAML key
of the same name overrides; shown by ``check`` and on the status page, and given to each
server's state (and, for queues, to the client's polls)."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from amiserver import TestAMIServer
from helpers import wait_for

from ami_exporter import __version__
from ami_exporter.cli.check import ServerReport
from ami_exporter.cli.fleet import Fleet, _new_client
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.flags import build_arg_parser, collectors_from_args, config_from_args
from ami_exporter.config.model import COLLECTORS, ServerConfig
from ami_exporter.web.statuspage import render_status_page

pytestmark = pytest.mark.unit

AMIServerFactory = Callable[..., Awaitable[TestAMIServer]]
DEFAULTS = {"peers": True, "trunks": True, "rtp": True, "queues": False, "vicidial": False}
ENV = {"AMI_SECRET": "s3cret"}


def collectors(*argv: str) -> dict[str, bool]:
    return collectors_from_args(build_arg_parser(__version__).parse_args(list(argv)))


def config(*argv: str) -> tuple[ServerConfig, ...]:
    args = build_arg_parser(__version__).parse_args(list(argv))
    return config_from_args(args, ENV).servers


def test_the_collectors_and_their_defaults() -> None:
    assert dict(COLLECTORS) == DEFAULTS  # queues and vicidial stay opt-in, as in the YAML
    assert collectors() == DEFAULTS


@pytest.mark.parametrize(
    ("argv", "changed"),
    [
        (["--no-collector.peers"], {"peers": False}),
        (["--no-collector.trunks", "--no-collector.rtp"], {"trunks": False, "rtp": False}),
        (["--collector.queues", "--collector.vicidial"], {"queues": True, "vicidial": True}),
        (
            ["--collector.disable-defaults"],
            {"peers": False, "trunks": False, "rtp": False},
        ),
        (
            ["--collector.disable-defaults", "--collector.rtp", "--collector.queues"],
            {"peers": False, "trunks": False, "queues": True},
        ),
        # The last of a pair wins, as kingpin's --[no-]flag does.
        (["--collector.peers", "--no-collector.peers"], {"peers": False}),
        (["--no-collector.queues", "--collector.queues"], {"queues": True}),
    ],
)
def test_collector_flags(argv: list[str], changed: dict[str, bool]) -> None:
    assert collectors(*argv) == {**DEFAULTS, **changed}


def test_the_flags_are_in_the_help() -> None:
    text = build_arg_parser(__version__).format_help()
    for name in DEFAULTS:
        assert f"--collector.{name}" in text
    assert "--collector.disable-defaults" in text


def test_a_single_server_from_flags_takes_them() -> None:
    (server,) = config("--ami.username", "u", "--no-collector.rtp", "--collector.queues")
    assert server.collectors == {**DEFAULTS, "rtp": False, "queues": True}


SERVERS = """\
servers:
  - name: plain
    address: 127.0.0.1:5038
    username: u
    secret: s
  - name: own
    address: 127.0.0.1:5039
    username: u
    secret: s
    peers: true
    trunks: false
    queues: false
    vicidial: true
"""


def test_yaml_keys_override_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(SERVERS)
    flags = ["--config.file", str(path), "--no-collector.peers", "--collector.queues"]
    plain, own = config(*flags)
    assert plain.collectors == {**DEFAULTS, "peers": False, "queues": True}
    assert own.collectors == {**DEFAULTS, "trunks": False, "vicidial": True}
    # Without flags: the defaults under the keys.
    plain, own = config("--config.file", str(path))
    assert plain.collectors == DEFAULTS
    assert own.collectors == {**DEFAULTS, "trunks": False, "vicidial": True}
    plain, own = config("--config.file", str(path), "--collector.disable-defaults")
    assert plain.collectors == dict.fromkeys(DEFAULTS, False)
    assert own.collectors == {**dict.fromkeys(DEFAULTS, False), "peers": True, "vicidial": True}


@pytest.mark.parametrize("key", ["peers", "trunks", "rtp"])
def test_a_bad_yaml_value_names_file_and_line(tmp_path: Path, key: str) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(SERVERS.split("  - name: own")[0] + f"    {key}: maybe\n")
    with pytest.raises(ConfigError) as err:
        config("--config.file", str(path))
    assert str(err.value) == f"{path}:6: {key}: 'maybe' must be true or false"


def test_a_server_s_state_gets_its_collectors(tmp_path: Path) -> None:
    path = tmp_path / "servers.yml"
    path.write_text(SERVERS)
    _, own = config("--config.file", str(path), "--no-collector.rtp")
    state = _new_client(own).state
    assert state.features == {
        "peers": True,
        "trunks": False,
        "rtp": False,
        "queues": False,
        "vicidial": True,
    }
    assert state.vicidial.enabled
    page = render_status_page([state], None, now=0).decode()
    assert "collectors on: peers, vicidial" in page


def test_check_shows_the_collectors_of_each_server() -> None:
    server = ServerConfig("pbx", "127.0.0.1", 5038, "u", "s", rtp=False, queues=True)
    text = ServerReport(server).render()
    assert text.splitlines()[-1] == "[INFO] collectors: peers, trunks, queues on; rtp, vicidial off"
    off = ServerConfig("pbx", "127.0.0.1", 5038, "u", "s", peers=False, trunks=False, rtp=False)
    assert (
        ServerReport(off).render().endswith("collectors: peers, trunks, rtp, queues, vicidial off")
    )


@pytest.mark.parametrize("queues", [True, False])
async def test_queues_flag_gates_the_queue_polls(
    ami_server: AMIServerFactory, queues: bool
) -> None:
    ami = await ami_server()
    flag = "--collector.queues" if queues else "--no-collector.queues"
    (server,) = config(
        "--ami.address",
        f"127.0.0.1:{ami.port}",
        "--ami.username",
        "exporter",
        "--ami.resync-interval",
        "300ms",
        flag,
    )
    fleet = Fleet()
    fleet.start([server])
    try:
        # A second resync starts only once the first one's optional polls are all done.
        await wait_for(lambda: ami.actions.count("CoreShowChannels") >= 2, 5, "two resyncs")
        polled = ("QueueStatus" in ami.actions, "QueueSummary" in ami.actions)
        assert polled == (queues, queues), ami.actions
        assert "SIPpeers" in ami.actions  # peers: on by default
    finally:
        await fleet.stop(1.0)
    out = io.StringIO()
    print(ServerReport(server).render(), file=out)
    assert ("queues on" in out.getvalue()) is queues


def test_the_demo_turns_every_collector_on_unless_turned_off() -> None:
    assert collectors("--demo") == dict.fromkeys(DEFAULTS, True)
    assert collectors("--demo", "--no-collector.rtp")["rtp"] is False
    assert collectors("--demo", "--collector.disable-defaults") == dict.fromkeys(DEFAULTS, False)
