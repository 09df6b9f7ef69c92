"""One input file of a batch run: recognise, check, de-identify and stage it (in a worker).

This module is what ``tce deidentify --jobs N`` runs in each worker process. It is kept apart
from the runner (:mod:`appliance.batch`) so a worker imports only what it needs, and so the rules
for *what counts as a DICOM instance we can process* live in one place:

* DICOM is recognised by "DICM" at offset 128; a file without a preamble is tried with a forced
  read only if it starts like a dataset (group 0000-0008), so a video or archive lying in the
  folder is never parsed. Anything else is *not DICOM*: skipped and reported, never quarantined.
* pydicom reads truncated files without complaint, so completeness is checked here: values
  shorter than their declared length, images without Pixel Data, native Pixel Data shorter than
  Rows x Columns x Samples x Frames x Bits Allocated, and missing Type 1 UIDs all send the file
  to quarantine with a PHI-free reason.
* The de-identified file is written to a temporary name next to its final place; the runner
  fsyncs it and renames it into place, so OUT never holds a partial file.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from appliance.fastwrite import write_instance
from appliance.quarantine import quarantine_file
from appliance.splice import PixelSpan, Truncated, copy_span, read_header
from policies.annex_e import keyword_or_tag
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.model import Policy
from policies.outcome import Outcome, PolicyRefusal

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
TEMP_PREFIX = ".tce-"
_UNDEFINED = 0xFFFFFFFF
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_HEAD_BYTES = 132  # preamble and "DICM"
_INDEX_RE = re.compile(r"\[[^\]]*\]")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class NotDicom(Exception):
    """The file is not DICOM at all: skipped and reported, never quarantined."""


class MediaDirectory(NotDicom):
    """A DICOMDIR: the index of a media, not an instance; skipped, never copied to OUT."""


class InvalidInstance(Exception):
    """A DICOM file that cannot be processed; ``str()`` is a PHI-free reason for the report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


@dataclass(frozen=True)
class Source:
    """One input file; ``ref`` (sha256[:12] of the relative path) is all a report may show."""

    index: int
    path: str
    ref: str


@dataclass(frozen=True)
class ItemResult:
    """What happened to one input, in a form that crosses process boundaries cheaply."""

    index: int
    ref: str
    kind: str  # written, not_dicom, dicomdir, quarantined, failed
    size_in: int = 0
    size_out: int = 0
    study: str = ""
    series: str = ""
    sop: str = ""
    tmp: str = ""
    final: str = ""
    reason: str = ""
    actions: tuple[tuple[str, str, int], ...] = ()
    warnings: tuple[str, ...] = ()
    charset_switched: bool = False
    fatal: bool = False
    path: str = ""  # the input, for the runner only (a duplicate is quarantined from it)


def read_instance(source: bytes | str | os.PathLike[str]) -> Dataset:
    """Parse and check one file, given its path or its bytes.

    Raises :class:`NotDicom` (:class:`MediaDirectory` for a DICOMDIR), :class:`InvalidInstance`,
    or :class:`OSError` if the file cannot be opened.
    """
    if isinstance(source, bytes):
        return _parse(io.BytesIO(source), source[:_HEAD_BYTES])
    with open(source, "rb") as fh:  # pydicom reads from the file: no extra copy of the pixels
        return _parse(fh, fh.read(_HEAD_BYTES))


def _parse(fp: BinaryIO, head: bytes) -> Dataset:
    fp.seek(0)
    if head[128:132] == b"DICM":
        try:
            ds = dcmread(fp)
        except Exception as exc:
            raise InvalidInstance(f"not readable as DICOM ({type(exc).__name__})",
                                  str(exc)) from None
    else:
        if len(head) < 8 or not _starts_like_dataset(head):
            raise NotDicom
        try:
            ds = dcmread(fp, force=True)
            ds.get("SOPClassUID")
        except Exception:
            raise NotDicom from None
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise NotDicom
    _check_complete(ds)
    return ds


def _starts_like_dataset(data: bytes) -> bool:
    little = int.from_bytes(data[0:2], "little")
    big = int.from_bytes(data[0:2], "big")
    return little <= 0x0008 or big == 0x0008


