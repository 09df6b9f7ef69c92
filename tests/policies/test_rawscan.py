"""Reading still-encoded sequences: enter only what needs it, and enter whatever is unclear."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from policies.model import Policy
from policies.outcome import Outcome
from policies.rawscan import ENTER, NEEDED, NOTHING, sequence_needs_walk

CODE_VALUE, CODE_MEANING, NAME = 0x00080100, 0x00080104, 0x00100010


def _raw_sequence(items: list[Dataset], syntax: UID = ExplicitVRLittleEndian) -> RawDataElement:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3"
    ds.AnatomicRegionSequence = items
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    raw = back.get_item("AnatomicRegionSequence")
    assert isinstance(raw, RawDataElement)
    return raw


def _code(meaning: str = "Chest") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D3000", "SRT", meaning
    return item


def _asker(answers: dict[int, int]) -> tuple[Callable[[int, str | None, bytes | None], int],
                                            list[int]]:
    seen: list[int] = []

    def ask(tag: int, vr: str | None, value: bytes | None) -> int:
        seen.append(tag)
        return answers.get(tag, NOTHING)

    return ask, seen


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_sequence_with_nothing_to_do_is_not_entered(syntax: UID) -> None:
    raw = _raw_sequence([_code(), _code("Abdomen")], syntax)
    ask, seen = _asker({})
    assert not sequence_needs_walk(raw.value, raw.is_implicit_VR, raw.is_little_endian, ask)
    assert seen.count(CODE_MEANING) == 2  # every element of every item was asked about


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_one_element_that_needs_doing_is_enough(syntax: UID) -> None:
    raw = _raw_sequence([_code(), _code("Abdomen")], syntax)
    ask, _ = _asker({CODE_MEANING: NEEDED})
    assert sequence_needs_walk(raw.value, raw.is_implicit_VR, raw.is_little_endian, ask)


def test_nested_sequences_are_asked_about_inside() -> None:
    outer = _code()
    inner = Dataset()
    inner.PatientName = "Doe^John"
    outer.ProtocolContextSequence = [inner]
    raw = _raw_sequence([outer])
    ask, seen = _asker({0x00400440: ENTER, NAME: NEEDED})
    assert sequence_needs_walk(raw.value, raw.is_implicit_VR, raw.is_little_endian, ask)
    assert NAME in seen
    ask, _ = _asker({0x00400440: ENTER})
    assert not sequence_needs_walk(raw.value, raw.is_implicit_VR, raw.is_little_endian, ask)


@pytest.mark.parametrize(("value", "implicit", "little"), [
    (None, False, True),  # deferred: not read
    (b"\x00\x01", False, True),  # truncated
    (b"\xfe\xff\x00\xe0\xff\x00\x00\x00", False, True),  # item longer than the sequence
    (b"\x08\x00\x00\x01SH\x02\x00AB", False, True),  # an element where an item should be
    (b"", False, False),  # big endian: not read here
])
def test_anything_unclear_is_entered(value: bytes | None, implicit: bool, little: bool) -> None:
    ask, _ = _asker({})
    assert sequence_needs_walk(value, implicit, little, ask)


def test_kept_code_sequences_are_written_back_byte_for_byte(
        make_policy: Callable[..., Policy], deid: Callable[..., Outcome],
        make_ct: Callable[..., Dataset], written: Callable[[Dataset], bytes]) -> None:
    ds = make_ct()
    ds.AnatomicRegionSequence = [_code()]
    nested = _code()
    inner = Dataset()
    inner.ValueType, inner.PersonName = "PNAME", "Doe^John"  # Person Name: D
    nested.ProtocolContextSequence = [inner]
    ds.ScheduledProtocolCodeSequence = [nested]
    ds = pydicom.dcmread(io.BytesIO(written(ds)))
    deid(make_policy(), ds)
    assert isinstance(ds.get_item("AnatomicRegionSequence"), RawDataElement)
    assert not isinstance(ds.get_item("ScheduledProtocolCodeSequence"),
                          RawDataElement)
    out = pydicom.dcmread(io.BytesIO(written(ds)))
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Chest"
    assert out.ScheduledProtocolCodeSequence[0].ProtocolContextSequence[0].PersonName == \
        "ANONYMIZED"
