"""``tce sample`` and ``tce deidentify`` as an operator runs them: exit codes, summary, report,
quarantine, dry-run preview and configuration errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.commands.deidentify import Progress
from appliance.synthetic import (
    TRUNCATED_FILE,
    make_sample_study_set,
    original_uids,
    planted_phi,
    sample_patients,
    write_datasets,
)

TCE = Path(sys.executable).parent / "tce"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configured node (tce init) whose tce.yaml is found through TCE_CONFIG."""
    monkeypatch.delenv("TCE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(tmp_path / "node")]) == 0
    monkeypatch.setenv("TCE_CONFIG", str(tmp_path / "node" / "tce.yaml"))
    return tmp_path / "node"


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def test_sample_then_deidentify_in_a_real_process(node: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TCE_CONFIG": str(node / "tce.yaml")}
    sample, out, report = tmp_path / "sample", tmp_path / "out", tmp_path / "report.json"
    made = subprocess.run([TCE, "sample", sample], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "wrote 22 DICOM files" in made.stdout

    result = subprocess.run(
        [TCE, "deidentify", sample, out, "--policy", "ps315-basic", "--jobs", "2",
         "--report", report], env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # the truncated file was quarantined
    assert "instances      22 written (5 studies, 12 series)" in result.stdout
    assert f"quarantined    1 copied to {node / 'quarantine'}" in result.stdout
    assert "1 not DICOM" in result.stdout
    assert "truncated: PixelData is shorter than declared" in result.stdout
    assert "\r" not in result.stderr, "no progress line when stderr is not a terminal"
    assert len(dicom_files(out)) == 22
    quarantined = sorted(p.name for p in (node / "quarantine").iterdir())
    assert len(quarantined) == 2 and quarantined[1] == quarantined[0] + ".reason.json"
    assert (node / "quarantine" / quarantined[0]).read_bytes() == (
        sample / TRUNCATED_FILE).read_bytes()
    counts = json.loads(report.read_text())["counts"]
    assert (counts["instances"], counts["quarantined"], counts["skipped"]) == (22, 1, 1)
    for text in (result.stdout, result.stderr, report.read_text()):
        for canary in planted_phi(sample_patients(0)):
            assert canary not in text


def test_burned_in_capture_is_quarantined_under_research_policy(node: Path,
                                                                tmp_path: Path) -> None:
    assert main(["sample", str(tmp_path / "s")]) == 0
    code = main(["deidentify", str(tmp_path / "s"), str(tmp_path / "o"),
                 "--policy", "research-age-band-5y"])
    assert code == 1
    assert len(dicom_files(tmp_path / "o")) == 21
    reasons = [json.loads(p.read_text())["reason"]
               for p in (node / "quarantine").glob("*.reason.json")]
    assert any(r.startswith("refused by policy: BurnedInAnnotation") for r in reasons)


def test_clean_input_exits_zero(node: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    write_datasets(make_sample_study_set(0)[:4], tmp_path / "in")
    assert main(["deidentify", str(tmp_path / "in"), str(tmp_path / "o"),
                 "--policy", "ps315-basic"]) == 0
    out = capsys.readouterr().out
    assert "quarantined    0" in out and "failed         0" in out
    assert not list((node / "quarantine").iterdir())


def test_dry_run_previews_values_on_the_terminal_only(node: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    report = tmp_path / "r.json"
    code = main(["deidentify", str(tmp_path / "s"), str(tmp_path / "o"), "--policy",
                 "ps315-basic", "--dry-run", "--sample", "2", "--report", str(report)])
    assert code == 1  # the truncated file would be quarantined
    out = capsys.readouterr().out
    first = make_sample_study_set(0)[0]
    assert out.count("\n== ") == 2
    assert f"{first.PatientName}  ->  (empty)" in out  # PatientName Z, shown to the operator
    assert "U         SOPInstanceUID" in out and str(first.SOPInstanceUID) in out
    assert "22 would be written" in out and "1 would be copied to" in out
    assert not (tmp_path / "o").exists()
    assert not list((node / "quarantine").iterdir())
    text = report.read_text()
    assert json.loads(text)["dry_run"] is True
    for canary in [*planted_phi(sample_patients(0)), *original_uids([first])]:
        assert canary not in text


def test_no_configuration_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TCE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    write_datasets(make_sample_study_set(0)[:1], tmp_path / "in")
    assert main(["deidentify", str(tmp_path / "in"), str(tmp_path / "o"),
                 "--policy", "ps315-basic"]) == 2
    assert "no configuration found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "no-such-policy"], "no-such-policy"),
    (["--policy", "ps315-basic", "--in", "missing"], "does not exist"),
    (["--policy", "ps315-basic", "--out-is-in"], "same folder"),
])
def test_bad_arguments_exit_two(node: Path, tmp_path: Path, args: list[str], message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    write_datasets(make_sample_study_set(0)[:1], tmp_path / "in")
    in_dir, out_dir = tmp_path / "in", tmp_path / "o"
    if "--in" in args:
        in_dir = tmp_path / args.pop(args.index("--in") + 1)
        args.remove("--in")
    if "--out-is-in" in args:
        args.remove("--out-is-in")
        out_dir = in_dir
    assert main(["deidentify", str(in_dir), str(out_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_quarantine_inside_out_is_refused(node: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_datasets(make_sample_study_set(0)[:1], tmp_path / "in")
    assert main(["deidentify", str(tmp_path / "in"), str(node), "--policy", "ps315-basic"]) == 2
    assert "inside OUT" in capsys.readouterr().err


def test_sample_refuses_a_folder_that_is_not_empty(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "mine.txt").write_text("keep me")
    assert main(["sample", str(tmp_path / "s")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["mine.txt"]


def test_progress_line_redraws_in_place() -> None:
    stream = io.StringIO()
    bar = Progress(stream)
    bar(5, 10, 5_000_000, 1.0)
    bar(10, 10, 10_000_000, 2.0)
    bar.clear()
    text = stream.getvalue()
    assert text.startswith("\r5/10 files   50%  5.0 files/s  5.0 MB/s")
    assert "\r10/10 files  100%" in text and text.endswith("\r") and "\n" not in text
