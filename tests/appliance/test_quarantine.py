"""Quarantine: a copy under an opaque name, the reason beside it, the original left alone."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from appliance.quarantine import REASON_SUFFIX, list_quarantine, quarantine_file, read_reason


def test_copies_under_an_opaque_name_with_a_reason_file(tmp_path: Path) -> None:
    original = tmp_path / "in" / "SMITH_JOHN_19450312.dcm"
    original.parent.mkdir()
    content = b"\x00" * 128 + b"DICM" + b"truncated..."
    original.write_bytes(content)
    qdir = tmp_path / "quarantine"

    stored = quarantine_file(original, qdir, "truncated: PixelData is shorter than declared")

    assert original.read_bytes() == content, "the operator's file must be copied, not moved"
    assert stored.parent == qdir and stored.read_bytes() == content
    names = sorted(p.name for p in qdir.iterdir())
    assert names == [stored.name, stored.name + REASON_SUFFIX]
    for name in names:
        assert "SMITH" not in name and "1945" not in name and "dcm" not in name
    reason = json.loads((qdir / (stored.name + REASON_SUFFIX)).read_text())
    assert reason["reason"] == "truncated: PixelData is shorter than declared"
    assert reason["stage"] == "deidentify"
    assert reason["sha256"] == hashlib.sha256(content).hexdigest()
    assert reason["size"] == len(content)
    assert reason["time"].endswith("Z")
    assert "SMITH" not in json.dumps(reason) and str(original.parent) not in json.dumps(reason)


def test_stores_bytes_and_keeps_files_private(tmp_path: Path) -> None:
    qdir = tmp_path / "work" / "quarantine"
    stored = quarantine_file(b"not dicom at all", qdir, "refused by policy: test",
                             stage="stage2-export", detail="ValueError: x")
    record = read_reason(stored)
    assert record.stage == "stage2-export" and record.detail == "ValueError: x"
    assert record.size == 16
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(qdir.stat().st_mode) == 0o700
    assert not [p for p in qdir.iterdir() if p.name.endswith(".tmp")]


def test_same_content_twice_gives_two_entries(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    first = quarantine_file(b"abc", qdir, "one")
    second = quarantine_file(b"abc", qdir, "two")
    assert first != second
    assert [r.reason for r in sorted(list_quarantine(qdir), key=lambda r: r.reason)] == [
        "one", "two"]


def test_unreadable_source_writes_nothing(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    with pytest.raises(OSError):
        quarantine_file(tmp_path / "missing.dcm", qdir, "unreadable")
    assert list(qdir.iterdir()) == []
