"""The store's path scheme: UIDs become folders and files only when they really are UIDs.

The strings come off the wire, so every hostile shape a path component can take (``..``, ``/``,
an absolute path, a NUL, a backslash, an over-long value) must be refused before anything is
created on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from receiver.storage import (
    UnsafeUID,
    check_uid,
    instance_path,
    is_path_safe_uid,
    make_instance_dirs,
    remove_empty_dirs,
    sweep_temporary,
)

STUDY, SERIES, SOP = "2.25.1234", "2.25.1234.5", "2.25.1234.5.6"
HOSTILE = ["../../x", "..", ".", "1.2/3", "/etc/passwd", "1.2.3/../../../x", "1..2", ".1.2",
           "1.2.", "1.2.3\x00", "1.2.3 ", "1\\2", "1.2.3\n", "", "1" * 65, "1.2.a", "２.25"]


def test_instance_path_is_study_series_sop_under_the_store(tmp_path: Path) -> None:
    path = instance_path(tmp_path / "store", STUDY, SERIES, SOP)
    assert path == tmp_path / "store" / STUDY / SERIES / f"{SOP}.dcm"


def test_longest_valid_uid_and_legacy_leading_zero_are_accepted(tmp_path: Path) -> None:
    longest = "1." + "2" * 62
    assert len(longest) == 64 and is_path_safe_uid(longest)
    assert instance_path(tmp_path, STUDY, SERIES, longest).name == f"{longest}.dcm"
    assert is_path_safe_uid("1.2.03.4")  # not conformant, but harmless in a path


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_hostile_uid_in_any_position_is_refused(tmp_path: Path, hostile: str,
                                                position: int) -> None:
    uids = [STUDY, SERIES, SOP]
    uids[position] = hostile
    with pytest.raises(UnsafeUID):
        instance_path(tmp_path / "store", *uids)
    assert not (tmp_path / "store").exists()


def test_reason_names_the_attribute_never_the_value() -> None:
    with pytest.raises(UnsafeUID) as caught:
        check_uid("../../secret-name", "SOPInstanceUID")
    assert str(caught.value) == "SOP Instance UID is not a valid UID"
    with pytest.raises(UnsafeUID, match=r"^dataset has no Study Instance UID$"):
        check_uid(None, "StudyInstanceUID")
    with pytest.raises(UnsafeUID, match=r"^dataset has no Series Instance UID$"):
        check_uid("", "SeriesInstanceUID")


def test_instance_dirs_are_private_and_never_outside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    folder = instance_path(store, STUDY, SERIES, SOP).parent
    make_instance_dirs(store, folder)
    assert folder.is_dir()
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
    assert oct(folder.parent.stat().st_mode & 0o777) == oct(0o700)
    with pytest.raises(UnsafeUID):
        make_instance_dirs(store, tmp_path / "elsewhere")
    with pytest.raises(UnsafeUID):
        make_instance_dirs(store, store / ".." / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_remove_empty_dirs_stops_at_a_non_empty_folder_and_at_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    keep = instance_path(store, STUDY, "2.25.9", SOP)
    gone = instance_path(store, STUDY, SERIES, SOP)
    make_instance_dirs(store, keep.parent)
    make_instance_dirs(store, gone.parent)
    keep.write_bytes(b"x")
    remove_empty_dirs(store, gone.parent)
    assert not gone.parent.exists()
    assert keep.is_file()
    keep.unlink()
    remove_empty_dirs(store, keep.parent)
    assert store.is_dir() and not os.listdir(store)


def test_sweep_removes_only_leftover_temporary_files(tmp_path: Path) -> None:
    folder = tmp_path / STUDY / SERIES
    folder.mkdir(parents=True)
    (folder / f".{SOP}.dcm.1a2b3c4d.tmp").write_bytes(b"torn")
    (folder / f"{SOP}.dcm").write_bytes(b"whole")
    assert sweep_temporary(tmp_path) == 1
    assert [p.name for p in folder.iterdir()] == [f"{SOP}.dcm"]
