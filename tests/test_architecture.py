"""The shape of the code: import contracts, function length, lint, types.

These run the project's own static checks inside the suite, so CI (which runs the README's
test command) enforces them: the import-linter contracts of ``pyproject.toml`` (the data flows
socket -> session -> state -> metrics -> web, no cycles), no function over 80 lines, ruff
(with its complexity rules) and strict mypy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "src"
MAX_FUNCTION_LINES = 80


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


_LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def test_import_contracts_are_kept() -> None:
    # What the `lint-imports` console script runs, with the contracts of pyproject.toml.
    done = subprocess.run(
        [sys.executable, "-c", _LINT_IMPORTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_function_is_longer_than_80_lines() -> None:
    long: list[str] = []
    for path in sorted(SOURCES.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_ruff_lint_and_format_are_clean() -> None:
    lint = _run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    done = _run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_exporter_loads_the_simulator_only_for_the_demo() -> None:
    # import-linter sees imports in the source; this checks what a started process loads.
    probe = (
        "import sys, ami_exporter.cli.main, ami_exporter.cli.serve;"
        "sys.exit(any(m.split('.')[0] == 'ami_simulator' for m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": str(SOURCES), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr or "ami_simulator was imported"
