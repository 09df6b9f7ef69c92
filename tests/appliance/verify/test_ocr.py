"""``--ocr``: Tesseract reads the pixels of real de-identified output; the report never shows
the words it read.

The synthetic sample's burned-in secondary capture carries the patient's name, Patient ID and
birth date in a 5x7 dot-matrix font. ``stage1-pseudonymize`` does not request Clean Pixel Data,
so ``tce deidentify`` writes that capture out with its text. Tesseract (real, not mocked) must
find text there and nowhere in the plain CT, MR and clean captures.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from appliance.cli import main
from appliance.synthetic import sample_patients
from appliance.synthetic.pixels import _text_mask
from appliance.verify import Original, verify_output
from appliance.verify.ocr import PATH, OcrJob, ocr_one
from tests.appliance.verify.conftest import Result, edit, find, instances, rel

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None,
                                reason="tesseract is not installed")

DOE = sample_patients(0)[0]
POLICY = "stage1-pseudonymize"


def _burned(ds: pydicom.Dataset) -> bool:
    return str(ds.get("BurnedInAnnotation", "")) == "YES"


def _ocr(result: Result) -> list[dict[str, str]]:
    return result.findings("ocr")


def test_burned_in_capture_is_reported_and_plain_images_are_not(
        clean: Callable[[str], Path], verify: Callable[..., Result]) -> None:
    out = clean(POLICY)
    capture = rel(out, find(out, _burned))
    result = verify(out, "--ocr")
    text = [f for f in result.warnings("ocr") if f["message"].startswith("burned-in text: ")]
    assert [(f["file"], f["path"]) for f in text] == [(capture, PATH)]
    assert "words found by OCR" in text[0]["message"]
    # the Patient ID is read (one digit may be wrong): an ID shape, so an error, not a warning
    (shape,) = result.errors("ocr")
    assert shape["file"] == capture and "an ID" in shape["message"]
    assert result.code == 1
    assert {f["file"] for f in _ocr(result)} == {capture}  # nothing on any CT, MR, clean SC
    images = [p for p in instances(out) if "PixelData" in pydicom.dcmread(p)]
    summary = result.report["ocr"]
    assert (summary["images"], summary["images_with_text"], summary["not_decodable"]) == (
        len(images), 1, 0)
    assert summary["words"] >= 3 and summary["tesseract"].startswith("5.")
    assert f"{len(images)} images (first frame)" in result.summary


def test_without_ocr_nothing_changes(clean: Callable[[str], Path],
                                     verify: Callable[..., Result]) -> None:
    result = verify(clean(POLICY))
    assert result.report["ocr"] is None and not _ocr(result)
    assert result.code == 0 and "ocr " not in result.summary


def test_an_original_read_in_the_pixels_is_a_leak(clean: Callable[[str], Path]) -> None:
    """As ``--originals`` hands them over after unsealing: the Patient ID stage 1 sealed."""
    out = clean(POLICY)
    capture = rel(out, find(out, _burned))
    sealed = Original(DOE.patient_id, ["PatientID"], "PSN0000TEST", "0123456789ab")
    other = Original("ZQ7777777", ["AccessionNumber"], "ACN0000TEST", "ba9876543210")
    report = verify_output(out, originals=[sealed, other], ocr=True)
    leaks = [f for f in report.findings.errors if f.check.value == "leak"]
    assert [(f.file, f.path) for f in leaks] == [(capture, PATH)]
    assert leaks[0].message == ("PatientID original read by OCR in the pixels; pseudonym"
                                " PSN0000TEST, ref 0123456789ab")
    assert DOE.patient_id not in str(report.to_json())


def test_no_word_read_reaches_the_report(clean: Callable[[str], Path],
                                         verify: Callable[..., Result], tmp_path: Path) -> None:
    out = clean(POLICY)
    planted = ["KESTREL HARBOUR", "WINDMILL 4821"]

    def plant(ds: pydicom.Dataset) -> None:
        pixels = np.zeros((ds.Rows, ds.Columns), np.uint8)
        pixels[_text_mask(planted, ds.Rows, ds.Columns, scale=2)] = 255
        ds.PixelData = pixels.tobytes()

    path = edit(find(out, lambda ds: ds.Modality == "OT" and not _burned(ds)), plant)
    read = ocr_one(OcrJob(path, rel(out, path), True))
    words = [w for line in read.lines for w in line.split()]
    assert "KESTREL" in words, read  # Tesseract reads the planted text...
    report_file = tmp_path / "verify.json"
    result = verify(out, "--ocr", "--report", report_file)
    assert any(f["file"] == rel(out, path) and f["message"].startswith(
        f"burned-in text: {len(words)} words") for f in result.warnings("ocr"))
    shown = result.summary + str(result.report) + report_file.read_text(encoding="utf-8")
    for word in [*words, *" ".join(planted).split()]:  # ... and no report shows it
        assert word not in shown


def test_compressed_pixels_are_decoded(clean: Callable[[str], Path],
                                       verify: Callable[..., Result]) -> None:
    out = clean(POLICY)
    capture = edit(find(out, _burned), lambda ds: ds.compress(RLELossless))
    assert pydicom.dcmread(capture).file_meta.TransferSyntaxUID == RLELossless
    result = verify(out, "--ocr")
    assert any(f["file"] == rel(out, capture) for f in result.errors("ocr"))


def test_undecodable_pixels_are_a_warning_not_a_crash(clean: Callable[[str], Path],
                                                      verify: Callable[..., Result]) -> None:
    out = clean(POLICY)

    def garble(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
        ds["PixelData"].VR = "OB"

    path = edit(find(out, lambda ds: ds.Modality == "CT"), garble)
    result = verify(out, "--ocr")
    (warning,) = [f for f in result.warnings("ocr") if f["file"] == rel(out, path)]
    assert warning["message"].startswith("pixels not decodable for OCR (")
    assert result.report["ocr"]["not_decodable"] == 1


def test_without_tesseract_ocr_exits_2(clean: Callable[[str], Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = clean(POLICY)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no tesseract on PATH
    assert main(["verify", str(out), "--ocr"]) == 2
    assert "--ocr needs Tesseract" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 0  # without --ocr it is not needed
