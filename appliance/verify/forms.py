"""The form of values the engine writes: dummies, pseudonyms, hashes, dates and age bands.

An action that replaces a value (D, a pseudonym, a hash, a date shift or coarsening, an age
band) leaves a value of a known *form*. Verification cannot recompute keyed values without the
key, but it can tell a value of the right form from an original put back: an original Patient
ID is not ``PSN`` followed by ten Crockford base-32 characters, a real age of 47 is not a
5-year band, a real study date is not ``YYYY0101``. Where a form is shared by originals (a
shifted date is just a date), only the form is checked, and the README says so.

Each check is idempotence against the engine's own functions where one exists: a coarsened date
coarsens to itself, a banded age bands to itself. That keeps verification and the engine in
step when either changes.
"""

from __future__ import annotations

import re
from functools import lru_cache

from appliance.verify.findings import Check, Findings
from policies import actions
from policies.annex_e import CleanKind, PlannedAction
from policies.model import DateMode, Op, Parameters

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # policies.keying: Crockford base 32
CODE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UN"})
_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "PN", "CS", "AE"})
_DUMMY_WORDS = frozenset({actions.DUMMY_TEXT, "ANONYMOUS"})
# Identifier dummies are keyed codes of 12 characters; the Type 1 DICOMDIR keys the engine adds
# when a study has none are 12 (Patient ID) and 10 (Study ID) characters.
_DUMMY_CODE = re.compile(f"[{CODE_ALPHABET}]{{10,12}}")
_FIXED_DUMMIES = {
    "DA": actions.DUMMY_DATE, "TM": actions.DUMMY_TIME, "DT": actions.DUMMY_DATETIME,
    "IS": "0", "DS": "0", "AS": "000Y", "UR": actions.DUMMY_URI,
}
_AE_STAND_IN = re.compile(f"AE[{CODE_ALPHABET}]{{14}}")


@lru_cache(maxsize=256)
def code_form(prefix: str, length: int, vr: str) -> re.Pattern[str]:
    """``prefix`` + ``length`` code characters, cut to the VR's maximum as the engine cuts it."""
    limit = actions.MAX_LENGTH.get(vr, 10240)
    room = max(0, min(length, limit - len(prefix)))
    return re.compile(re.escape(prefix[:limit]) + f"[{CODE_ALPHABET}]{{{room}}}")


def is_dummy(vr: str, value: str) -> bool:
    """Whether ``value`` is a dummy :func:`policies.actions.dummy_value` writes for ``vr``."""
    if vr in _TEXT_VRS:
        return value in _DUMMY_WORDS or bool(_DUMMY_CODE.fullmatch(value))
    fixed = _FIXED_DUMMIES.get(vr)
    return fixed is None or value == fixed


def check_dummy(findings: Findings, file: str, path: str, vr: str, values: list[str],
                origin: str) -> None:
    if any(v and not is_dummy(vr, v) for v in values):
        findings.error(Check.DUMMY, file, path,
                       f"holds a value that is not a dummy although the policy replaces it with"
                       f" one (D, {origin})")


def date_mode_of(planned: PlannedAction, params: Parameters) -> DateMode:
    if planned.op is Op.DATE_SHIFT:
        return DateMode.SHIFT
    if planned.op is Op.DATE_COARSEN:
        return planned.rule.granularity or DateMode.YEAR
    return params.date_mode


def check_date(findings: Findings, file: str, path: str, vr: str, values: list[str],
               mode: DateMode) -> None:
    """Shifted dates can only be checked for being dates; coarsened ones for their form."""
    if vr not in ("DA", "DT"):
        return  # times are kept by whole-day shifts and by coarsening
    for value in values:
        if not value.strip():
            continue
        try:
            written = actions.modify_date(vr, value, mode, 0)
        except actions.UnparseableValue:
            findings.error(Check.DATE, file, path,
                           "not a valid date, so not one the policy wrote (it empties those)")
            return
        if mode is not DateMode.SHIFT and written != value.strip():
            unit = "year" if mode is DateMode.YEAR else "month"
            findings.error(Check.DATE, file, path,
                           f"date not reduced to its {unit} as the policy's {mode.value} mode"
                           " writes it")
            return


def check_age_band(findings: Findings, file: str, path: str, values: list[str],
                   planned: PlannedAction, params: Parameters) -> None:
    width = planned.rule.width or params.age_band_years
    cap = params.age_cap_years
    for value in values:
        try:
            banded = actions.band_age(value, width, cap)
        except actions.UnparseableValue:
            banded = None
        if banded != value.strip():
            over = f", {cap:03d}Y for {cap} and over" if cap is not None else ""
            findings.error(Check.AGE_BAND, file, path,
                           f"age outside the policy's {width}-year bands (lower bound as"
                           f" nnnY{over})")
            return


def check_value_form(findings: Findings, file: str, path: str, vr: str, values: list[str],
                     planned: PlannedAction, params: Parameters, *,
                     type1_key: bool = False) -> bool:
    """Check a value an override or dummy wrote; False if the action leaves no form to check
    (the caller then treats the value as kept or cleaned text).

    ``type1_key``: a top-level Patient ID or Study ID, which the engine fills with a keyed
    dummy when the original was empty (they are Type 1 DICOMDIR keys), whatever the action.
    """
    op, rule = planned.op, planned.rule
    if op in (Op.DUMMY, Op.UID) or (op in (Op.HASH, Op.PSEUDONYM) and vr not in CODE_VRS):
        check_dummy(findings, file, path, vr, values, planned.origin)
    elif op is Op.PSEUDONYM or op is Op.HASH:
        length = rule.length or params.pseudonym_length
        form = code_form(rule.prefix or "" if op is Op.PSEUDONYM else "", length, vr)
        if any(v and not form.fullmatch(v) and not (type1_key and _DUMMY_CODE.fullmatch(v))
               for v in values):
            what = f"'{rule.prefix or ''}' + {length} code characters" if op is Op.PSEUDONYM \
                else f"{length} code characters"
            findings.error(Check.FORM, file, path,
                           f"not a {op.value} of the policy's form ({what})")
    elif op is Op.REPLACE:
        if vr in _TEXT_VRS and "\\".join(values) not in (rule.value or "", ""):
            findings.error(Check.FORM, file, path,
                           "differs from the replacement value the policy sets")
    elif op is Op.AGE_BAND:
        check_age_band(findings, file, path, values, planned, params)
    elif op in (Op.DATE_SHIFT, Op.DATE_COARSEN) or (
            op is Op.CLEAN and (planned.clean is CleanKind.DATE or vr in ("DA", "DT", "TM"))):
        check_date(findings, file, path, vr, values, date_mode_of(planned, params))
    elif op is Op.CLEAN and planned.clean is CleanKind.DEVICE and vr == "AE":
        if any(v and not _AE_STAND_IN.fullmatch(v) for v in values):
            findings.error(Check.FORM, file, path,
                           "not a keyed AE title stand-in (AE + 14 code characters)")
    else:
        return False
    return True
