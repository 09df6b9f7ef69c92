"""``tce stage2 ...`` end to end through the real command line, on real stage-1 PDI media."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import cli
from tests.stage2_export_manager import raw_datasets, stage1_datasets, tree_state, write_pdi

ROOT = Path(__file__).resolve().parents[2]
THREE_YEAR_POLICY = """\
id: trial-x
version: "2"
description: Trial X export with 3-year age bands.
base_profile: ps315-basic
options: [retain_safe_private, retain_patient_characteristics, retain_long_modified_dates,
          clean_descriptors, clean_structured_content]
parameters: {age_band_years: 3, age_cap_years: 90, date_mode: shift, compute_age: true}
overrides:
  - {tag: PatientAge, action: age_band}
"""


@pytest.fixture(autouse=True)
def _no_inherited_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TCE_CONFIG", raising=False)
    monkeypatch.delenv("TCE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdi(stage1_datasets(), tmp_path_factory.mktemp("m") / "media")


class Tce:
    """``tce --config <a fresh stage-2 node> ARGS`` in this process: (status, stdout, stderr)."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config, self.capsys = str(config), capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        status = cli.main(["--config", self.config, *args])
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err


@pytest.fixture
def tce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Tce:
    assert cli.main(["init", str(tmp_path / "node"), "--role", "stage2"]) == 0
    capsys.readouterr()
    return Tce(tmp_path / "node" / "tce.yaml", capsys)


def job_ids(table: str) -> dict[str, list[int]]:
    """Job ids by patient pseudonym, from the ``tce stage2 jobs`` table."""
    found: dict[str, list[int]] = {}
    for line in table.splitlines():
        m = re.match(r"(\d+)\s+2\.25\.\d+\s+(PSN\w+)\s", line)
        if m:
            found.setdefault(m.group(2), []).append(int(m.group(1)))
    return found


def test_import_review_approve_reject_and_history(tce: Tce, media: Path, tmp_path: Path) -> None:
    status, out, err = tce("stage2", "import", str(media))
    assert status == 0, err
    assert re.search(r"imported 22 instances of 5 studies \(4 patients\) from .* via the"
                     r" DICOMDIR", out)
    assert "new jobs pending approval: 1, 2, 3, 4, 5" in out

    status, out, _ = tce("stage2", "import", str(media))
    assert status == 0 and "already imported (media import 1): nothing to do" in out

    status, table, _ = tce("stage2", "jobs")
    assert status == 0
    assert table.splitlines()[0].split() == ["ID", "STUDY", "UID", "PATIENT", "STATE", "INST",
                                             "SENT", "POLICY", "UPDATED"]
    assert table.count("PENDING_APPROVAL") == 5
    assert "5 jobs, 5 studies, 4 patients" in table
    patients = job_ids(table)
    (twice,) = [p for p, ids in patients.items() if len(ids) == 2]
    assert f"patient {twice}: 2 jobs (studies of one patient)" in table
    first, second = patients[twice]
    other = next(ids[0] for p, ids in patients.items() if p != twice)

    status, out, _ = tce("stage2", "preview", str(first), "--policy", "research-age-band-5y")
    assert status == 0
    assert "policy research-age-band-5y v1" in out and re.search(r"date shift   [+-]\d+ days", out)
    assert "age          092Y -> 090Y (90 years or older)" in out

    policy_file = tmp_path / "trial-x.yaml"
    policy_file.write_text(THREE_YEAR_POLICY)
    status, out, err = tce("stage2", "approve", str(first), "--policy", str(policy_file),
                           "--approver", "Dr. Privacy", "--reason", "trial X")
    assert status == 0, err
    assert re.search(rf"job {first} \(2\.25\.\d+\): APPROVED with trial-x v2 \(sha256 \w{{12}}\)"
                     r" by Dr\. Privacy", out)
    status, out, _ = tce("stage2", "approve", str(second), "--policy", "research-age-band-5y",
                         "--approver", "Dr. Privacy", "--delay-until", "2999-01-01T00:00Z")
    assert status == 0 and "DELAYED until 2999-01-01T00:00+00:00" in out
    status, out, _ = tce("stage2", "reject", str(other), "--reason", "no consent",
                         "--by", "Dr. Privacy")
    assert status == 0 and f"job {other} " in out and "REJECTED" in out

    status, _, err = tce("stage2", "approve", str(other), "--policy", "research-age-band-5y",
                         "--approver", "x")
    assert status == 1 and f"job {other} is REJECTED" in err
    status, _, err = tce("stage2", "retry", str(first))
    assert status == 1 and "only FAILED jobs are retried" in err

    status, out, _ = tce("stage2", "job", str(first))
    assert status == 0
    assert out.startswith(f"job {first}  APPROVED")
    assert f"policy source    {policy_file}" in out and "approver         Dr. Privacy" in out
    assert f"same patient     job {second} (DELAYED)" in out
    history = out.split("  history\n")[1].splitlines()
    assert [line.split()[2] for line in history] == [
        "job.imported", "job.pending_approval", "job.approved"]
    assert "by Dr. Privacy [trial-x v2 sha256" in history[-1] and "reason=trial X" in history[-1]

    status, out, _ = tce("stage2", "approve", "--all-pending", "--policy",
                         "research-age-band-5y", "--approver", "po")
    assert status == 0 and out.count("APPROVED with research-age-band-5y v1") == 2
    status, out, _ = tce("stage2", "jobs", "--state", "pending_approval")
    assert status == 0 and out.strip() == "no jobs in state PENDING_APPROVAL"


