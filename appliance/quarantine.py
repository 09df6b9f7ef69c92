"""Quarantine: set aside a file that could not be processed, with the reason beside it.

Files land here when they are unreadable, truncated or invalid, or when a policy refuses them.
The quarantine folder belongs to the working area (``settings.quarantine_dir``), never to an
output folder, because its files still hold everything the original held.

Why the names are opaque: original file names are chosen by modalities and operators and often
carry PHI (``SMITH_JOHN_CT.dcm``), and the quarantine folder is listed, backed up and discussed
far more casually than the data itself. Each file is stored as ``<uuid4 hex>`` and described by
``<uuid4 hex>.reason.json`` (reason, stage, UTC time, sha256 and size of the content): enough to
find duplicates and to decide what to do, without the original name or path.

A source path is *copied*, never moved: the input belongs to the operator, and deleting it is a
decision for a person, not for a batch run. Writes are atomic (temporary file, fsync, rename), so
a crash never leaves a half-written file that looks like a complete one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from appliance.durable import FILE_MODE, FOLDER_MODE, fsync_dir, make_dirs, write_atomic

REASON_SUFFIX = ".reason.json"
# Quarantined files hold PHI: FOLDER_MODE 0700 and FILE_MODE 0600 (from appliance.durable).
__all__ = ["FILE_MODE", "FOLDER_MODE", "QuarantineRecord", "list_quarantine", "quarantine_file",
           "read_reason"]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class QuarantineRecord:
    """What :func:`read_reason` returns: the contents of one ``.reason.json`` file."""

    name: str
    reason: str
    stage: str
    time: str
    sha256: str
    size: int
    detail: str = ""


def quarantine_file(source: str | os.PathLike[str] | bytes, quarantine_dir: Path, reason: str,
                    stage: str = "deidentify", detail: str = "") -> Path:
    """Store a copy of ``source`` (a path, or the content itself) in ``quarantine_dir``.

    ``reason`` must be free of PHI (it is shown in summaries); ``detail`` may carry a technical
    message and stays in the reason file only. Returns the path of the stored file.
    Raises :class:`OSError` if the source cannot be read or the folder cannot be written.
    """
    quarantine_dir = Path(quarantine_dir)
    make_dirs(quarantine_dir)
    name = uuid.uuid4().hex
    target = quarantine_dir / name
    digest, size = _store(source, target)
    record = {
        "reason": reason,
        "stage": stage,
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "sha256": digest,
        "size": size,
    }
    if detail:
        record["detail"] = detail
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    reason_path = quarantine_dir / f"{name}{REASON_SUFFIX}"
    try:
        write_atomic(reason_path, text.encode("utf-8"), sync_dir=False)
    except BaseException:
        target.unlink(missing_ok=True)  # a file without its reason would be a mystery
        raise
    fsync_dir(quarantine_dir)
    return target


def read_reason(stored: Path) -> QuarantineRecord:
    """The reason record of a quarantined file (``stored`` is the path quarantine_file gave)."""
    data = json.loads(Path(f"{stored}{REASON_SUFFIX}").read_text(encoding="utf-8"))
    return QuarantineRecord(name=Path(stored).name, reason=data["reason"], stage=data["stage"],
                            time=data["time"], sha256=data["sha256"], size=data["size"],
                            detail=data.get("detail", ""))


def list_quarantine(quarantine_dir: Path) -> list[QuarantineRecord]:
    """Every quarantined file in ``quarantine_dir`` that has a reason file, oldest first."""
    folder = Path(quarantine_dir)
    if not folder.is_dir():
        return []
    records = [read_reason(folder / p.name.removesuffix(REASON_SUFFIX))
               for p in folder.iterdir() if p.name.endswith(REASON_SUFFIX)]
    return sorted(records, key=lambda r: (r.time, r.name))


def _store(source: str | os.PathLike[str] | bytes, target: Path) -> tuple[str, int]:
    """Copy ``source`` into ``target`` atomically; returns (sha256 hex, size)."""
    digest = hashlib.sha256()
    size = 0
    with _source_stream(source) as src:  # opened first: an unreadable source writes nothing

        def blocks() -> Iterator[bytes]:
            nonlocal size
            while block := src.read(_CHUNK):
                digest.update(block)
                size += len(block)
                yield block

        write_atomic(target, blocks(), sync_dir=False)
    return digest.hexdigest(), size


def _source_stream(source: str | os.PathLike[str] | bytes) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    return open(source, "rb")  # closed by the caller's with-block
