"""Where the Receiver keeps an instance: ``<store>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.

The three path components come off the wire, so they are treated as hostile: a SOP Instance
UID of ``../../etc/cron.d/x`` or ``1.2/3`` must never become a path. Each one must be a DICOM
UID (PS3.5 §9.1: at most 64 characters, digits in non-empty components separated by single
dots), which leaves no room for ``/``, ``..``, a leading dot or a NUL. Components with a leading
zero (``1.02.3``) are tolerated: older equipment writes them, and they are as harmless in a path
as any other digits. The resolved path is also checked to lie inside the store, as a second,
independent guard.

Folders are created with mode 0700 and every folder this call creates is fsynced into its
parent, so that after a C-STORE success the new study and series folders survive a power cut
together with the file inside them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from appliance.durable import FOLDER_MODE, fsync_dir

SUFFIX = ".dcm"
MAX_UID = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class UnsafeUID(ValueError):
    """A UID that cannot name a folder or file; the message names the attribute, not the value."""


def is_path_safe_uid(value: str) -> bool:
    """True for a DICOM UID usable as one path component (see the module docstring)."""
    return 0 < len(value) <= MAX_UID and _UID.fullmatch(value) is not None


def check_uid(value: object, keyword: str) -> str:
    """``value`` as a UID string; raises :class:`UnsafeUID` if it is missing or not a UID."""
    text = "" if value is None else str(value)
    if not text:
        raise UnsafeUID(f"dataset has no {_label(keyword)}")
    if not is_path_safe_uid(text):
        raise UnsafeUID(f"{_label(keyword)} is not a valid UID")
    return text


def _label(keyword: str) -> str:
    """``SOPInstanceUID`` → ``SOP Instance UID`` (the words a reason shows)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", keyword)


def instance_path(store_dir: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """The store path of one instance; raises :class:`UnsafeUID` for a UID that is not one."""
    parts = (check_uid(study_uid, "StudyInstanceUID"),
             check_uid(series_uid, "SeriesInstanceUID"),
             check_uid(sop_uid, "SOPInstanceUID"))
    root = Path(os.path.abspath(store_dir))
    path = root.joinpath(parts[0], parts[1], parts[2] + SUFFIX)
    if Path(os.path.abspath(path)).parent.parent.parent != root:  # cannot happen for a UID
        raise UnsafeUID("instance path would leave the store")
    return path


def make_instance_dirs(store_dir: Path, folder: Path) -> None:
    """Create ``folder`` (below ``store_dir``) durably: each new folder fsynced into its parent."""
    root = Path(os.path.abspath(store_dir))
    folder = Path(os.path.abspath(folder))
    if root not in folder.parents:
        raise UnsafeUID("instance folder would leave the store")
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # another association made it meanwhile
            continue
        fsync_dir(path.parent)


def remove_empty_dirs(store_dir: Path, folder: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) the store while they are empty."""
    root = Path(os.path.abspath(store_dir))
    current = Path(os.path.abspath(folder))
    while root in current.parents:
        try:
            current.rmdir()
        except OSError:  # not empty (or already gone): stop here
            return
        current = current.parent


def sweep_temporary(store_dir: Path) -> int:
    """Delete temporary files a crash left in the store (never acknowledged); returns the count.

    :func:`appliance.durable.write_atomic` names them ``.<name>.<random>.tmp``; a completed write
    has been renamed, so whatever still carries that name was never acknowledged.
    """
    removed = 0
    for dirpath, _dirs, names in os.walk(store_dir):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed
