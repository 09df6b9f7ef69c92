"""``tce stage2 preview``: what a policy would do to one study, shown before anyone approves it.

For a sample instance of each series the policy runs on an in-memory copy (the stored file is
only read) and the preview lists every attribute that would change with its value before and
after, the resulting age band and the date shift in days. Then come the warnings a reviewer must
weigh, because the engine cannot decide them alone: free text the output still holds that looks
like a name, a date or another identifier (found with :class:`policies.textclean.TextCleaner`,
all dates counted); person names the policy keeps; private attributes it keeps; and burned-in
annotation flags of *every* instance (a flag on one screen capture is easy to miss in a sample).

The values shown are stage-1 pseudonymized, yet they still describe a person (birth dates, ages,
descriptors), so they go to the terminal only: this module returns text and never logs.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from appliance.diff import diff_rows
from appliance.models import Job
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.model import Op, Option, Policy
from policies.outcome import PolicyRefusal
from policies.private import private_creator_of
from policies.textclean import TextCleaner, identifiers_from
from stage2_export_manager.screening import looks_pseudonymous

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
# Kinds of TextCleaner hits worth a warning; "id-pattern" also fires on measurement numbers.
WARN_KINDS = frozenset({"name", "id", "date", "other", "email", "phone"})
# Coded values are controlled terminology, not free text.
CODE_KEYWORDS = frozenset({"CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator",
                           "CodingSchemeVersion", "ContextIdentifier", "MappingResource"})
_PATIENT_AGE = 0x00101010
_FLAGS = (("BurnedInAnnotation", Option.CLEAN_PIXEL_DATA, "Clean Pixel Data"),
          ("RecognizableVisualFeatures", Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES,
           "Clean Recognizable Visual Features"))
# Names written the DICOM way ("Doe^John") or with a title ("Dr. Welby"), in free text.
_NAME_LIKE = re.compile(r"\b[A-Z][A-Za-z'-]+\^[A-Z][A-Za-z'-]+|"
                        r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+[A-Z][a-z]+")
SNIPPET = 60
SAMPLE_TRIES = 5  # instances tried per series when the policy refuses the first ones


@dataclass
class SeriesPreview:
    series_uid: str
    modality: str
    instances: int
    sample_sop: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    age: str | None = None
    date_shift_days: int | None = None
    refused: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class StudyPreview:
    job_id: int
    study_uid: str
    patient: str
    policy: Policy
    series: list[SeriesPreview] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _series_uid(store_path: str) -> str:
    """The store lays files out as <study>/<series>/<sop>.dcm (see the importer)."""
    return Path(store_path).parent.name


def _age_width(policy: Policy) -> int:
    for override in policy.overrides:
        if override.target.tag == _PATIENT_AGE and override.rule.op is Op.AGE_BAND:
            return override.rule.width or policy.parameters.age_band_years
    return policy.parameters.age_band_years


def _age(before: Dataset, after: Dataset, policy: Policy) -> str | None:
    old, new = str(before.get("PatientAge", "") or ""), str(after.get("PatientAge", "") or "")
    if not old and not new:
        return None
    if not new:
        return f"{old or '(none)'} -> removed"
    text = f"{old or '(none, computed)'} -> {new}"
    if new == old:
        return text + " (kept)"
    if new.endswith("Y") and new[:-1].isdigit():
        low, cap = int(new[:-1]), policy.parameters.age_cap_years
        if cap is not None and low >= cap:
            return text + f" ({cap} years or older)"
        return text + f" ({low}-{low + _age_width(policy) - 1} years)"
    return text


def _value_text(value: object) -> str:
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _snippet(text: str, start: int = 0, end: int | None = None) -> str:
    end = len(text) if end is None else end
    lo, hi = max(0, start - 15), min(len(text), end + 15)
    shown = text[lo:hi].replace("\n", " ").replace("\r", " ")
    if len(shown) > SNIPPET:
        shown = shown[:SNIPPET - 1] + "…"
    return ("…" if lo else "") + shown + ("…" if hi < len(text) else "")


def _walk(ds: Dataset, prefix: str, texts: dict[str, tuple[str, str]],
          private: Counter[tuple[str, str]]) -> None:
    """Text values by attribute path, and private attributes counted by (group, creator)."""
    for elem in ds:
        tag = int(elem.tag)
        path = prefix + (elem.keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                _walk(item, f"{path}[{i}].", texts, private)
            continue
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2 == 1 and element >= 0x1000:
            private[(f"{group:04X}", private_creator_of(ds, tag) or "(no creator)")] += 1
        elif elem.VR in TEXT_VRS or elem.VR == "PN":
            text = _value_text(elem.value).strip()
            if text and elem.keyword not in CODE_KEYWORDS:
                texts[path] = (elem.VR, text)


def _kept_text_warnings(before: Dataset, after: Dataset, cleaner: TextCleaner,
                        private: Counter[tuple[str, str]]) -> list[str]:
    """Warnings about text the policy leaves exactly as it was and that looks identifying."""
    old: dict[str, tuple[str, str]] = {}
    new: dict[str, tuple[str, str]] = {}
    _walk(before, "", old, Counter())
    _walk(after, "", new, private)
    warnings = []
    for path, (vr, text) in new.items():
        if old.get(path) != (vr, text):
            continue  # written or cleaned by the policy, not kept
        if vr == "PN":
            if not looks_pseudonymous(text, ""):
                warnings.append(f"person name kept: {path} = {_snippet(text)}")
            continue
        hits = [(s, e, kind) for s, e, kind in cleaner.find(text) if kind in WARN_KINDS]
        hits += [(m.start(), m.end(), "name") for m in _NAME_LIKE.finditer(text)]
        for kind in sorted({kind for _, _, kind in hits}):
            s, e, _ = next(h for h in hits if h[2] == kind)
            warnings.append(f"kept free text looks like a {kind}: {path} = {_snippet(text, s, e)}")
    return warnings


def _preview_series(engine: Deidentifier, policy: Policy, paths: list[str],
                    series_uid: str) -> SeriesPreview:
    """Preview the first instance of the series that the policy does not refuse."""
    result = SeriesPreview(series_uid, "-", len(paths), "")
    for path in paths[:SAMPLE_TRIES]:
        ds = dcmread(path)
        result.modality = str(ds.get("Modality", "") or "-")
        result.sample_sop = str(ds.SOPInstanceUID)
        before = copy.deepcopy(ds)
        try:
            outcome = engine.deidentify(ds)
        except PolicyRefusal as exc:
            result.refused = str(exc)
            continue
        result.refused = None
        result.rows = diff_rows(before, ds, outcome)
        result.age = _age(before, ds, policy)
        result.date_shift_days = outcome.date_shift_days
        result.warnings += outcome.warnings
        cleaner = TextCleaner(identifiers_from(before), remove_all_dates=True)
        private: Counter[tuple[str, str]] = Counter()
        result.warnings += _kept_text_warnings(before, ds, cleaner, private)
        for (group, creator), n in sorted(private.items()):
            result.warnings.append(f"private attributes kept: {n} in block \"{creator}\""
                                   f" ({group})")
        break
    return result


def _flag_warnings(job: Job, policy: Policy) -> list[str]:
    flagged: dict[str, Counter[str]] = {keyword: Counter() for keyword, _, _ in _FLAGS}
    for instance in job.instances:
        try:
            ds = dcmread(instance.store_path, stop_before_pixels=True,
                         specific_tags=[keyword for keyword, _, _ in _FLAGS])
        except Exception:  # a damaged stored file: the export will report it
            continue
        for keyword, _, _ in _FLAGS:
            if str(ds.get(keyword, "") or "").strip().upper() == "YES":
                flagged[keyword][_series_uid(instance.store_path)] += 1
    warnings = []
    for keyword, option, label in _FLAGS:
        for series, n in sorted(flagged[keyword].items()):
            consequence = (f"the policy requests {label}, which this release cannot perform:"
                           " they would be held in quarantine, not sent"
                           if option in policy.options else
                           f"the policy does not request {label}: they would be sent as they are")
            warnings.append(f"{keyword} YES in {n} instance(s) of series {series}; {consequence}")
    return warnings


def preview_job(job: Job, policy: Policy, keys: EngineKeys) -> StudyPreview:
    """Run ``policy`` on a copy of one sample instance per series of ``job``; see module doc."""
    engine = Deidentifier(policy, keys)
    preview = StudyPreview(job.id, job.study_instance_uid, job.patient_pseudonym or "-", policy)
    by_series: dict[str, list[str]] = {}
    for instance in job.instances:
        by_series.setdefault(_series_uid(instance.store_path), []).append(instance.store_path)
    for series_uid, paths in by_series.items():
        try:
            preview.series.append(_preview_series(engine, policy, paths, series_uid))
        except OSError as exc:
            preview.warnings.append(f"series {series_uid}: sample cannot be read"
                                    f" ({exc.strerror or exc})")
    preview.warnings += _flag_warnings(job, policy)
    return preview


def format_preview(preview: StudyPreview) -> str:
    policy = preview.policy
    lines = [f"job {preview.job_id}  study {preview.study_uid}  patient {preview.patient}",
             f"policy {policy.id} v{policy.version} (sha256 {policy.digest[:12]},"
             f" {policy.source})"]
    for series in preview.series:
        lines += ["", f"series {series.series_uid}  {series.modality}  {series.instances}"
                      f" instance(s), sample {series.sample_sop}"]
        if series.refused:
            lines.append(f"  refused by the policy (all {min(series.instances, SAMPLE_TRIES)}"
                         f" instances tried): {series.refused}")
            continue
        shift = series.date_shift_days
        lines.append(f"  age          {series.age or '(no PatientAge)'}")
        lines.append("  date shift   " + (f"{shift:+d} days" if shift is not None else
                                          "none (dates are not shifted by this policy)"))
        lines.append(f"  changes      {len(series.rows)} attributes")
        for path, code, old, new in series.rows:
            lines.append(f"    {code:<9} {path}\n              {old}  ->  {new}")
        if series.warnings:
            lines.append("  warnings")
            lines += [f"    ! {w}" for w in series.warnings]
    if preview.warnings:
        lines += ["", "study warnings"] + [f"  ! {w}" for w in preview.warnings]
    lines += ["", "(values are shown on this terminal only; they are not logged or recorded)"]
    return "\n".join(lines)
