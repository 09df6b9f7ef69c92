"""Offline batch de-identification: a folder or DICOMDIR in, ``OUT/<study>/<series>/<sop>.dcm`` out.

Why the runner is shaped this way:

* Output paths are built from the *new* UIDs only (see :mod:`appliance.batch_worker`), so no
  file name chosen by a modality or an operator and no original UID ever reaches OUT.
* Workers (``jobs > 1``) read, de-identify and write a temporary file next to its final place;
  this process alone renames temporary files into place, in input order. So the first of two
  inputs that map to the same new SOP Instance UID always wins whatever the number of workers,
  and nothing is ever overwritten: an identical second copy is counted as a duplicate, a
  different one is quarantined. One worker or many, OUT ends up byte-identical.
* The file list is streamed and at most ``3 x jobs`` chunks are in flight, so memory does not
  grow with the number of files; what grows is only the set of new study and series UIDs.
* Everything reported (:class:`BatchReport`) identifies a file by the first 12 hex digits of the
  sha256 of its path relative to IN, never by the path, since paths themselves carry PHI.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from appliance.batch_worker import (
    MEDIA_STORAGE_DIRECTORY,
    ItemResult,
    Source,
    Worker,
    init_worker,
    run_chunk,
)
from appliance.quarantine import quarantine_file
from policies.keying import EngineKeys
from policies.model import Policy

CHUNK_SIZE = 8
IN_FLIGHT_PER_JOB = 3
INCOMPLETE_MARKER = ".tce-incomplete"
# done, total, bytes read so far, seconds elapsed
ProgressCallback = Callable[[int, int, int, float], None]


@dataclass
class BatchReport:
    """Counts and PHI-free details of one run; :meth:`to_json` is what ``--report`` writes."""

    policy: Policy
    quarantine_dir: Path
    dry_run: bool = False
    jobs: int = 1
    files: int = 0
    done: int = 0
    instances: int = 0
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    quarantined: int = 0
    not_dicom: int = 0
    dicomdirs: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    elapsed: float = 0.0
    actions: dict[str, Counter[str]] = field(default_factory=dict)
    warnings: Counter[str] = field(default_factory=Counter)
    charset_switched: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    aborted: str = ""

    @property
    def ok(self) -> bool:
        """False if anything was quarantined or failed: the exit status is then 1."""
        return not (self.quarantined or self.failed or self.aborted)

    def throughput(self) -> tuple[float, float]:
        """(instances per second, MB of input read per second)."""
        seconds = max(self.elapsed, 1e-9)
        return self.instances / seconds, self.bytes_in / 1e6 / seconds

    def problem_reasons(self) -> Counter[str]:
        return Counter(p["reason"] for p in self.problems)

    def to_json(self) -> dict[str, object]:
        per_second, mb_per_second = self.throughput()
        return {
            "command": "tce deidentify",
            "dry_run": self.dry_run,
            "jobs": self.jobs,
            "policy": {"id": self.policy.id, "version": self.policy.version,
                       "digest": self.policy.digest},
            "counts": {
                "files": self.files, "instances": self.instances,
                "studies": len(self.studies), "series": len(self.series),
                "quarantined": self.quarantined, "skipped": self.not_dicom + self.dicomdirs,
                "skipped_not_dicom": self.not_dicom, "skipped_dicomdir": self.dicomdirs,
                "duplicates": self.duplicates, "failed": self.failed,
            },
            "quarantine_dir": str(self.quarantine_dir),
            "actions": {path: dict(sorted(codes.items()))
                        for path, codes in sorted(self.actions.items())},
            "warnings": dict(sorted(self.warnings.items())),
            "charset_switched": self.charset_switched,
            "problems": self.problems,
            "skipped": self.skipped,
            "aborted": self.aborted or None,
            "elapsed_seconds": round(self.elapsed, 3),
            "throughput": {"instances_per_second": round(per_second, 2),
                           "megabytes_per_second": round(mb_per_second, 2),
                           "bytes_in": self.bytes_in, "bytes_out": self.bytes_out},
        }


# --- input --------------------------------------------------------------------------------------


def path_ref(relative: str) -> str:
    """The only name a report gives a file: sha256 of its relative POSIX path, 12 hex digits."""
    return hashlib.sha256(relative.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def is_dicomdir_file(path: Path) -> bool:
    """True for a DICOMDIR (Media Storage Directory Storage), whatever the file is called."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["DirectoryRecordSequence"])
    except Exception:
        return False
    meta = getattr(ds, "file_meta", Dataset())
    return (meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY
            or "DirectoryRecordSequence" in ds)


