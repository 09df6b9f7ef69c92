"""What verification finds: one :class:`Finding` per problem, named by file and tag path.

Why a finding never carries a value: the report is meant to be passed around (attached to a
ticket, kept with an approval) by people who must not see PHI. A finding says *where* (the file
relative to the verified folder and the tag path inside it) and *what kind* of problem, never
the text it found. The one exception is the originals leak scan, and even there the original is
named by its kind, its pseudonym and a keyed hash prefix, not by its value.

Severity decides the exit status: any ERROR (a leak, a policy violation or an integrity error)
makes ``tce verify`` exit 1; WARNINGs are things a person should review (free text that looks
like a name, an image that commonly carries burned-in text) and do not fail the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Check(StrEnum):
    """Stable names of the checks, as they appear in the JSON report."""

    REMOVED = "removed"  # an attribute the policy removes (X) is present
    EMPTIED = "emptied"  # an attribute the policy empties (Z) holds a value
    DUMMY = "dummy"  # an attribute the policy replaces with a dummy (D) holds something else
    FORM = "form"  # a pseudonym, hash, replacement or device stand-in has the wrong form
    PRIVATE = "private"  # a private attribute the policy does not keep
    UID = "uid"  # a UID that should have been remapped, or an invalid UID
    REFERENCE = "reference"  # a reference that does not resolve inside the set
    MARKER = "marker"  # PS3.15 de-identification markers wrong or missing
    AGE_BAND = "age-band"  # an age (AS) outside the policy's bands
    DATE = "date"  # a date not in the form the policy writes
    PIXELS = "pixels"  # burned-in annotation although the policy requests Clean Pixel Data
    FREE_TEXT = "free-text"  # free text matching a name, date, phone, e-mail or ID pattern
    BURNED_IN = "burned-in"  # Burned In Annotation / Recognizable Visual Features is YES
    MODALITY = "review-modality"  # an image of a kind that commonly carries burned-in text
    FILE_META = "file-meta"  # File Meta Information that disagrees with the dataset
    DICOMDIR = "dicomdir"  # a DICOMDIR record or reference that does not match the files
    FILE = "file"  # an unreadable, duplicate, unchecked or incomplete file
    LEAK = "leak"  # an original identifier found in the output bytes (--originals)
    OCR = "ocr"  # text Tesseract read in the pixels, or pixels it could not be given (--ocr)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where it is and what it is, without the value that caused it."""

    severity: Severity
    check: Check
    file: str  # relative to the verified folder, POSIX separators
    path: str  # tag path inside the file, e.g. "RequestAttributesSequence[0].AccessionNumber"
    message: str

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity.value, "check": self.check.value, "file": self.file,
                "path": self.path, "message": self.message}


class Findings:
    """The findings of one verification run, appended to by every check."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._seen: set[Finding] = set()

    def error(self, check: Check, file: str, path: str, message: str) -> None:
        self.add(Finding(Severity.ERROR, check, file, path, message))

    def warning(self, check: Check, file: str, path: str, message: str) -> None:
        self.add(Finding(Severity.WARNING, check, file, path, message))

    def add(self, finding: Finding) -> None:
        if finding not in self._seen:  # the same problem met twice (e.g. one UID, two scans)
            self._seen.add(finding)
            self.items.append(finding)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.items if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.items if f.severity is Severity.WARNING]
