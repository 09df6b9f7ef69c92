"""Output the real engine made passes verification, and the report shows no PHI.

Each built-in policy's output of the synthetic sample (planted PHI in names, IDs, addresses,
private blocks, nested sequences, free text) must verify with exit status 0: warnings for
review are allowed, errors are not. The policy is found from the files' markers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.synthetic import planted_phi, sample_patients
from tests.appliance.verify.conftest import POLICIES, Result, edit, instances


@pytest.mark.parametrize("policy", POLICIES)
def test_clean_output_passes_and_names_its_policy(policy: str, clean_outputs: dict[str, Path],
                                                  verify: Callable[..., Result]) -> None:
    result = verify(clean_outputs[policy])
    assert result.code == 0, result.summary
    assert result.report["result"] == "passed" and result.errors() == []
    (used,) = result.report["policies"]
    assert (used["id"], used["chosen_by"]) == (policy, "De-identification Method")
    assert used["files"] == result.report["files"]["dicom"] >= 21
    assert f"policy         {policy} v1" in result.summary
    assert "result: PASSED" in result.summary


def test_review_flags_are_warnings_listed_for_review(clean_outputs: dict[str, Path],
                                                     verify: Callable[..., Result]) -> None:
    # ps315-basic does not request Clean Pixel Data, so the burned-in capture is written
    result = verify(clean_outputs["ps315-basic"], "--policy", "ps315-basic")
    assert result.code == 0
    assert [w["path"] for w in result.warnings("burned-in")] == ["BurnedInAnnotation"]
    assert len(result.warnings("review-modality")) == 3  # three secondary captures
    assert "WARNINGS (for review)" in result.summary
    assert "review-modality] 3 files" in result.summary
    assert result.report["policies"][0]["chosen_by"] == "--policy"


def test_reports_hold_no_phi(clean_outputs: dict[str, Path], sample: Path,
                             verify: Callable[..., Result], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = verify(sample, "--policy", "ps315-basic", "--report", report)
    assert result.code == 1 and len(result.errors()) > 500  # the raw sample: nothing removed
    text = result.summary + str(result.report) + report.read_text()
    for canary in planted_phi(sample_patients(0)):
        assert canary not in text


def test_wrong_policy_is_caught_by_the_markers(clean_outputs: dict[str, Path],
                                               verify: Callable[..., Result]) -> None:
    result = verify(clean_outputs["ps315-basic"], "--policy", "research-age-band-5y")
    assert result.code == 1
    messages = {f["message"] for f in result.errors("marker")}
    assert any("does not name policy 'research-age-band-5y'" in m for m in messages)
    assert any("it names policy 'ps315-basic' v1" in m for m in messages)


def test_file_without_markers_is_checked_against_the_rest_of_the_set(
        clean: Callable[[str], Path], verify: Callable[..., Result]) -> None:
    out = clean("research-age-band-5y")
    stripped = edit(instances(out)[0], lambda ds: [ds.pop(t) for t in
                                                   (0x00120062, 0x00120063, 0x00120064)])
    result = verify(out)
    assert result.code == 1
    hits = {(f["path"], f["file"]) for f in result.errors("marker")}
    name = stripped.relative_to(out).as_posix()
    assert {("PatientIdentityRemoved", name), ("DeidentificationMethod", name)} <= hits
    assert "the rest of the set" in str(result.report["policies"])


def test_no_markers_anywhere_needs_policy(sample: Path, verify: Callable[..., Result]) -> None:
    result = verify(sample)
    assert result.code == 2
    assert "pass --policy" in result.stderr


def test_policy_not_built_in_needs_policy_file(clean: Callable[[str], Path],
                                               verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")
    for path in instances(out):
        edit(path, lambda ds: setattr(ds, "DeidentificationMethod",
                                      "tce my-trial v3 0123456789ab"))
    result = verify(out)
    assert result.code == 2
    assert "policy 'my-trial' v3" in result.stderr and "--policy" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["missing-folder"], "is not a folder"),
    (["{out}", "--policy", "no-such-policy"], "no-such-policy"),
])
def test_bad_usage_exits_two(args: list[str], message: str, clean_outputs: dict[str, Path],
                             verify: Callable[..., Result]) -> None:
    result = verify(*[a.format(out=clean_outputs["ps315-basic"]) for a in args])
    assert result.code == 2 and message in result.stderr
