"""`tce policy list | show | check | explain`, run the way an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main

TCE = [sys.executable, "-m", "appliance.cli"]


def test_list_names_every_builtin_with_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ps315-basic", "stage1-pseudonymize", "research-age-band-5y", "safe-harbor"):
        assert name in out
    assert len([line for line in out.splitlines() if line.strip()]) == 4


def test_show_prints_source_and_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show", "research-age-band-5y"]) == 0
    out = capsys.readouterr().out
    assert "sha256:" in out and "age_band_years: 5" in out


def test_check_accepts_good_and_rejects_bad_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("id: mine\nversion: 2\ndescription: test\nbase_profile: ps315-basic\n"
                    "options: [clean_descriptors]\n")
    assert main(["policy", "check", str(good)]) == 0
    assert "ok: mine v2 sha256:" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: mine\nversion: 2\ndescription: test\nbase_profile: ps315-basic\n"
                   "overrides:\n  - tag: PatientName\n    action: kep\n")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "overrides[0].action" in err and "kep" in err


def test_explain_text_and_markdown_in_a_real_process() -> None:
    result = subprocess.run([*TCE, "policy", "explain", "safe-harbor"], capture_output=True,
                            text=True, check=True)
    assert "(0010,1010)" in result.stdout and "1-year band" in result.stdout
    result = subprocess.run([*TCE, "policy", "explain", "ps315-basic", "--markdown"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("### `ps315-basic`")


def test_explain_unknown_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "no-such-policy"]) != 0
    assert "no-such-policy" in capsys.readouterr().err
