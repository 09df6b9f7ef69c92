"""The verification report: a human summary for the terminal and the same facts as JSON.

The summary lists every ERROR (up to :data:`MAX_LISTED`, then a count) and groups WARNINGs by
check and message with a few example files, because a set of thousands of screen captures
yields thousands of identical "review the pixels" warnings. The JSON lists everything. Neither
holds a value from the files (see :mod:`appliance.verify.findings`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, TextIO

from appliance.verify.findings import Finding, Findings
from appliance.verify.ocr import OcrTotals
from policies.model import Policy

MAX_LISTED = 200
EXAMPLES = 3


@dataclass
class PolicyUse:
    """A policy files were checked against, how it was chosen, and for how many files."""

    policy: Policy
    how: str  # "--policy" or "De-identification Method"
    files: int = 0


@dataclass
class OriginalsScan:
    originals: int
    patterns: int
    too_short: int
    files: int = 0
    bytes: int = 0
    leaks: int = 0


@dataclass
class Report:
    root: str
    findings: Findings
    policies: dict[str, PolicyUse] = field(default_factory=dict)
    dicom_files: int = 0
    dicomdirs: int = 0
    other_files: int = 0
    originals: OriginalsScan | None = None
    ocr: OcrTotals | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings.errors

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        scan = self.originals
        return {
            "root": self.root,
            "result": "passed" if self.ok else "failed",
            "policies": [{"id": use.policy.id, "version": use.policy.version,
                          "sha256": use.policy.digest, "chosen_by": use.how,
                          "files": use.files} for use in self.policies.values()],
            "files": {"dicom": self.dicom_files, "dicomdir": self.dicomdirs,
                      "other": self.other_files},
            "counts": {"errors": len(self.findings.errors),
                       "warnings": len(self.findings.warnings)},
            "originals": None if scan is None else {
                "originals": scan.originals, "patterns": scan.patterns,
                "forms_too_short": scan.too_short, "files": scan.files, "bytes": scan.bytes,
                "leaks": scan.leaks},
            "ocr": None if self.ocr is None else {
                "tesseract": self.ocr.version, "images": self.ocr.images,
                "images_with_text": self.ocr.with_text, "words": self.ocr.words,
                "not_decodable": self.ocr.undecodable,
                "seconds": round(self.ocr.seconds, 3)},
            "elapsed_seconds": round(self.elapsed, 3),
            "findings": [f.to_json() for f in self.findings.items],
        }

    def print_summary(self, out: TextIO) -> None:
        errors, warnings = self.findings.errors, self.findings.warnings
        lines = [f"verify: {self.root}"]
        for use in self.policies.values():
            p = use.policy
            lines.append(f"  policy         {p.id} v{p.version} (sha256 {p.digest[:12]}),"
                         f" from {use.how}, {use.files} files")
        lines.append(f"  files          {self.dicom_files} DICOM, {self.dicomdirs} DICOMDIR,"
                     f" {self.other_files} other")
        scan = self.originals
        if scan is not None:
            short = f", {scan.too_short} forms under 5 characters not searched" \
                if scan.too_short else ""
            lines.append(f"  originals      {scan.originals} sealed originals as"
                         f" {scan.patterns} byte patterns{short}; {scan.files} files,"
                         f" {scan.bytes / 1e6:.1f} MB scanned: {scan.leaks} found")
        ocr = self.ocr
        if ocr is not None:
            failed = f", {ocr.undecodable} not decodable" if ocr.undecodable else ""
            lines.append(f"  ocr            Tesseract {ocr.version}: {ocr.images} images (first"
                         f" frame) in {ocr.seconds:.2f} s, {ocr.with_text} with text"
                         f" ({ocr.words} words){failed}")
        lines.append(f"  errors         {len(errors)}")
        lines.append(f"  warnings       {len(warnings)} (for review)")
        lines.append(f"  elapsed        {self.elapsed:.2f} s")
        if errors:
            lines.append("ERRORS")
            lines += [_line(f) for f in errors[:MAX_LISTED]]
            if len(errors) > MAX_LISTED:
                lines.append(f"  ... and {len(errors) - MAX_LISTED} more (use --json)")
        if warnings:
            lines.append("WARNINGS (for review)")
            lines += _grouped(warnings)
        verdict = ("PASSED" + (f" with {len(warnings)} warnings for review" if warnings else "")
                   if self.ok else f"FAILED: {len(errors)} errors")
        lines.append(f"result: {verdict}")
        print("\n".join(lines), file=out)


def _line(finding: Finding) -> str:
    where = f"{finding.file} {finding.path}".strip() or "(the folder)"
    return f"  [{finding.check.value}] {where}: {finding.message}"


def _grouped(findings: list[Finding]) -> list[str]:
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.check.value, finding.path, finding.message)].append(finding)
    lines = []
    for (check, path, message), members in groups.items():
        if len(members) == 1:
            lines.append(_line(members[0]))
            continue
        files = ", ".join(m.file for m in members[:EXAMPLES])
        more = f" and {len(members) - EXAMPLES} more" if len(members) > EXAMPLES else ""
        lines.append(f"  [{check}] {len(members)} files ({files}{more}) {path}: {message}")
    return lines
