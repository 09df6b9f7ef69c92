"""The public value types of the PDI writer: options in, one result per volume out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_CS = re.compile(r"[A-Z0-9 _]{0,16}")
MIN_VOLUME_BYTES = 64 * 1024


class MediaError(Exception):
    """Media could not be written; nothing was left at the output path. The message says why
    and what to do."""


@dataclass(frozen=True)
class MediaOptions:
    """How to write PDI media. Nothing here may carry PHI: it is printed on README.TXT.

    `label` becomes the File-set ID (0004,1130): at most 16 characters of the CS repertoire
    (A-Z, 0-9, space, underscore; a hyphen is not allowed, hence DE_IDENTIFIED).
    `volume_bytes` is the capacity of one volume (700 MB: a CD-R); larger exports are split
    into independent File-sets VOL001, VOL002, ... because PS3.11 forbids multi-volume sets.
    """

    volume_bytes: int = 700_000_000
    producer: str = "tce-appliance"
    version: str = "0.1.0"
    institution: str = ""
    label: str = "DE_IDENTIFIED"
    web: bool = True

    def __post_init__(self) -> None:
        if not _CS.fullmatch(self.label):
            raise ValueError(
                f"label {self.label!r} is not a valid File-set ID: use at most 16 characters "
                "from A-Z, 0-9, space and underscore"
            )
        if self.volume_bytes < MIN_VOLUME_BYTES:
            raise ValueError(f"volume_bytes must be at least {MIN_VOLUME_BYTES}")


@dataclass(frozen=True)
class VolumeResult:
    """One written volume (an independent File-set).

    `studies` lists the Study Instance UIDs (of de-identified data) with at least one instance
    on this volume; `bytes` counts every file written, DICOMDIR and README.TXT included;
    `profile` is the PS3.11 profile the volume meets (see pdi.profiles); `notes` says what a
    person should know: studies split across volumes, placeholder values in the DICOMDIR,
    duplicates skipped, a volume over its size limit.
    """

    path: Path
    file_set_uid: str
    studies: list[str]
    instances: int
    bytes: int
    profile: str
    notes: list[str] = field(default_factory=list)


def dated_folder(parent: Path, now: datetime | None = None) -> Path:
    """A new folder name under ``parent`` for one media write, e.g. ``20261207-215900``: what
    ``media write`` uses when no OUT is given, so repeated writes never collide."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate, number = parent / stamp, 1
    while candidate.exists():
        number += 1
        candidate = parent / f"{stamp}-{number}"
    return candidate
