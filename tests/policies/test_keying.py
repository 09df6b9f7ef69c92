"""Keyed derivations (UIDs, codes, date shifts): the same in every process, only under a key."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydicom import config
from pydicom.valuerep import validate_value

from policies.keying import EngineKeys, code, keyed_uid, shift_days

ORIGINAL = "1.2.826.0.1.3680043.10.999.77.1.1.1"
REPO = Path(__file__).resolve().parents[2]


def test_uid_is_a_valid_uuid_derived_uid(keys: EngineKeys) -> None:
    new = keyed_uid(keys.uid, ORIGINAL)
    assert new.startswith("2.25.")
    assert len(new) <= 64
    validate_value("UI", new, config.RAISE)
    as_uuid = uuid.UUID(int=int(new.removeprefix("2.25.")))
    assert as_uuid.version == 8  # custom: no timestamp of the original survives
    assert as_uuid.variant == uuid.RFC_4122


def test_uid_depends_on_key_and_value(keys: EngineKeys, other_keys: EngineKeys) -> None:
    new = keyed_uid(keys.uid, ORIGINAL)
    assert new == keyed_uid(keys.uid, ORIGINAL)
    assert new != keyed_uid(other_keys.uid, ORIGINAL)
    assert new != keyed_uid(keys.uid, ORIGINAL + "0")
    assert ORIGINAL not in new


def test_uid_under_another_root_fits_64_characters(keys: EngineKeys) -> None:
    root = "1.2.826.0.1.3680043.10"
    new = keyed_uid(keys.uid, ORIGINAL, root)
    assert new.startswith(root + ".")
    assert len(new) <= 64
    validate_value("UI", new, config.RAISE)


def test_codes_are_valid_in_every_string_vr(keys: EngineKeys) -> None:
    value = code(keys.pseudonym, "PatientID", "MRN4417702", 16)
    assert len(value) == 16
    for vr in ("AE", "CS", "SH", "LO", "PN"):
        validate_value(vr, value, config.RAISE)
    assert value != code(keys.pseudonym, "AccessionNumber", "MRN4417702", 16)  # domains apart


def test_shift_is_never_zero_and_within_range(keys: EngineKeys) -> None:
    shifts = {shift_days(keys.date, f"patient-{n}", 30) for n in range(400)}
    assert 0 not in shifts
    assert min(shifts) >= -30 and max(shifts) <= 30
    assert any(s < 0 for s in shifts) and any(s > 0 for s in shifts)
    assert shift_days(keys.date, "p", 30) == shift_days(keys.date, "p", 30)


_CHILD = """
import json, sys
from policies.keying import EngineKeys, code, keyed_uid, shift_days
keys = EngineKeys.for_testing(sys.argv[1].encode())
print(json.dumps([keyed_uid(keys.uid, sys.argv[2]), code(keys.pseudonym, "PatientID", "MRN1", 10),
                  shift_days(keys.date, "MRN1", 365)]))
"""


def _in_child(seed: str) -> list[object]:
    out = subprocess.run([sys.executable, "-c", _CHILD, seed, ORIGINAL], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "random", "PATH": "/usr/bin:/bin"})
    result: list[object] = json.loads(out.stdout)
    return result


@pytest.mark.slow
def test_derivations_are_the_same_in_separate_processes() -> None:
    first, second = _in_child("site-a"), _in_child("site-a")
    assert first == second
    keys = EngineKeys.for_testing(b"site-a")
    assert first == [keyed_uid(keys.uid, ORIGINAL), code(keys.pseudonym, "PatientID", "MRN1", 10),
                     shift_days(keys.date, "MRN1", 365)]
    assert _in_child("site-b")[0] != first[0]
