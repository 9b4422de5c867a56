"""``python -m build`` makes an sdist and a wheel that ``twine check`` passes, and the wheel
installs and runs in a fresh virtual environment; the Dockerfile's builder makes the same wheel.

Nothing is downloaded: the build runs ``--no-isolation`` with the installed backend (the test
extra has ``build``, ``twine`` and ``setuptools``), from a copy of the source tree (nothing is
written into the checkout), and the venv sees the installed dependencies through
``--system-site-packages`` and installs the wheel with ``--no-index``. The installed program runs
with no ``PYTHONPATH`` and outside the checkout, so what runs is what the wheel holds.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, free_port, http_get, metric_values

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
assert VERSION is not None
NAME = f"ami_exporter-{VERSION.group(1)}"
IGNORED = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", ".*cache", ".hypothesis", "build", "dist", "*.egg-info"
)


def run(argv: list[str], cwd: Path, timeout: float = 120, **env: str) -> str:
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        argv,
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{shlex.join(argv)}: exit {result.returncode}\n" + (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    return result.stdout + result.stderr


def build(source: Path, out: Path, *what: str) -> None:
    run([sys.executable, "-m", "build", "--no-isolation", *what, "--outdir", str(out), "."], source)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout, without git and caches: what the build reads."""
    tree = tmp_path_factory.mktemp("source") / "tree"
    shutil.copytree(REPO, tree, ignore=IGNORED)
    return tree


@pytest.fixture(scope="module")
def dist(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build(source, out)
    return out


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return sorted(line for line in out.splitlines() if line)


def test_twine_check_is_clean(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir())
    assert [Path(f).name for f in files] == [f"{NAME}-py3-none-any.whl", f"{NAME}.tar.gz"]
    output = run([sys.executable, "-m", "twine", "check", "--strict", *files], dist)
    assert output.count("PASSED") == 2, output
    assert "WARNING" not in output and "ERROR" not in output, output


def test_the_wheel_holds_the_package_data(dist: Path) -> None:
    with zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"{NAME}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"{NAME}.dist-info/entry_points.txt").decode()
    templates = {p.name for p in (REPO / "src/ami_exporter/web/templates").iterdir()}
    scripts = {p.name for p in (REPO / "src/ami_simulator/scripts").glob("*.json")}
    assert templates and scripts
    for name in templates:
        assert f"ami_exporter/web/templates/{name}" in names
    for name in scripts:
        assert f"ami_simulator/scripts/{name}" in names
    assert {"ami_exporter/py.typed", "ami_simulator/py.typed"} <= names
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "ami-exporter = ami_exporter.cli.main:main" in entry_points


def test_the_sdist_is_the_source_tree(source: Path, dist: Path) -> None:
    """The whole tree (everything git tracks: the tests and their captures too), and besides
    it only what setuptools writes (PKG-INFO, setup.cfg, the egg-info)."""
    with tarfile.open(dist / f"{NAME}.tar.gz") as sdist:
        members = {m.name.removeprefix(f"{NAME}/") for m in sdist.getmembers() if m.isfile()}
    missing = sorted(set(tracked_files()) - members)
    assert not missing, f"tracked files not in the sdist (add them to MANIFEST.in): {missing}"
    tree = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()}
    generated = {m for m in members - tree if m.startswith("src/ami_exporter.egg-info/")}
    assert members - generated == tree | {"PKG-INFO", "setup.cfg"}


def test_the_wheel_installs_and_runs_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    python, program = venv / "bin" / "python", venv / "bin" / "ami-exporter"
    wheel = dist / f"{NAME}-py3-none-any.whl"
    # --ignore-installed: the checkout's own (editable) install is in the system site too.
    pip = [str(python), "-m", "pip", "install", "--no-index", "--ignore-installed", "--no-deps"]
    run([*pip, str(wheel)], tmp_path)
    where = run([str(python), "-c", "import ami_exporter; print(ami_exporter.__file__)"], tmp_path)
    assert where.strip().startswith(str(venv)), where
    version = run([str(program), "--version"], tmp_path)
    assert version.startswith(f"ami-exporter {VERSION.group(1)} (python "), version
    # A short --demo: the simulator's scripts and the page templates come from the wheel.
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [str(program), "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        body = ""
        while not metric_values(body, "asterisk_ami_up", "server").get("demo"):
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
            time.sleep(0.1)
            try:
                body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            except OSError:
                body = ""
        builds = metric_values(body, "ami_exporter_build_info", "version")
        assert builds == {VERSION.group(1): 1.0}
        status, page = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "AMI Exporter" in page and '<span class="name">demo</span>' in page
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            assert demo.wait(timeout=10) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
            log.close()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def dockerfile_builder() -> tuple[list[str], str]:
    """The builder stage's COPY sources and the RUN that builds the project's wheel."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    builder = text.split("\nFROM ")[1]  # the first stage, after its FROM
    copies = [
        src
        for line in builder.splitlines()
        if line.startswith("COPY ")
        for src in shlex.split(line)[1:-1]
    ]
    runs = [line for line in builder.splitlines() if line.startswith("RUN ") and " build " in line]
    assert len(runs) == 1, runs
    return copies, runs[0]


def test_the_dockerfile_builds_the_same_wheel(dist: Path, tmp_path: Path) -> None:
    """The builder stage, without Docker: its COPY inputs only, its build command."""
    copies, command = dockerfile_builder()
    assert "python -m build --wheel --no-isolation" in command
    context = tmp_path / "context"
    context.mkdir()
    for src in copies:
        path = REPO / src.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, context / src.rstrip("/"), ignore=IGNORED)
        else:
            shutil.copy2(path, context / src)
    out = tmp_path / "out"
    build(context, out, "--wheel")
    (docker_wheel,) = out.iterdir()
    with (
        zipfile.ZipFile(docker_wheel) as ours,
        zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as theirs,
    ):
        assert docker_wheel.name == f"{NAME}-py3-none-any.whl"
        assert ours.read(f"{NAME}.dist-info/RECORD") == theirs.read(f"{NAME}.dist-info/RECORD")