def test_refused_media_exit_1_with_the_reason_and_stay_untouched(tce: Tce, tmp_path: Path) -> None:
    medium = write_pdi(raw_datasets(), tmp_path / "hospital")
    before = tree_state(medium)
    status, out, err = tce("stage2", "import", str(medium))
    assert status == 1 and out == ""
    assert "refused" in err and "PatientIdentityRemoved is not YES" in err
    assert "the medium was not changed" in err
    assert tree_state(medium) == before
    status, out, _ = tce("stage2", "jobs")
    assert "no stage-2 jobs yet" in out


def test_a_damaged_dicomdir_is_reported_on_stderr(tce: Tce, tmp_path: Path) -> None:
    medium = write_pdi(stage1_datasets()[:3], tmp_path / "damaged")
    (medium / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    status, out, err = tce("stage2", "import", str(medium))
    assert status == 0 and "via a folder scan" in out
    assert "no usable DICOMDIR" in err and "scanned the folder instead" in err


def test_usage_errors(tce: Tce, tmp_path: Path) -> None:
    status, _, err = tce("stage2", "approve", "--policy", "research-age-band-5y",
                         "--approver", "x")
    assert status == 1 and "give either STUDY or --all-pending" in err
    status, _, err = tce("stage2", "import", str(tmp_path / "nowhere"))
    assert status == 1 and "does not exist" in err
    status, _, err = tce("stage2", "job", "7")
    assert status == 1 and "no job 7" in err
    status, _, err = tce("stage2", "approve", "1", "--policy", "research-age-band-5x",
                         "--approver", "x")
    assert status == 1 and "research-age-band-5y" in err  # did you mean
    status, _, err = tce("stage2", "approve", "--all-pending", "--policy", "ps315-basic",
                         "--approver", "x", "--delay-until", "next tuesday")
    assert status == 1 and "is not an ISO 8601 time" in err


def test_export_and_serve_say_clearly_when_the_exporter_is_missing(
        tce: Tce, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "stage2_export_manager.exporter", None)
    monkeypatch.setitem(sys.modules, "stage2_export_manager.scheduler", None)
    for command in (["export"], ["serve"]):
        status, _, err = tce("stage2", *command)
        assert status == 1
        assert "'tce stage2 export' and 'tce stage2 serve' are not available" in err


def test_the_installed_command_imports_and_lists_in_a_real_process(
        tce: Tce, media: Path) -> None:
    command = [sys.executable, "-m", "appliance.cli", "--config", tce.config, "stage2"]
    done = subprocess.run([*command, "import", str(media)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported 22 instances of 5 studies" in done.stdout
    done = subprocess.run([*command, "jobs"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.count("PENDING_APPROVAL") == 5
