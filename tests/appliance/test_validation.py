"""The receive-time check: every well-formed instance passes, every broken one gets BadInstance.

Datasets are encoded by pydicom (the sample study set: CT, MR, multi-frame, SR, KOS, GSPS, with
nested sequences and private blocks) in each transfer syntax the nodes accept, then cut, bent
and corrupted the ways a broken sender or an interrupted copy would. Whatever the bytes, the
check may answer only with a result or with :class:`BadInstance`: anything else would reach
the sender as a handler crash instead of 0xC210.
"""

from __future__ import annotations

import io
import mmap
import random
import struct
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from appliance.synthetic import _uid, make_ct_instance, make_sample_study_set, sample_patients
from appliance.validation import BadInstance, Checked, check_dataset, receipt_key

NATIVE = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
          DeflatedExplicitVRLittleEndian]


def _ct(rows: int = 8) -> Dataset:
    return make_ct_instance(0, _uid(7, "study"), _uid(7, "series"), sample_patients(0)[0],
                            rows, rows)


def _encode(ds: Dataset, syntax: str) -> tuple[bytes, int]:
    """Part 10 bytes of ``ds`` in ``syntax`` and where its dataset starts."""
    ds = ds.copy()
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # pydicom warns about the retired big-endian syntax
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data, 144 + int.from_bytes(data[140:144], "little")


def _check(data: bytes, start: int, syntax: str, ds: Dataset) -> Checked:
    return check_dataset(data, syntax, str(ds.SOPInstanceUID), start)


# --- what passes -------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", NATIVE, ids=lambda s: s.name)
def test_every_sample_instance_passes_in_every_native_syntax(syntax: str) -> None:
    for ds in make_sample_study_set(0, small=True):
        data, start = _encode(ds, syntax)
        checked = _check(data, start, syntax, ds)
        assert checked == Checked(str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                  str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))


def test_encapsulated_pixel_data_passes() -> None:
    ds = _ct()
    ds.PixelData = encapsulate([b"\xff\xd8frame-one\xff\xd9", b"\xff\xd8frame-two\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.NumberOfFrames = 2
    data, start = _encode(ds, JPEGBaseline8Bit)
    assert _check(data, start, JPEGBaseline8Bit, ds).sop_instance_uid == ds.SOPInstanceUID


def test_any_buffer_type_is_read_in_place(tmp_path: Path) -> None:
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        assert _check(view, start, ExplicitVRLittleEndian, ds).study_instance_uid  # type: ignore[arg-type]
    assert _check(memoryview(data), start, ExplicitVRLittleEndian, ds)  # type: ignore[arg-type]


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    ExplicitVRBigEndian], ids=lambda s: s.name)
def test_a_cut_anywhere_is_refused(syntax: str) -> None:
    """An interrupted transfer ends at an arbitrary byte: each one must be caught."""
    ds = _ct(rows=4)
    data, start = _encode(ds, syntax)
    for end in range(start + 1, len(data)):
        with pytest.raises(BadInstance) as caught:
            _check(data[:end], start, syntax, ds)
        assert str(caught.value).startswith(("dataset", "SOP Instance UID")), end


def test_cut_pixel_data_names_the_truncation() -> None:
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match="truncated: PixelData is shorter than declared"):
        _check(data[:-60], start, ExplicitVRLittleEndian, ds)


def test_a_cut_inside_a_deflated_dataset_is_refused() -> None:
    ds = _ct()
    data, start = _encode(ds, DeflatedExplicitVRLittleEndian)
    for end in (start + 5, (start + len(data)) // 2, len(data) - 3):
        with pytest.raises(BadInstance, match="dataset"):
            _check(data[:end], start, DeflatedExplicitVRLittleEndian, ds)


def test_an_unclosed_sequence_is_refused() -> None:
    ds = _ct()
    ds["RequestAttributesSequence"].is_undefined_length = True
    data, start = _encode(ds, ExplicitVRLittleEndian)
    assert _check(data, start, ExplicitVRLittleEndian, ds)
    end_of_sequence = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    assert end_of_sequence in data[start:]
    broken = data.replace(end_of_sequence, b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", 1)
    with pytest.raises(BadInstance, match="dataset"):
        _check(broken, start, ExplicitVRLittleEndian, ds)


def test_missing_and_mismatched_sop_instance_uid_are_refused() -> None:
    ds = _ct()
    del ds.SOPInstanceUID
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match=r"^dataset has no SOP Instance UID$"):
        check_dataset(data, ExplicitVRLittleEndian, "1.2.3", start)
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match=r"^SOP Instance UID differs from the C-STORE request$"):
        check_dataset(data, ExplicitVRLittleEndian, str(ds.SOPInstanceUID) + ".9", start)