def is_dicomdir_dataset(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    meta_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return (MEDIA_STORAGE_DIRECTORY in (meta_class, ds.get("SOPClassUID"))
            or 0x00041220 in ds)  # DirectoryRecordSequence


def _check_complete(ds: Dataset) -> None:
    if is_dicomdir_dataset(ds):
        raise MediaDirectory
    # pydicom stops at the end of the file, so only the last element read can be cut short.
    last = next(reversed(list(ds.keys())), None)
    raw = ds.get_item(last) if last is not None else None
    if (isinstance(raw, RawDataElement) and raw.value is not None
            and raw.length != _UNDEFINED and len(raw.value) < raw.length):
        raise InvalidInstance(f"truncated: {keyword_or_tag(int(raw.tag))} is shorter than declared")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword) or "").strip():
            raise InvalidInstance(f"invalid: {keyword} is missing or empty")
    is_image = "Image Storage" in UID(str(ds.SOPClassUID)).name
    if is_image and not any(k in ds for k in _PIXEL_KEYWORDS):
        raise InvalidInstance("truncated or invalid: an image without Pixel Data")
    pixel_data = ds.get_item(0x7FE00010)
    if pixel_data is not None and not _encapsulated(pixel_data):
        expected = _native_pixel_bytes(ds)
        if expected and len(ds.PixelData) < expected:
            raise InvalidInstance("truncated: Pixel Data is shorter than the image needs")


def _encapsulated(elem: RawDataElement | DataElement) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.length == _UNDEFINED
    return bool(elem.is_undefined_length)


def _native_pixel_bytes(ds: Dataset) -> int:
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        bits = int(ds.BitsAllocated)
        pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * frames
    except (AttributeError, TypeError, ValueError):
        return 0
    return (pixels * bits + 7) // 8


class Worker:
    """Per-process state: one Deidentifier, built once, and where to put what it produces."""

    def __init__(self, policy: Policy, keys: EngineKeys, out_dir: Path | None,
                 quarantine_dir: Path) -> None:
        self.engine = Deidentifier(policy, keys)
        self.path_key = keys.uid
        self.out_dir = out_dir  # None: dry run, nothing is written anywhere
        self.quarantine_dir = quarantine_dir

    def process(self, source: Source) -> ItemResult:
        index, ref = source.index, source.ref
        size = 0
        try:
            size = os.stat(source.path).st_size
            with open(source.path, "rb") as fh:
                ds, span = read_for_splice(fh, size)
                if ds is None:
                    ds = read_instance(source.path)
                originals = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                             str(ds.SOPInstanceUID))
                outcome = self._deidentify(ds)
                return self._write(source, size, ds, outcome, originals, fh, span)
        except MediaDirectory:
            return ItemResult(index, ref, "dicomdir")
        except NotDicom:
            return ItemResult(index, ref, "not_dicom")
        except InvalidInstance as exc:
            return self._quarantine(source, size, str(exc), exc.detail)
        except OSError as exc:
            reason = f"cannot read input file ({exc.strerror or type(exc).__name__})"
            return ItemResult(index, ref, "failed", reason=reason)

    def _write(self, source: Source, size: int, ds: Dataset, outcome: Outcome,
               originals: tuple[str, str, str], fh: BinaryIO,
               span: PixelSpan | None) -> ItemResult:
        index, ref = source.index, source.ref
        parts = tuple(self._component(new, old) for new, old in zip(
            (outcome.study_instance_uid, outcome.series_instance_uid, outcome.sop_instance_uid),
            originals, strict=True))
        result = ItemResult(
            index, ref, "written", path=source.path, size_in=size,
            study=parts[0], series=parts[1], sop=parts[2], actions=action_counts(outcome),
            warnings=tuple(outcome.warnings), charset_switched=outcome.charset_switched)
        final = None if self.out_dir is None else (
            self.out_dir / parts[0] / parts[1] / f"{parts[2]}.dcm")
        try:
            tmp, size_out = write_temporary(final, ds, fh, span)
        except InvalidInstance as exc:
            return self._quarantine(source, size, str(exc), exc.detail)
        except OSError as exc:
            reason = f"cannot write to OUT ({exc.strerror or type(exc).__name__})"
            return ItemResult(index, ref, "failed", size_in=size, reason=reason, fatal=True)
        return replace(result, size_out=size_out, tmp=str(tmp or ""), final=str(final or ""))

    def _deidentify(self, ds: Dataset) -> Outcome:
        try:
            return self.engine.deidentify(ds)
        except PolicyRefusal as exc:
            raise InvalidInstance(f"refused by policy: {exc}") from None
        except Exception as exc:  # a bug or a malformed value: quarantine, keep going
            raise InvalidInstance(f"de-identification failed ({type(exc).__name__})",
                                  str(exc)) from None

    def _component(self, new: str, original: str) -> str:
        """A path component for a new UID; never an original one, never unsafe characters."""
        if new and new != original and len(new) <= 64 and _UID_RE.fullmatch(new):
            return new
        digest = hmac.new(self.path_key, f"path\x00{new}".encode(), hashlib.sha256)
        return "k" + digest.hexdigest()[:40]

    def _quarantine(self, source: Source, size: int, reason: str, detail: str) -> ItemResult:
        result = ItemResult(source.index, source.ref, "quarantined", size_in=size, reason=reason)
        if self.out_dir is None:
            return result
        try:
            quarantine_file(source.path, self.quarantine_dir, reason, detail=_scrub(detail, source))
        except OSError as exc:
            why = f"{reason}; could not quarantine ({exc.strerror or type(exc).__name__})"
            return replace(result, kind="failed", reason=why)
        return result


