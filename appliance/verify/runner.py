"""``verify_output``: run every check over a folder of de-identified output.

Order of work: find the files; read each DICOM file's header once and run the per-file checks
(the compiled plan walk, markers, review flags, File Meta Information) against the policy that
produced it; then the checks that need the whole set (references, DICOMDIRs, stray files); then,
with originals, the byte scan of every file. Memory stays flat in the number of files: a file's
dataset is dropped after its checks, only a small summary (UIDs, the values a DICOMDIR record
may copy) is kept.

Which policy: ``--policy`` if given, for every file. Otherwise each file's own last
De-identification Method, if it names a built-in policy (id and digest); a file that names no
policy is checked against the policy most files of the set name, so that a file whose markers
were stripped is reported (marker errors) rather than skipped. A file naming a policy that is not
built in, or a set in which no file names one, needs ``--policy``: :class:`PolicyUnknown`
(exit status 2).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from pydicom.dataset import Dataset

from appliance.settings import ConfigError
from appliance.verify.bytescan import scan_all
from appliance.verify.dicomdir import DicomdirCheck, FileSummary, summarise
from appliance.verify.files import OutputFiles, UnreadableFile, discover, read_dataset
from appliance.verify.findings import Check, Findings
from appliance.verify.markers import PolicyCatalogue, check_markers, describe_method, method_texts
from appliance.verify.ocr import OcrJob, run_ocr, tesseract_version
from appliance.verify.originals import Original, PatternSet
from appliance.verify.report import OriginalsScan, PolicyUse, Report
from appliance.verify.review import check_review
from appliance.verify.uids import References
from appliance.verify.walk import DatasetChecker, Declared, FileContext
from policies.annex_e import compile_plan, keyword_or_tag
from policies.charset import encodings_of, raw_strings
from policies.model import Option, Policy
from policies.private import SafePrivateTable, declared_safe

_CORE_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012,
                        0x00020013})
_PRIVATE_META = frozenset({0x00020100, 0x00020102})
_NOTHING_DECLARED: Declared = (frozenset(), frozenset())


class PolicyUnknown(ConfigError):
    """Which policy produced the files cannot be told from their markers (exit status 2)."""


class _Run:
    def __init__(self, root: Path, policy: Policy | None) -> None:
        self.root = root
        self.policy = policy
        self.findings = Findings()
        self.report = Report(str(root), self.findings)
        self.catalogue = PolicyCatalogue([policy] if policy is not None else [])
        self.refs = References()
        self.summaries: dict[Path, FileSummary] = {}
        self._safe: SafePrivateTable | None = None
        self.ocr_jobs: list[OcrJob] = []

    def safe_private(self, policy: Policy) -> SafePrivateTable | None:
        if Option.RETAIN_SAFE_PRIVATE not in policy.options:
            return None
        if self._safe is None:
            self._safe = SafePrivateTable.bundled()
        return self._safe

    def check_file(self, files: OutputFiles, path: Path, ds: Dataset, policy: Policy,
                   how: str) -> None:
        rel = files.rel(path)
        use = self.report.policies.setdefault(f"{policy.id}@{policy.digest} {how}",
                                              PolicyUse(policy, how))
        use.files += 1
        declared = _NOTHING_DECLARED
        if Option.RETAIN_SAFE_PRIVATE in policy.options and 0x00080300 in ds:
            declared = declared_safe(ds)
        ctx = FileContext(rel, policy, compile_plan(policy), self.findings, self.refs,
                          self.safe_private(policy), declared)
        DatasetChecker(ctx).check(ds)
        check_markers(self.findings, rel, ds, policy, self.catalogue)
        check_review(self.findings, rel, ds, policy)
        _check_file_meta(self.findings, rel, ds)
        summary = summarise(rel, ds)
        self.refs.add_instance(self.findings, summary.sop_instance_uid,
                               summary.values.get(0x0020000E, ""),
                               summary.values.get(0x0020000D, ""), rel)
        self.summaries[path.resolve()] = summary
        if 0x7FE00010 in ds:
            self.ocr_jobs.append(OcrJob(path, rel, Option.RETAIN_LONG_FULL_DATES
                                        not in policy.options))

    def set_policy(self) -> Policy | None:
        counts = Counter(key for key, use in self.report.policies.items() for _ in
                         range(use.files))
        if not counts:
            return None
        return self.report.policies[counts.most_common(1)[0][0]].policy


def verify_output(root: Path, *, policy: Policy | None = None,
                  originals: list[Original] | None = None, ocr: bool = False) -> Report:
    """Verify the de-identified output under ``root``; the report says what was found.

    With ``ocr``, Tesseract reads the first frame of every image (:mod:`.ocr`); without
    Tesseract installed that raises :class:`appliance.verify.ocr.OcrUnavailable` up front."""
    started = time.monotonic()
    version = tesseract_version() if ocr else ""
    run = _Run(root, policy)
    findings, report = run.findings, run.report
    files = discover(root)
    report.dicom_files, report.dicomdirs = len(files.dicom), len(files.dicomdirs)
    report.other_files = len(files.other)
    unnamed: list[Path] = []
    for path in files.dicom:
        try:
            ds = read_dataset(path)
        except UnreadableFile as exc:
            findings.error(Check.FILE, files.rel(path), "", str(exc))
            continue
        chosen, how = policy, "--policy"
        if chosen is None:
            methods = method_texts(ds)
            chosen, how = (run.catalogue.recognise(methods[-1]) if methods else None,
                           "De-identification Method")
            if chosen is None and methods:
                raise PolicyUnknown(
                    f"cannot tell which policy produced {files.rel(path)}: its"
                    f" De-identification Method names {describe_method(methods[-1])}, which is"
                    " not a built-in policy; pass --policy with that policy's file")
            if chosen is None:
                unnamed.append(path)
                continue
        run.check_file(files, path, ds, chosen, how)
    if unnamed:
        fallback = run.set_policy()
        if fallback is None:
            raise PolicyUnknown("no file names the policy that produced it (De-identification"
                                " Method is missing); pass --policy P with the policy used")
        for path in unnamed:
            run.check_file(files, path, read_dataset(path), fallback,
                           "the rest of the set (the file names none)")
    _check_set(run, files)
    if originals is not None:
        patterns = PatternSet(originals)
        totals = scan_all(findings, files.everything(),
                          {p: files.rel(p) for p in files.everything()}, patterns)
        report.originals = OriginalsScan(len(patterns.originals), len(patterns.by_bytes),
                                         patterns.too_short, totals.files, totals.bytes,
                                         totals.leaks)
    if ocr:
        ocr_started = time.monotonic()
        report.ocr = run_ocr(findings, run.ocr_jobs, originals, version)
        report.ocr.seconds = time.monotonic() - ocr_started
    report.elapsed = time.monotonic() - started
    return report


def _check_set(run: _Run, files: OutputFiles) -> None:
    findings = run.findings
    if not files.dicom:
        findings.error(Check.FILE, "", "", "no DICOM files found: nothing was verified")
    if files.incomplete:
        findings.error(Check.FILE, "", "", "the folder still carries .tce-incomplete: the run"
                       " that wrote it did not finish; de-identify again into a new folder")
    for path in files.unchecked:
        findings.warning(Check.FILE, files.rel(path), "",
                         "not a DICOM file: not tag-checked (only read by --originals)")
    run.refs.resolve(findings)
    policy = run.policy or run.set_policy()
    remap = True
    root = "2.25"
    if policy is not None:
        remap = compile_plan(policy).basic and Option.RETAIN_UIDS not in policy.options
        root = policy.parameters.uid_root
    for dicomdir in files.dicomdirs:
        folder = dicomdir.parent
        deeper = [d.parent for d in files.dicomdirs if d.parent != folder
                  and folder in d.parent.parents]
        below = [p for p in files.dicom if folder in p.parents
                 and not any(other in p.parents for other in deeper)]
        DicomdirCheck(findings, dicomdir, files.rel(dicomdir), run.summaries, remap, root,
                      files.rel).run(below)


def _check_file_meta(findings: Findings, rel: str, ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    encodings = encodings_of(ds)
    for meta_tag, tag, what in ((0x00020003, 0x00080018, "SOP Instance UID"),
                                (0x00020002, 0x00080016, "SOP Class UID")):
        elem = meta.get(meta_tag)
        stored = str(elem.value if elem is not None else "").strip("\x00 ")
        values = raw_strings(ds.get_item(tag), encodings)
        if values and stored != values[0].strip("\x00 "):
            findings.error(Check.FILE_META, rel, f"(file meta) {keyword_or_tag(meta_tag)}",
                           f"differs from the dataset's {what}")
    for tag in meta.keys():  # noqa: SIM118
        if int(tag) in _CORE_META:
            continue
        name = f"(file meta) {keyword_or_tag(int(tag))}"
        if int(tag) in _PRIVATE_META:
            findings.error(Check.FILE_META, rel, name,
                           "private information in the File Meta Information")
        else:
            findings.warning(Check.FILE_META, rel, name,
                             "not written by the engine (it names a sending system)")
