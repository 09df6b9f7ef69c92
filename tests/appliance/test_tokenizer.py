"""appliance.tokenizer reads the same dataset pydicom reads, or says Unsupported.

The tokenizer replaces ``dcmread(stop_before_pixels=True)`` on the hot path of ``tce deidentify``,
so it must be indistinguishable from it: same elements, same raw values and file positions, same
sequences, item flags and character sets, and the same stopping offset. The corpus is every file
pydicom ships plus synthetic CTs with nested and private sequences in several character sets.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from appliance.synthetic import make_sample_study_set
from appliance.tokenizer import Unsupported, read_explicit_le_header

PYDICOM_FILES = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


def _describe(ds: Dataset, depth: int = 0) -> list[Any]:
    """Everything downstream code can observe of a dataset read from a file, as plain data."""
    rows: list[Any] = [("encoding", ds.original_encoding, ds.original_character_set,
                        getattr(ds, "is_undefined_length_sequence_item", False))]
    for tag in list(ds.keys()):  # iterating the Dataset itself would decode every element
        elem = ds.get_item(tag)
        if tag == 0x00080005:  # decoded as soon as anyone asks for the dataset's encoding
            rows.append(("charset", ds.SpecificCharacterSet))
        elif isinstance(elem, RawDataElement):
            rows.append(("raw", tag, elem.VR, elem.length, elem.value, elem.value_tell,
                         elem.is_implicit_VR, elem.is_little_endian))
        else:
            assert isinstance(elem, DataElement)
            rows.append(("elem", tag, elem.VR, elem.is_undefined_length))
            if elem.VR == "SQ":
                rows.extend(("item", depth, _describe(item, depth + 1)) for item in elem.value)
            else:
                rows.append(("value", elem.value))
    return rows


def _by_pydicom(data: bytes) -> tuple[Dataset, int]:
    fp = io.BytesIO(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    return ds, fp.tell()


def _corpus() -> list[tuple[str, bytes]]:
    files = [(path.name, path.read_bytes()) for path in sorted(PYDICOM_FILES.rglob("*.dcm"))
             if path.stat().st_size < 8_000_000]
    for index, ds in enumerate(make_sample_study_set(3)):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((f"synthetic-{index}", buffer.getvalue()))
    return files


CORPUS = _corpus()


def test_the_corpus_exercises_the_tokenizer() -> None:
    """Enough files take the fast path, and enough fall back, for the comparison to mean much."""
    taken = 0
    for _name, data in CORPUS:
        try:
            read_explicit_le_header(io.BytesIO(data), len(data))
            taken += 1
        except Unsupported:
            pass
    assert taken >= 30
    assert len(CORPUS) - taken >= 40


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_same_dataset_as_pydicom(name: str, data: bytes) -> None:
    fp = io.BytesIO(data)
    try:
        ds, stop = read_explicit_le_header(fp, len(data))
    except Unsupported:
        return  # the caller falls back to pydicom itself: nothing to compare
    expected, expected_stop = _by_pydicom(data)
    assert (stop, fp.tell()) == (expected_stop, expected_stop)
    assert ds.preamble == expected.preamble
    assert ds.file_meta == expected.file_meta  # pydicom decodes these at once; equal values
    assert _describe(ds) == _describe(expected)
    # And what the engine sees after decoding agrees too (values, nested sequences, charsets).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds == expected


def test_a_cut_short_header_is_unsupported_not_misread() -> None:
    data = next(data for name, data in CORPUS if name == "synthetic-0")
    fp = io.BytesIO(data)
    _ds, stop = read_explicit_le_header(fp, len(data))
    for cut in (stop - 3, stop // 2, 200):
        short = data[:cut]
        with pytest.raises(Unsupported):
            read_explicit_le_header(io.BytesIO(short), len(short))


@pytest.mark.parametrize(("why", "mutate"), [
    ("implicit VR", lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2")),
    ("big endian", lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2.2")),
])
def test_other_transfer_syntaxes_are_unsupported(why: str, mutate: Any) -> None:
    ds = make_sample_study_set(0)[0]
    mutate(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2",
               little_endian=ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2")
    data = buffer.getvalue()
    with pytest.raises(Unsupported):
        read_explicit_le_header(io.BytesIO(data), len(data))


def test_no_preamble_is_unsupported() -> None:
    data = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" * 4
    with pytest.raises(Unsupported):
        read_explicit_le_header(io.BytesIO(data), len(data))


def test_a_command_group_inside_the_dataset_is_unsupported() -> None:
    data = next(data for name, data in CORPUS if name == "synthetic-0")
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    # A stray Command Group Length, as some PACS leave in stored files.
    data = data[:meta_end] + b"\x00\x00\x00\x00UL\x04\x00\x04\x00\x00\x00" + data[meta_end:]
    with pytest.raises(Unsupported):
        read_explicit_le_header(io.BytesIO(data), len(data))


def test_a_header_larger_than_the_first_read_is_read_whole() -> None:
    ds = make_sample_study_set(0)[0]
    block = ds.private_block(0x0009, "TCE TEST", create=True)
    block.add_new(0x10, "OB", b"x" * 300_000)  # pushes Pixel Data far past the first read
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    parsed, stop = read_explicit_le_header(io.BytesIO(data), len(data))
    expected, expected_stop = _by_pydicom(data)
    assert stop == expected_stop > 300_000
    tag = block.get_tag(0x10)
    assert parsed[tag].value == expected[tag].value == b"x" * 300_000