def read_for_splice(fh: BinaryIO, size: int) -> tuple[Dataset | None, PixelSpan | None]:
    """The header and Pixel Data span when :mod:`appliance.splice` applies, else (None, None).

    The same completeness rules as :func:`read_instance` hold: a cut-short Pixel Data, an image
    without Pixel Data or missing UIDs send the file to quarantine.
    """
    if fh.read(_HEAD_BYTES)[128:132] != b"DICM":
        return None, None
    fh.seek(0)
    try:
        found = read_header(fh, size)
    except Truncated:
        raise InvalidInstance("truncated: PixelData is shorter than declared") from None
    except Exception:
        return None, None  # let the full reader say what is wrong
    if found is None:
        return None, None
    ds, span = found
    if span is None or span.encapsulated:
        if span is None and "Image Storage" in UID(str(ds.get("SOPClassUID", ""))).name:
            return None, None
        _check_header(ds)
        return ds, span
    _check_header(ds)
    expected = _native_pixel_bytes(ds)
    if expected and span.value_length < expected:
        raise InvalidInstance("truncated: Pixel Data is shorter than the image needs")
    return ds, span


def _check_header(ds: Dataset) -> None:
    if is_dicomdir_dataset(ds):
        raise MediaDirectory
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword) or "").strip():
            raise InvalidInstance(f"invalid: {keyword} is missing or empty")


def write_temporary(final: Path | None, ds: Dataset, source: BinaryIO | None = None,
                     span: PixelSpan | None = None) -> tuple[Path | None, int]:
    """Encode ``ds`` into a temporary file beside ``final``; (its path, size).

    With a ``span``, ``ds`` holds the header only and the Pixel Data element is copied from
    ``source`` (see :mod:`appliance.splice`). Without a ``final`` (dry run) the encoding goes to
    memory and is dropped: it is still done, so a dry run finds the instances that cannot be
    encoded. The caller fsyncs and renames.
    """
    if final is None:
        buffer = io.BytesIO()
        _save(ds, buffer)
        return None, buffer.tell() + (span.end - span.start if span else 0)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            _save(ds, fh, source.fileno() if source is not None else None)
            if span is not None and source is not None:
                try:
                    copy_span(source, fh, span)
                except Truncated:
                    raise InvalidInstance("truncated: PixelData is shorter than declared") \
                        from None
            size = fh.seek(0, os.SEEK_END)
            fh.flush()
            # Start writing back now, asynchronously, so the end-of-run sync has little left.
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, size


def _save(ds: Dataset, fh: BinaryIO, source_fd: int | None = None) -> None:
    try:
        write_instance(ds, fh, source_fd)
    except OSError:
        raise
    except Exception as exc:
        raise InvalidInstance(f"cannot be encoded after de-identification"
                              f" ({type(exc).__name__})", str(exc)) from None


def action_counts(outcome: Outcome) -> tuple[tuple[str, str, int], ...]:
    """``Outcome.by_attribute()`` as (path, code, count) triples, folding each path once.

    Same result as by_attribute(); the folded path of each distinct attribute path is cached
    per process, because the same paths recur in every instance of a series.
    """
    counts = Counter((record.path, record.code) for record in outcome.actions)
    folded: Counter[tuple[str, str]] = Counter()
    for (path, code), n in counts.items():
        folded[(_fold(path), code)] += n
    return tuple((path, code, n) for (path, code), n in sorted(folded.items()))


@lru_cache(maxsize=65536)
def _fold(path: str) -> str:
    """``Seq[3].Item[0].Tag`` -> ``Seq[*].Item[*].Tag``, as Outcome.by_attribute() folds it."""
    return _INDEX_RE.sub("[*]", path)


def _scrub(detail: str, source: Source) -> str:
    """Technical detail for the reason file, without the input path (paths can carry PHI)."""
    return detail.replace(source.path, "<input>").replace(os.path.basename(source.path),
                                                          "<input>")[:500]


_WORKER: Worker | None = None


def init_worker(policy: Policy, keys: EngineKeys, out_dir: Path | None,
                quarantine_dir: Path) -> None:
    """Process-pool initializer: build the worker's Deidentifier once, not once per file."""
    global _WORKER
    _WORKER = Worker(policy, keys, out_dir, quarantine_dir)


def run_chunk(chunk: list[Source]) -> list[ItemResult]:
    """Process a few files per task, so pickling and scheduling cost little per file."""
    assert _WORKER is not None, "worker process was not initialised"
    return [_WORKER.process(source) for source in chunk]
