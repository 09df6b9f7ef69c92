"""The files of a verified folder: DICOM files, DICOMDIRs and everything else.

Verification looks at every file below the folder, hidden ones included: a leak in a stray file
is still a leak. DICOM Part 10 files get the tag checks; DICOMDIRs get the directory checks;
every other file (README.TXT, INDEX.HTM, anything else) is only read by the ``--originals``
byte scan, and files that are neither the product's media texts nor DICOM are listed so that a
person knows they were not tag-checked. An output folder that still carries the batch runner's
``.tce-incomplete`` marker was written by a run that did not finish.

Headers are read with ``defer_size``: every element is parsed (elements after Pixel Data too,
which ``stop_before_pixels`` would miss) but large values stay on disk, so Pixel Data is never
loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import MediaStorageDirectoryStorage

from appliance.batch import INCOMPLETE_MARKER
from pdi.contents import INDEX, README
from pdi.part10 import is_part10
from policies.annex_e import keyword_or_tag

DEFER_SIZE = 4096
_UNDEFINED_LENGTH = 0xFFFFFFFF
PRODUCT_TEXT_FILES = frozenset({README, INDEX})


class UnreadableFile(Exception):
    """A Part 10 file pydicom cannot parse; the message says why, without values."""


@dataclass
class OutputFiles:
    root: Path
    dicom: list[Path] = field(default_factory=list)
    dicomdirs: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)
    incomplete: bool = False

    def everything(self) -> list[Path]:
        return sorted([*self.dicom, *self.dicomdirs, *self.other])

    def rel(self, path: Path) -> str:
        return relative(self.root, path)

    @property
    def unchecked(self) -> list[Path]:
        """Non-DICOM files other than the media texts the PDI writer puts beside a DICOMDIR."""
        return [p for p in self.other
                if p.name.upper().split(";")[0] not in PRODUCT_TEXT_FILES
                and p.name != INCOMPLETE_MARKER]


def relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper().split(";")[0].rstrip(".") != "DICOMDIR":
        return False
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=[0x00020002]).file_meta
    except Exception:  # damaged: the DICOMDIR checks report it
        return True
    return bool(meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage)


def discover(root: Path) -> OutputFiles:
    """Every file below ``root``, sorted, classified as DICOM, DICOMDIR or other."""
    found = OutputFiles(root)
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        here = Path(folder)
        for name in sorted(names):
            path = here / name
            if not path.is_file():
                continue
            if name == INCOMPLETE_MARKER:
                found.incomplete = True
                found.other.append(path)
            elif _is_dicomdir(path):
                found.dicomdirs.append(path)
            elif is_part10(path):
                found.dicom.append(path)
            else:
                found.other.append(path)
    return found


def read_dataset(path: Path) -> Dataset:
    """The whole dataset with large values deferred; :class:`UnreadableFile` if it fails."""
    try:
        ds = dcmread(path, defer_size=DEFER_SIZE)
        ds.get_item(0x00080018)  # parse the top level now, so that damage surfaces here
    except Exception as exc:  # pydicom raises many types for damaged input
        raise UnreadableFile(f"cannot be parsed ({type(exc).__name__})") from None
    if not ds.get_item(0x00080018):
        raise UnreadableFile("the dataset has no SOP Instance UID")
    size = path.stat().st_size
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset would read deferred values)
        elem = ds.get_item(tag, keep_deferred=True)
        if (isinstance(elem, RawDataElement) and elem.length != _UNDEFINED_LENGTH
                and elem.value_tell + elem.length > size):
            raise UnreadableFile(f"truncated: {keyword_or_tag(int(tag))} runs past the end of"
                                 " the file")
    return ds