def walk_files(root: Path, exclude: Iterable[Path] = ()) -> Iterator[str]:
    """Every file under ``root`` in sorted order, skipping excluded folders (OUT, quarantine)."""
    skip = {os.path.realpath(p) for p in exclude}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in skip)
        for name in sorted(files):
            yield os.path.join(folder, name)


def iter_sources(in_path: Path, exclude: Iterable[Path] = ()) -> tuple[int, Iterator[Source]]:
    """(number of files, a stream of them) for a folder, a DICOMDIR or a single file.

    A folder is walked twice (once to count, for the progress bar) rather than listed, so the
    list never sits in memory. A DICOMDIR is read with pydicom's FileSet; raises ValueError or
    OSError if it cannot be.
    """
    in_path = Path(in_path)
    exclude = tuple(exclude)
    paths: Iterator[str]
    if in_path.is_dir():
        root = str(in_path)
        total = sum(1 for _ in walk_files(in_path, exclude))
        paths = walk_files(in_path, exclude)
    elif is_dicomdir_file(in_path):
        root = str(in_path.parent)
        listed = [str(instance.path) for instance in FileSet(in_path)]
        total, paths = len(listed), iter(listed)
    else:
        root, total, paths = str(in_path.parent), 1, iter([str(in_path)])

    def stream() -> Iterator[Source]:
        for index, path in enumerate(paths):
            relative = Path(os.path.relpath(path, root)).as_posix()
            yield Source(index, path, path_ref(relative))

    return total, stream()


def _chunks(sources: Iterator[Source], size: int) -> Iterator[list[Source]]:
    while chunk := list(islice(sources, size)):
        yield chunk


# --- the run ------------------------------------------------------------------------------------


def run_batch(in_path: Path, out_dir: Path | None, policy: Policy, keys: EngineKeys,
              quarantine_dir: Path, *, jobs: int = 1, progress: ProgressCallback | None = None,
              sync: bool = True) -> BatchReport:
    """De-identify everything under ``in_path`` into ``out_dir`` (None: a dry run).

    A dry run reads and de-identifies every file but writes nothing, not even to the
    quarantine. ``sync=False`` skips the end-of-run flush to disk (and so the marker that
    records it): faster, but OUT may lose its newest files if the machine crashes soon after.
    Raises ValueError/OSError only for an unusable IN (e.g. a broken DICOMDIR); problems with
    single files are counted in the report.
    """
    report = BatchReport(policy, Path(quarantine_dir), dry_run=out_dir is None, jobs=jobs)
    started = time.perf_counter()
    exclude = [Path(quarantine_dir)] + ([Path(out_dir)] if out_dir is not None else [])
    report.files, sources = iter_sources(in_path, exclude)

    def tick() -> None:
        if progress is not None:
            progress(report.done, report.files, report.bytes_in, time.perf_counter() - started)

    committer = _Committer(report, Path(quarantine_dir), out_dir, tick, sync)

    def handle(results: list[ItemResult]) -> None:
        for result in results:
            committer.add(result)

    try:
        if jobs <= 1:
            worker = Worker(policy, keys, out_dir, Path(quarantine_dir))
            for chunk in _chunks(sources, CHUNK_SIZE):
                if report.aborted:
                    break
                handle([worker.process(source) for source in chunk])
        else:
            _run_pool(sources, jobs, (policy, keys, out_dir, Path(quarantine_dir)), report, handle)
    finally:
        committer.finish()
        report.elapsed = time.perf_counter() - started
    return report


WorkerInit = tuple[Policy, EngineKeys, Path | None, Path]


def _run_pool(sources: Iterator[Source], jobs: int, init: WorkerInit, report: BatchReport,
              handle: Callable[[list[ItemResult]], None]) -> None:
    """Feed chunks to ``jobs`` processes, at most IN_FLIGHT_PER_JOB each, results in order."""
    pending: deque[Future[list[ItemResult]]] = deque()
    with ProcessPoolExecutor(max_workers=jobs, initializer=init_worker, initargs=init) as pool:
        try:
            for chunk in _chunks(sources, CHUNK_SIZE):
                if report.aborted:
                    break
                pending.append(pool.submit(run_chunk, chunk))
                if len(pending) >= jobs * IN_FLIGHT_PER_JOB:
                    handle(pending.popleft().result())
            while pending:
                handle(pending.popleft().result())
        except BaseException:
            for future in pending:  # drop what was staged but will never be committed
                if not future.cancel() and future.exception() is None:
                    for result in future.result():
                        _unlink(result.tmp)
            raise


