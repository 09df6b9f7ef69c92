"""The byte scan itself: encodings, name orders, case, block boundaries and placement.

The originals here are :class:`Original` objects as :func:`load_originals` returns them after
unsealing; the files are real files on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from appliance.verify import bytescan
from appliance.verify.findings import Findings
from appliance.verify.originals import Original, PatternSet

MUELLER = Original("Müller^Jürgen", ["PatientName"], "PSEUDO^X", "abc123")
ID = Original("EL4417702", ["PatientID"], "PSN0000000000", "def456")


def _hits(tmp_path: Path, data: bytes, *originals: Original) -> list[tuple[int, str, str]]:
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return [(offset, p.encoding, p.form)
            for offset, p in bytescan.scan_file(path, PatternSet(originals))]


@pytest.mark.parametrize(("text", "codec", "encoding", "form"), [
    ("Müller^Jürgen", "latin-1", "Latin-1", "as written"),
    ("MÜLLER^JÜRGEN", "utf-8", "UTF-8", "as written"),
    ("Jürgen Müller", "utf-8", "UTF-8", "another component order as plain text"),
    ("müller, jürgen", "latin-1", "Latin-1", "PN components as plain text"),
    ("Jürgen^Müller", "utf-16-le", "UTF-16", "another component order"),
    ("Müller Jürgen", "utf-16-be", "UTF-16", "PN components as plain text"),
])
def test_person_name_in_every_encoding_and_order(tmp_path: Path, text: str, codec: str,
                                                 encoding: str, form: str) -> None:
    data = b"\x00\x01 noise " + text.encode(codec) + b" noise"
    hits = _hits(tmp_path, data, MUELLER)
    assert [(h[1], h[2]) for h in hits] == [(encoding, form)]
    offset = data.index(text.encode(codec))
    assert hits[0][0] in (offset, offset + 1)  # big-endian UTF-16 is found one byte in


def test_ascii_case_is_folded_and_short_forms_are_counted(tmp_path: Path) -> None:
    hits = _hits(tmp_path, b"id el4417702 and EL4417702", ID)
    assert [h[0] for h in hits] == [3, 17]
    short = PatternSet([Original("Wu^X", ["PatientName"], "P", "r")])
    assert short.too_short == 6 and short.regex is not None  # only "Wu, X" and "X, Wu" left
    tiny = PatternSet([Original("S12", ["StudyID"], "P", "r")])
    assert tiny.too_short == 1 and tiny.regex is None  # would match pixel noise


def test_no_false_hit_on_a_different_identifier(tmp_path: Path) -> None:
    assert _hits(tmp_path, b"EL441770 EL44177020"[:8] + b" PSN0000000000", ID) == []


def test_hit_across_a_block_boundary_is_found_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytescan, "BLOCK", 16)
    data = b"x" * 11 + b"EL4417702" + b"y" * 30 + b"EL4417702" + b"z" * 7
    assert [h[0] for h in _hits(tmp_path, data, ID)] == [11, 50]


def test_hit_is_placed_at_its_element_path(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "2.25.1"
    inner, deeper = Dataset(), Dataset()
    deeper.TextValue = "seen EL4417702"
    inner.ContentSequence = [Dataset(), deeper]
    ds.ContentSequence = [inner]
    ds.ImageComments = "nothing here"
    path = tmp_path / "f.dcm"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    findings = Findings()
    totals = bytescan.scan_all(findings, [path], {path: "f.dcm"}, PatternSet([ID]))
    assert totals.leaks == 1
    (finding,) = findings.errors
    assert finding.path == "ContentSequence[0].ContentSequence[1].TextValue"
    assert "EL4417702" not in finding.message and "ref def456" in finding.message
