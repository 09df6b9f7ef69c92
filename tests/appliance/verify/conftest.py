"""Clean output made by the real engine, copied per test so that each test seeds its own leak.

``clean`` runs ``tce deidentify`` once per policy on the synthetic sample (with its planted PHI)
and hands each test a fresh copy; ``verify`` runs ``tce verify`` in process and returns the exit
status, the JSON report and the human summary, exactly as an operator would see them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.cli import main
from appliance.synthetic import write_sample

POLICIES = ("ps315-basic", "research-age-band-5y", "stage1-pseudonymize", "safe-harbor")


@dataclass
class Result:
    code: int
    report: dict[str, Any]
    summary: str
    stderr: str

    def findings(self, check: str | None = None, severity: str | None = None
                 ) -> list[dict[str, str]]:
        return [f for f in self.report.get("findings", [])
                if (check is None or f["check"] == check)
                and (severity is None or f["severity"] == severity)]

    def errors(self, check: str | None = None) -> list[dict[str, str]]:
        return self.findings(check, "error")

    def warnings(self, check: str | None = None) -> list[dict[str, str]]:
        return self.findings(check, "warning")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="session")
def config(workspace: Path) -> Path:
    """A node made by ``tce init`` (key ring, quarantine) for ``tce deidentify``."""
    assert main(["init", str(workspace / "node"), "--role", "all"]) == 0
    return workspace / "node" / "tce.yaml"


@pytest.fixture(scope="session")
def sample(workspace: Path) -> Path:
    write_sample(workspace / "sample")
    return workspace / "sample"


@pytest.fixture(scope="session")
def clean_outputs(workspace: Path, config: Path, sample: Path) -> dict[str, Path]:
    """``tce deidentify`` of the sample under each policy (exit 1: the truncated file and,
    under research policies, the burned-in capture are quarantined, never written)."""
    made = {}
    for policy in POLICIES:
        out = workspace / f"clean-{policy}"
        code = main(["--config", str(config), "deidentify", str(sample), str(out),
                     "--policy", policy, "--no-progress"])
        assert code == 1 and any(out.rglob("*.dcm"))
        made[policy] = out
    return made


@pytest.fixture
def clean(clean_outputs: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A fresh copy of the clean output of a policy, for one test to damage."""

    def copy(policy: str) -> Path:
        target = tmp_path / policy
        shutil.copytree(clean_outputs[policy], target)
        return target

    return copy


@pytest.fixture
def verify(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """``tce verify ARGS``: the JSON report (``--json``) and, separately, the summary."""

    def run(*args: str | Path, config: Path | None = None) -> Result:
        prefix = ["--config", str(config)] if config is not None else []
        argv = [*prefix, "verify", *map(str, args)]
        capsys.readouterr()
        code = main([*argv, "--json"])
        captured = capsys.readouterr()
        report = json.loads(captured.out) if captured.out.strip() else {}
        summary_code = main(argv)
        summary = capsys.readouterr()
        assert summary_code == code
        return Result(code, report, summary.out, captured.err + summary.err)

    yield run


def instances(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR"
                  and p.suffix in ("", ".dcm") and pydicom.misc.is_dicom(p))


def find(folder: Path, test: Callable[[Dataset], bool]) -> Path:
    """The first DICOM file under ``folder`` whose header passes ``test``."""
    for path in instances(folder):
        if test(pydicom.dcmread(path, stop_before_pixels=True)):
            return path
    raise AssertionError(f"no matching file under {folder}")


def edit(path: Path, change: Callable[[Dataset], object]) -> Path:
    """Read the whole file, change it, write it back (a leak seeded after the fact)."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
