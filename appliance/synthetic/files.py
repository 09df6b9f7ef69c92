"""Writing datasets as Part 10 files, flat or in an export-like "nested" layout, and `tce sample`.

Why this is its own module: importers must cope with real exports, so the nested layout adds
the awkward parts (PATnnnnn/STUnnnnn folders, repeated file names, files without an extension,
NOTES_FILE which is not DICOM, TRUNCATED_FILE which is cut off). write_datasets takes any
datasets, not only the sample; write_sample and main_sample write the seeded sample.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from appliance.synthetic.studyset import make_sample_study_set

NOTES_FILE = "notes.txt"  # non-DICOM file dropped by the "nested" layout
TRUNCATED_FILE = "PAT00001/STU00001/IMG99999.dcm"  # truncated Part 10 file ("nested" layout)


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_datasets(datasets: Iterable[Dataset], out_dir: Path, layout: str = "flat") -> list[Path]:
    """Write Part 10 files; return the complete DICOM files only, in input order.

    "nested" mimics a real export: PATnnnnn/STUnnnnn/ folders, file names that repeat across
    folders, one study without ".dcm" extensions, plus NOTES_FILE (not DICOM) and TRUNCATED_FILE
    (a cut-off copy of the first instance) that importers must reject without crashing.
    """
    if layout not in ("flat", "nested"):
        raise ValueError(f"layout must be 'flat' or 'nested', not {layout!r}")
    out_dir = Path(out_dir)
    items = list(datasets)
    if layout == "flat":
        return [_save(ds, out_dir / f"IMG{n:05d}.dcm") for n, ds in enumerate(items, 1)]
    patients: dict[str, dict[str, list[int]]] = {}
    for n, ds in enumerate(items):
        studies = patients.setdefault(str(ds.PatientID), {})
        studies.setdefault(str(ds.StudyInstanceUID), []).append(n)
    paths: dict[int, Path] = {}
    folder_index = 0
    for pi, studies in enumerate(patients.values(), 1):
        for si, members in enumerate(studies.values(), 1):
            suffix = "" if folder_index == 1 else ".dcm"
            folder = out_dir / f"PAT{pi:05d}" / f"STU{si:05d}"
            for k, n in enumerate(members, 1):
                paths[n] = _save(items[n], folder / f"IMG{k:05d}{suffix}")
            folder_index += 1
    if items:
        first = paths[0].read_bytes()
        pixel_value = first.find(b"\xe0\x7f\x10\x00") + 12  # PixelData: tag, VR, 0000, length
        cut = pixel_value + (len(first) - pixel_value) // 2  # an interrupted copy
        (out_dir / TRUNCATED_FILE).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / TRUNCATED_FILE).write_bytes(first[:cut])
        notes = f"Transfer notes: CD for {items[0].PatientName} ({items[0].PatientID}) burned\n"
        (out_dir / NOTES_FILE).write_text(notes, encoding="utf-8")
    return [paths[n] for n in range(len(items))]


def write_sample(out_dir: Path, seed: int = 0, small: bool = True,
                 layout: str = "nested") -> list[Path]:
    return write_datasets(make_sample_study_set(seed, small), out_dir, layout)


def main_sample(out_dir: str, seed: int = 0) -> int:
    """`tce sample OUT`: write the nested sample; prints counts only, never patient data."""
    try:
        paths = write_sample(Path(out_dir), seed=seed)
    except OSError as exc:
        print(f"error: cannot write the sample to {out_dir}: {exc.strerror or exc}. "
              "Choose a writable directory.", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} DICOM files (plus {NOTES_FILE} and one truncated file) "
          f"to {out_dir}")
    return 0