class _Committer:
    """Runs in the parent only: renames staged files into place, in input order.

    Durability is per run, not per file: OUT holds a marker file ``.tce-incomplete`` (written and
    fsynced first) until the whole run has been flushed to disk with one ``sync`` at the end.
    Per-file fsync cost more than the de-identification itself. If a run is interrupted, the
    marker stays; the next run into the same OUT then rewrites existing files instead of
    trusting them (the output is deterministic, so an intact file is rewritten identically).
    """

    def __init__(self, report: BatchReport, quarantine_dir: Path, out_dir: Path | None,
                 progress: Callable[[], None] | None = None, sync: bool = True) -> None:
        self.report = report
        self.quarantine_dir = quarantine_dir
        self.out_dir = out_dir
        self.progress = progress
        self.folders: set[str] = set()
        self.resuming = False
        self.sync = sync
        self.marker = None if out_dir is None or not sync else out_dir / INCOMPLETE_MARKER
        if self.marker is not None:
            self.resuming = self.marker.exists()
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            _write_marker(self.marker)

    def add(self, result: ItemResult) -> None:
        """Rename ``result``'s file into place and count it."""
        self._count(result)
        if self.progress is not None:
            self.progress()

    def _count(self, result: ItemResult) -> None:
        report = self.report
        report.done += 1
        report.bytes_in += result.size_in
        if result.kind == "written":
            self._written(result)
        elif result.kind == "not_dicom":
            report.not_dicom += 1
            report.skipped.append({"file": result.ref, "reason": "not DICOM"})
        elif result.kind == "dicomdir":
            report.dicomdirs += 1
            report.skipped.append({"file": result.ref, "reason": "DICOMDIR (media index)"})
        elif result.kind == "quarantined":
            self._problem(result.ref, result.reason, "quarantined")
        else:
            self._problem(result.ref, result.reason, "failed")
            if result.fatal and not report.aborted:
                report.aborted = result.reason

    def _problem(self, ref: str, reason: str, outcome: str) -> None:
        if outcome == "quarantined":
            self.report.quarantined += 1
        else:
            self.report.failed += 1
        self.report.problems.append({"file": ref, "reason": reason, "outcome": outcome})

    def _written(self, result: ItemResult) -> None:
        report = self.report
        if result.tmp:
            final = Path(result.final)
            if final.exists() and not self.resuming:
                self._duplicate(result, final)
                return
            os.replace(result.tmp, final)
            self.folders.add(str(final.parent))
        report.instances += 1
        report.bytes_out += result.size_out
        report.studies.add(result.study)
        report.series.add(result.series)
        for path, code, count in result.actions:
            report.actions.setdefault(path, Counter())[code] += count
        report.warnings.update(result.warnings)
        report.charset_switched += int(result.charset_switched)

    def _duplicate(self, result: ItemResult, final: Path) -> None:
        """Same new SOP Instance UID as an instance already in OUT: never overwrite it."""
        try:
            same = _same_content(Path(result.tmp), final)
        finally:
            _unlink(result.tmp)
        if same:
            self.report.duplicates += 1
            self.report.skipped.append({"file": result.ref,
                                        "reason": "duplicate of an instance already in OUT"})
            return
        reason = ("duplicate SOP Instance UID: an instance with the same new UID but different"
                  " content is already in OUT")
        try:
            quarantine_file(result.path, self.quarantine_dir, reason)
        except OSError as exc:
            why = f"{reason}; could not quarantine ({exc.strerror or type(exc).__name__})"
            self._problem(result.ref, why, "failed")
            return
        self._problem(result.ref, reason, "quarantined")

    def finish(self) -> None:
        """Flush the run to disk, fsync every folder that received a file, drop the marker."""
        if self.out_dir is None or not self.sync:
            return
        os.sync()
        parents = {str(Path(f).parent) for f in self.folders}
        for folder in sorted(self.folders | parents | {str(self.out_dir)}):
            try:
                fd = os.open(folder, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self.marker is not None and not self.report.aborted:
            self.marker.unlink(missing_ok=True)
            _fsync_path(self.out_dir)


def _write_marker(marker: Path) -> None:
    with open(marker, "w", encoding="ascii") as handle:
        handle.write("tce deidentify is writing here; files are not yet known to be on disk\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_path(marker.parent)


def _fsync_path(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def _unlink(path: str) -> None:
    if path:
        Path(path).unlink(missing_ok=True)
