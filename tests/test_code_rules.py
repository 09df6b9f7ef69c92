"""The code rules DEVELOPERS.md sets, checked on every run so that CI refuses a change breaking
them: ruff-clean everywhere, mypy strict on the engine, mypy on the rest of the product and on
the tests. Each checker runs as the developer would run it, from the project root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.skip(f"{argv[0]} is not installed (pip install -e '.[test]')")
    return subprocess.run([str(tool), *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("argv", [
    ("--strict", "policies"),
    ("appliance", "stage1_modality", "stage2_export_manager", "receiver", "pdi", "benchmarks"),
    ("tests",),
], ids=["engine-strict", "product", "tests"])
def test_mypy_finds_nothing(argv: tuple[str, ...], tmp_path: Path) -> None:
    done = _run("mypy", "--cache-dir", str(tmp_path / "cache"), *argv)
    assert done.returncode == 0, done.stdout + done.stderr
