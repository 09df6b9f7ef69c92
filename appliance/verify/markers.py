"""Which policy produced a file, and whether its de-identification markers say so correctly.

The engine records every pass in De-identification Method (0012,0063) as
``tce <policy id> v<version> <first 12 hex digits of the digest>`` (see
:func:`policies.markers.method_text`), appending to what earlier passes wrote; so the last value
names the policy that produced the file, and the earlier ones the passes before it (stage 1
before stage 2). A built-in policy is recognised by id *and* digest; a policy file cannot be
found from its id, so ``--policy`` must name it.

Marker checks, for a policy with the Basic Profile (the engine writes no markers otherwise):

* Patient Identity Removed (0012,0062) is YES;
* De-identification Method holds this policy's method text;
* De-identification Method Code Sequence (0012,0064) claims every CID 7050 code this policy's
  pass claims (:func:`policies.markers.claimed_codes`), all in scheme DCM; when every pass in
  the method is recognised, it claims nothing more (in particular not Clean Pixel Data or Clean
  Recognizable Visual Features, which this release never performs);
* Longitudinal Temporal Information Modified (0028,0303) says at least what this pass did to
  dates (UNMODIFIED < MODIFIED < REMOVED), and exactly the strongest of the recognised passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

from appliance.verify.findings import Check, Findings
from policies.charset import encodings_of, raw_strings
from policies.loader import builtin_policy_names, load_builtin
from policies.markers import claimed_codes, method_text, temporal_marker
from policies.model import BASIC_PROFILE_CODE, OPTION_CODES, Policy

_METHOD = re.compile(r"^tce (\S+) v(\S+) ([0-9a-f]{12})$")
_TEMPORAL_ORDER = ("UNMODIFIED", "MODIFIED", "REMOVED")
_CID_7050 = frozenset({BASIC_PROFILE_CODE[0], *(code for code, _ in OPTION_CODES.values())})
_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEIDENTIFICATION_METHOD = 0x00120063
_DEIDENTIFICATION_METHOD_CODES = 0x00120064
_TEMPORAL_MODIFIED = 0x00280303


def method_texts(ds: Dataset) -> list[str]:
    """The values of De-identification Method, oldest pass first."""
    return [v.strip() for v in raw_strings(ds.get_item(_DEIDENTIFICATION_METHOD),
                                           encodings_of(ds), "LO") if v.strip()]


class PolicyCatalogue:
    """Built-in policies (and the one given with ``--policy``), found by their method text."""

    def __init__(self, extra: Iterable[Policy] = ()) -> None:
        self._by_text: dict[str, Policy] = {}
        for name in builtin_policy_names():
            self.add(load_builtin(name))
        for policy in extra:
            self.add(policy)

    def add(self, policy: Policy) -> None:
        self._by_text[method_text(policy)] = policy

    def recognise(self, text: str) -> Policy | None:
        return self._by_text.get(text.strip())


def describe_method(text: str) -> str:
    """A method text for an error message: policy id, version and digest prefix, no values."""
    match = _METHOD.match(text.strip())
    if match is None:
        return "a De-identification Method not written by tce"
    return f"policy '{match[1]}' v{match[2]} (sha256 {match[3]}…)"


def _codes(ds: Dataset) -> list[tuple[str, str]]:
    sequence = ds.get(_DEIDENTIFICATION_METHOD_CODES)
    if sequence is None or sequence.VR != "SQ":
        return []
    found = []
    for item in sequence.value:
        found.append((str(item.get("CodeValue", "")).strip(),
                      str(item.get("CodingSchemeDesignator", "")).strip()))
    return found


def check_markers(findings: Findings, file: str, ds: Dataset, policy: Policy,
                  catalogue: PolicyCatalogue) -> None:
    """Report markers that are missing or claim other than what the passes did."""
    if policy.base_profile != "ps315-basic":
        return
    encodings = encodings_of(ds)
    removed = raw_strings(ds.get_item(_PATIENT_IDENTITY_REMOVED), encodings, "CS")
    if [v.strip().upper() for v in removed] != ["YES"]:
        findings.error(Check.MARKER, file, "PatientIdentityRemoved",
                       "Patient Identity Removed is not YES")
    methods = method_texts(ds)
    own = method_text(policy)
    if own not in methods:
        named = f" (it names {describe_method(methods[-1])})" if methods else ""
        findings.error(Check.MARKER, file, "DeidentificationMethod",
                       f"De-identification Method does not name {describe_method(own)}{named}")
    passes = [catalogue.recognise(text) for text in methods]
    known = [p for p in passes if p is not None]
    all_known = bool(methods) and len(known) == len(methods)
    present = _codes(ds)
    values = {value for value, _scheme in present}
    for index, (value, scheme) in enumerate(present):
        if scheme != "DCM" or value not in _CID_7050:
            findings.error(Check.MARKER, file, f"DeidentificationMethodCodeSequence[{index}]",
                           "not a CID 7050 de-identification code (scheme DCM)")
    for value, meaning in claimed_codes(policy):
        if value not in values:
            findings.error(Check.MARKER, file, "DeidentificationMethodCodeSequence",
                           f"does not claim {value} ({meaning}), which this policy applies")
    if all_known:
        justified = {value for p in [*known, policy] for value, _ in claimed_codes(p)}
        for value in sorted(values - justified):
            findings.error(Check.MARKER, file, "DeidentificationMethodCodeSequence",
                           f"claims {value}, which no pass named in De-identification Method"
                           " performed")
    _check_temporal(findings, file, ds, encodings, policy, known if all_known else None)


def _check_temporal(findings: Findings, file: str, ds: Dataset, encodings: list[str],
                    policy: Policy, passes: list[Policy] | None) -> None:
    expected = temporal_marker(policy)
    if expected is None:
        return
    found = [v.strip().upper() for v in raw_strings(ds.get_item(_TEMPORAL_MODIFIED),
                                                     encodings, "CS")]
    value = found[0] if len(found) == 1 else ""
    path = "LongitudinalTemporalInformationModified"
    if value not in _TEMPORAL_ORDER:
        findings.error(Check.MARKER, file, path,
                       f"missing or not one of {', '.join(_TEMPORAL_ORDER)}")
        return
    if passes is not None:
        marks = [m for p in passes if (m := temporal_marker(p)) is not None] + [expected]
        expected = max(marks, key=_TEMPORAL_ORDER.index)
        if value != expected:
            findings.error(Check.MARKER, file, path,
                           f"says {value}, but the passes in De-identification Method leave"
                           f" dates {expected}")
    elif _TEMPORAL_ORDER.index(value) < _TEMPORAL_ORDER.index(expected):
        findings.error(Check.MARKER, file, path,
                       f"says {value}, but this policy leaves dates {expected}")