def test_pixel_data_shorter_than_the_image_is_refused() -> None:
    ds = _ct(rows=8)
    ds.Rows = 16  # declares more pixels than Pixel Data holds; every length is consistent
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match="PixelData shorter than the image needs"):
        _check(data, start, ExplicitVRLittleEndian, ds)


def test_an_image_without_pixel_data_is_refused() -> None:
    ds = _ct()
    del ds.PixelData
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match="an image without Pixel Data"):
        _check(data, start, ExplicitVRLittleEndian, ds)


def _insert_after_meta(data: bytes, start: int, element: bytes) -> bytes:
    return data[:start] + element + data[start:]


@pytest.mark.parametrize(("element", "reason"), [
    (b"\x09\x00\x10\x00ZZ\x02\x00ab", "unknown VR"),
    (b"\x09\x00\x10\x10UT\x00\x00\xff\xff\xff\xff", "undefined length"),
    (b"\x08\x00\x20\x00DA\xff\xff", "StudyDate is shorter than declared"),
    (b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", "stray item delimiter"),
], ids=["unknown-vr", "undefined-length-text", "overlong-date", "stray-delimiter"])
def test_malformed_elements_are_refused(element: bytes, reason: str) -> None:
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(BadInstance, match=reason):
        _check(_insert_after_meta(data, start, element), start, ExplicitVRLittleEndian, ds)


def test_values_the_check_reads_are_refused_when_malformed() -> None:
    """The old pydicom-based check crashed on these instead of refusing them."""
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    rows = data.index(b"\x28\x00\x10\x00US\x02\x00", start)
    odd_rows = data[:rows + 6] + b"\x01\x00" + data[rows + 8:rows + 9] + data[rows + 10:]
    with pytest.raises(BadInstance, match="invalid Rows"):
        _check(odd_rows, start, ExplicitVRLittleEndian, ds)
    position = data.index(b"\x28\x00\x10\x00", start)  # (0028,0008) sorts before Rows
    frames = data[:position] + b"\x28\x00\x08\x00IS\x02\x00x " + data[position:]
    with pytest.raises(BadInstance, match="invalid Number of Frames"):
        _check(frames, start, ExplicitVRLittleEndian, ds)


def test_deeply_nested_sequences_are_refused_not_recursed() -> None:
    ds = _ct()
    data, start = _encode(ds, ExplicitVRLittleEndian)
    opening = (b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # sequence, undefined length
               b"\xfe\xff\x00\xe0\xff\xff\xff\xff")  # item, undefined length
    with pytest.raises(BadInstance, match="nested too deeply"):
        _check(_insert_after_meta(data, start, opening * 5000), start, ExplicitVRLittleEndian,
               ds)


@pytest.mark.parametrize("syntax", NATIVE, ids=lambda s: s.name)
def test_random_corruption_never_raises_anything_but_bad_instance(syntax: str) -> None:
    ds = make_sample_study_set(0, small=True)[0]
    data, start = _encode(ds, syntax)
    rng = random.Random(f"corrupt-{syntax}")
    outcomes = set()
    for _ in range(400):
        body = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(start, len(body))
            body[at:at + 4] = struct.pack("<L", rng.choice(
                [0, 1, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(8)]))
        try:
            _check(bytes(body), start, syntax, ds)
            outcomes.add("accepted")
        except BadInstance:
            outcomes.add("refused")
    assert "refused" in outcomes


def test_receipt_keys_depend_on_the_key_and_the_uid_only() -> None:
    assert receipt_key(b"k", "1.2.3") == receipt_key(b"k", "1.2.3")
    assert receipt_key(b"k", "1.2.3") != receipt_key(b"k", "1.2.4")
    assert receipt_key(b"k", "1.2.3") != receipt_key(b"j", "1.2.3")
    assert "1.2.3" not in receipt_key(b"k", "1.2.3")
