"""Known-safe private attributes: Table E.3.10-1, the TCIA KB and (0008,0300) declarations."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

import policies.private as private_mod
from policies.private import (
    SOURCE_PS315,
    SOURCE_TCIA,
    SafePrivateTable,
    block_tag_range,
    declared_safe,
    is_declared_safe,
    parse_kb_signature,
    private_creator_of,
)

DATA = Path(private_mod.__file__).parent / "data"


def kb_rows_mentioning(fragment: str) -> list[tuple[str, str]]:
    """(element_sig_pattern, disposition) for every KB row containing fragment, read directly."""
    with open(DATA / "tcia_private_tag_kb_2024-02-01.csv", encoding="utf-8-sig", newline="") as f:
        return [
            (row["element_sig_pattern"], row["private_disposition"])
            for row in csv.DictReader(f)
            if fragment in row["element_sig_pattern"]
        ]


@pytest.fixture(scope="module")
def table() -> SafePrivateTable:
    return SafePrivateTable.bundled()


# --- PS3.15 Table E.3.10-1 --------------------------------------------------------------------


def test_table_e3101_row_is_safe(table: SafePrivateTable) -> None:
    # Table E.3.10-1: (00E1,xx21) ELSCINT1 DS "DLP".
    assert table.is_safe(0x00E1, "ELSCINT1", 0x21)
    assert table.source(0x00E1, "ELSCINT1", 0x21) == SOURCE_PS315


def test_every_table_e3101_row_is_safe_and_credited_to_the_standard(
    table: SafePrivateTable,
) -> None:
    rows = json.loads((DATA / "ps315_safe_private.json").read_text(encoding="utf-8"))
    assert len(rows) == 479
    for row in rows:
        group, offset = int(row["group"], 16), int(row["element_offset"], 16)
        assert table.source(group, row["private_creator"], offset) == SOURCE_PS315, row["tag"]


def test_same_raw_tag_under_another_creator_is_not_safe(table: SafePrivateTable) -> None:
    assert not table.is_safe(0x00E1, "GEMS_PARM_01", 0x21)
    assert not table.is_safe(0x00E1, "ACME 1.0", 0x21)
    # Same creator, neighbouring offset that the table does not list.
    assert not table.is_safe(0x00E1, "ELSCINT1", 0x20)
    # Same creator and offset in another group.
    assert not table.is_safe(0x00E3, "ELSCINT1", 0x21)


def test_creator_matching_ignores_padding_and_case(table: SafePrivateTable) -> None:
    assert table.is_safe(0x00E1, "ELSCINT1 ", 0x21)
    assert table.is_safe(0x00E1, " elscint1\x00", 0x21)
    assert not table.is_safe(0x00E1, "ELSCINT", 0x21)
    assert not table.is_safe(0x00E1, "", 0x21)


# --- TCIA private tag knowledge base ----------------------------------------------------------


def test_kb_keep_row_is_safe(table: SafePrivateTable) -> None:
    rows = kb_rows_mentioning('(0009,FDMS 1.0",08)')
    assert rows and {d for _, d in rows} == {"k"}
    assert table.source(0x0009, "FDMS 1.0", 0x08) == SOURCE_TCIA


def test_kb_dispositions_are_normalised(table: SafePrivateTable) -> None:
    # (0019,HOLOGIC, Inc.,60) is recorded only as " k"; (0053,GEHC_CT_ADVAPP_001,68) has "K".
    assert {d for _, d in kb_rows_mentioning('(0019,HOLOGIC, Inc.",60)')} == {" k"}
    assert "K" in {d for _, d in kb_rows_mentioning('(0053,GEHC_CT_ADVAPP_001",68)')}
    assert table.source(0x0019, "HOLOGIC, Inc.", 0x60) == SOURCE_TCIA
    assert table.source(0x0053, "GEHC_CT_ADVAPP_001", 0x68) == SOURCE_TCIA


def test_kb_triple_with_keep_and_delete_rows_is_not_safe(table: SafePrivateTable) -> None:
    # PMTF Information 1 is "k" inside the GEIIS thumbnail sequence but "d" at the top level.
    dispositions = {d for _, d in kb_rows_mentioning('SIEMENS MEDCOM HEADER",31)')}
    assert dispositions == {"k", "d"}
    assert not table.is_safe(0x0029, "SIEMENS MEDCOM HEADER", 0x31)
    assert table.source(0x0029, "SIEMENS MEDCOM HEADER", 0x31) is None


def test_kb_veto_runs_across_creator_case_variants(table: SafePrivateTable) -> None:
    # The upper-case spelling has only "k" rows; the mixed-case spelling has "d" rows.
    upper = {d for _, d in kb_rows_mentioning('(2005,PHILIPS MR IMAGING DD 001",5f)')}
    mixed = {d for _, d in kb_rows_mentioning('(2005,Philips MR Imaging DD 001",5f)')}
    assert upper == {"k"} and "d" in mixed
    assert not table.is_safe(0x2005, "PHILIPS MR IMAGING DD 001", 0x5F)


def test_kb_nested_rows_count_for_their_last_component(table: SafePrivateTable) -> None:
    rows = kb_rows_mentioning('GEIIS_RA1000",01)')
    assert rows == [('(0008,1115)[<0>](0008,1140)[<1>](0009,GEIIS_RA1000",01)', "k")]
    assert table.source(0x0009, "GEIIS_RA1000", 0x01) == SOURCE_TCIA
    # The parent Marker Sequence path of HOLOGIC, Inc. does not make its nested 87 unsafe.
    assert table.source(0x0019, "HOLOGIC, Inc.", 0x87) == SOURCE_TCIA


def test_kb_placeholder_creators_are_never_safe(table: SafePrivateTable) -> None:
    # Posda's name for a block that had no Private Creator: keep-only in the KB, yet unattributable.
    rows = kb_rows_mentioning('(0051,Unnamed Private Block - 10",0b)')
    assert {d for _, d in rows} == {"k"}
    assert not table.is_safe(0x0051, "Unnamed Private Block - 10", 0x0B)


def test_standard_is_named_where_both_sources_agree(table: SafePrivateTable) -> None:
    assert {d for _, d in kb_rows_mentioning('(0019,GEMS_ACQU_01",23)')} == {"k"}
    assert table.source(0x0019, "GEMS_ACQU_01", 0x23) == SOURCE_PS315


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('(0009,FDMS 1.0",08)', (0x0009, "FDMS 1.0", 0x08)),
        ('(0029,"SIEMENS MEDCOM HEADER",31)', (0x0029, "SIEMENS MEDCOM HEADER", 0x31)),
        ('(0019,HOLOGIC, Inc.",8a)', (0x0019, "HOLOGIC, Inc.", 0x8A)),
        ('(0021,0021,1000",4f)', (0x0021, "0021,1000", 0x4F)),
        ("(0009,,02)", (0x0009, "", 0x02)),
        (
            '(0008,1115)[<0>](0008,1140)[<1>](0009,GEIIS_RA1000",01)',
            (0x0009, "GEIIS_RA1000", 0x01),
        ),
        (
            '(0009,EMAGEON JPEG2K INFO",00)[<0>](0023,"IMPLEMENTOR_ID00232013",15)'
            '[<1>](0023,"IMPLEMENTOR_ID00232016",16)',
            (0x0023, "IMPLEMENTOR_ID00232016", 0x16),
        ),
        ('(0009,GEIIS",10)[<0>](0028,0002)', None),
    ],
)
def test_parse_kb_signature(pattern: str, expected: tuple[int, str, int] | None) -> None:
    assert parse_kb_signature(pattern) == expected


@pytest.mark.parametrize("pattern", ["", "0009,FDMS 1.0,08", "(0009,FDMS 1.0,8)", "(00G9,X,08)"])
def test_parse_kb_signature_rejects_garbage(pattern: str) -> None:
    with pytest.raises(ValueError, match="unrecognised TCIA KB element signature"):
        parse_kb_signature(pattern)


def test_every_kb_row_parses() -> None:
    with open(DATA / "tcia_private_tag_kb_2024-02-01.csv", encoding="utf-8-sig", newline="") as f:
        patterns = [row["element_sig_pattern"] for row in csv.DictReader(f)]
    parsed = [parse_kb_signature(p) for p in patterns]
    assert len(parsed) == 8787
    assert all(p is None or p[0] % 2 == 1 for p in parsed)


# --- The table itself -------------------------------------------------------------------------


def test_bundled_counts_and_entries(table: SafePrivateTable) -> None:
    entries = list(table.entries())
    assert len(entries) == len(table)
    by_source = {s: sum(1 for _, src in entries if src == s) for s in (SOURCE_PS315, SOURCE_TCIA)}
    assert by_source[SOURCE_PS315] == 479
    assert by_source[SOURCE_TCIA] > 1000
    assert entries == sorted(entries)
    assert ((0x00E1, "elscint1", 0x21), SOURCE_PS315) in entries


def test_constructed_table_applies_the_same_key() -> None:
    table = SafePrivateTable({(0x0009, "ACME 1.0 ", 0x01): "site conformance statement"})
    assert len(table) == 1
    assert table.source(0x0009, "acme 1.0", 0x01) == "site conformance statement"
    assert not table.is_safe(0x0009, "ACME 1.0", 0x02)
    assert not table.is_safe(0x0011, "ACME 1.0", 0x01)


@pytest.mark.parametrize(
    "key", [(0x0008, "ACME", 0x01), (0x10009, "ACME", 0x01), (0x0009, "ACME", 0x100), (9, " ", 1)]
)
def test_constructed_table_rejects_bad_keys(key: tuple[int, str, int]) -> None:
    with pytest.raises(ValueError):
        SafePrivateTable({key: "x"})


def test_bundled_loads_fast_and_once() -> None:
    private_mod._bundled_table.cache_clear()
    start = time.perf_counter()
    first = SafePrivateTable.bundled()
    elapsed = time.perf_counter() - start
    assert elapsed < 0.3, f"loading the safe private table took {elapsed:.3f} s"
    assert SafePrivateTable.bundled() is first


def test_block_tag_range() -> None:
    assert block_tag_range(0x10) == range(0x1000, 0x1100)
    assert 0x10FF in block_tag_range(0x10) and 0x1100 not in block_tag_range(0x10)
    assert block_tag_range(0xFF)[-1] == 0xFFFF
    with pytest.raises(ValueError):
        block_tag_range(0x0F)


# --- Datasets: Private Creator lookup and (0008,0300) declarations ------------------------------


def acme_dataset() -> Dataset:
    ds = Dataset()
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "DS", "1.5")
    other = ds.private_block(0x0009, "OTHER VENDOR", create=True)
    other.add_new(0x01, "LO", "text")
    return ds


def roundtrip(ds: Dataset, transfer_syntax: str) -> Dataset:
    ds.PatientName = "Anonymous"
    buffer = io.BytesIO()
    implicit = transfer_syntax == ImplicitVRLittleEndian
    dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    buffer.seek(0)
    return dcmread(buffer, force=True)


def test_private_creator_of_reads_the_block_creator() -> None:
    ds = acme_dataset()
    assert private_creator_of(ds, 0x00091001) == "ACME 1.0"
    assert private_creator_of(ds, 0x00091101) == "OTHER VENDOR"
    assert private_creator_of(ds, 0x00091201) is None  # no (0009,0012)
    assert private_creator_of(ds, 0x00090010) is None  # a creator element, not a data element
    assert private_creator_of(ds, 0x00081001) is None  # even group


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_private_creator_of_after_a_file_round_trip(syntax: str) -> None:
    ds = acme_dataset()
    ds.add_new(0x00190010, "LO", "PADDED ")
    ds.add_new(0x00191005, "DS", "2")
    read = roundtrip(ds, syntax)
    assert private_creator_of(read, 0x00091001) == "ACME 1.0"
    assert private_creator_of(read, 0x00191005) == "PADDED"
    assert SafePrivateTable({(0x0019, "PADDED", 0x05): "test"}).is_safe(
        0x0019, private_creator_of(read, 0x00191005) or "", 0x05
    )


def characteristics_item(group: int, creator: str, status: str, listed: list[int]) -> Dataset:
    item = Dataset()
    item.PrivateGroupReference = group
    item.PrivateCreatorReference = creator
    item.BlockIdentifyingInformationStatus = status
    if listed:
        item.NonidentifyingPrivateElements = listed
    return item


def declaring_dataset() -> Dataset:
    ds = acme_dataset()
    ds.PrivateDataElementCharacteristicsSequence = Sequence(
        [
            characteristics_item(0x0009, "ACME 1.0", "SAFE", []),
            characteristics_item(0x0009, "OTHER VENDOR ", "MIXED", [0x1101, 0x1103]),
            characteristics_item(0x0011, "THIRD", "UNSAFE", [0x1001]),
        ]
    )
    item_without_creator = Dataset()
    item_without_creator.PrivateGroupReference = 0x0013
    item_without_creator.BlockIdentifyingInformationStatus = "SAFE"
    ds.PrivateDataElementCharacteristicsSequence.append(item_without_creator)
    return ds


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_declared_safe_reads_safe_and_mixed_blocks(syntax: str | None) -> None:
    ds = declaring_dataset()
    if syntax is not None:
        ds = roundtrip(ds, syntax)
    blocks, elements = declared_safe(ds)
    assert blocks == frozenset({(0x0009, "acme 1.0")})
    assert elements == frozenset({(0x0009, "other vendor", 0x01), (0x0009, "other vendor", 0x03)})
    declared = (blocks, elements)
    assert is_declared_safe(declared, 0x0009, "ACME 1.0", 0x7F)
    assert is_declared_safe(declared, 0x0009, "OTHER VENDOR", 0x03)
    assert not is_declared_safe(declared, 0x0009, "OTHER VENDOR", 0x02)
    assert not is_declared_safe(declared, 0x0011, "THIRD", 0x01)
    assert not is_declared_safe(declared, 0x0013, "", 0x01)


def test_declared_safe_without_the_sequence_declares_nothing() -> None:
    assert declared_safe(acme_dataset()) == (frozenset(), frozenset())
    ds = acme_dataset()
    ds.PrivateDataElementCharacteristicsSequence = Sequence([])
    assert declared_safe(ds) == (frozenset(), frozenset())
