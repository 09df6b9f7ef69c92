"""Every DICOM file pydicom ships (its test files and the pydicom-data package) goes through every
built-in policy without an unhandled exception, and the output can be written and read back.

These files are the odd ones: implicit and big endian, deflated, UN everywhere, broken lengths,
private sequences, DICOMDIRs, overlays, odd character sets. A PolicyRefusal is an answer, not a
failure. The files are read once per policy; huge pixel data is deferred, files over 20 MB are
skipped. pydicom.data.get_testdata_files() is not used: it would try the network.

And ps315-basic output is no less valid than its input, as dciodvfy (dicom3tools) judges it:
for representative objects (CT, MR, SC, enhanced CT, SR, KOS, GSPS from the synthetic set, and
pydicom's CT_small and MR_small) the dciodvfy errors after de-identification must be a subset of
the errors the input already had, compared without their values.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import builtin_policy_names, load_builtin
from policies.model import Policy
from policies.outcome import PolicyRefusal

MAX_SIZE = 20 * 1024 * 1024


def _roots() -> list[Path]:
    roots = [Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"]
    spec = importlib.util.find_spec("data_store")
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(location) / "data" for location in spec.submodule_search_locations]
    return [root for root in roots if root.is_dir()]


def _candidates() -> list[Path]:
    files = []
    for root in _roots():
        for path in sorted(root.rglob("*")):
            if (path.is_file() and (path.suffix.lower() == ".dcm" or not path.suffix)
                    and path.stat().st_size <= MAX_SIZE):
                files.append(path)
    return files


def _read(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size="1 MB")
    except Exception:
        return None  # not DICOM, or beyond what pydicom reads
    return ds if len(ds) else None


def _writes(ds: Dataset) -> bytes | None:
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buffer, enforce_file_format=False)
    except Exception:
        return None
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = [path for path in _candidates() if _read(path) is not None]
    if len(files) < 50:
        pytest.skip("pydicom's test files are not installed")
    return files


def test_the_corpus_holds_both_collections(corpus: list[Path]) -> None:
    assert any("data_store" in str(path) for path in corpus) or len(_roots()) == 1
    assert len(corpus) > 100


@pytest.mark.parametrize("policy_name", builtin_policy_names())
def test_every_file_through_every_policy(corpus: list[Path], policy_name: str) -> None:
    engine = Deidentifier(load_builtin(policy_name), EngineKeys.for_testing())
    failures: list[str] = []
    refused = processed = 0
    for path in corpus:
        ds = _read(path)
        assert ds is not None
        writable_before = _writes(_read(path) or Dataset()) is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engine.deidentify(ds)
        except PolicyRefusal:
            refused += 1
            continue
        except Exception as exc:  # the point of the test: report every file, then fail
            failures.append(f"{path.name}: deidentify: {type(exc).__name__}: {exc}"[:300])
            continue
        processed += 1
        data = _writes(ds)
        if data is None:
            if writable_before:
                failures.append(f"{path.name}: output cannot be written")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = pydicom.dcmread(io.BytesIO(data), force=True)
                assert back.get("PatientIdentityRemoved") == "YES"
        except Exception as exc:
            failures.append(f"{path.name}: output unreadable: {type(exc).__name__}: {exc}"[:300])
    assert not failures, "\n".join(failures)
    assert processed > 100 and refused < processed


# -- dciodvfy ------------------------------------------------------------------------------

DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
needs_dciodvfy = pytest.mark.skipif(not Path(DCIODVFY).exists(),
                                    reason="dciodvfy not installed")

_VALUES = re.compile(r"<[^<>]*>|\"[^\"]*\"|'[^']*'|\b\d+(\.\d+)*\b")


def _errors(path: Path) -> set[str]:
    done = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True,
                          timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return {_normalise(line) for line in lines if line.startswith("Error")}


def _normalise(line: str) -> str:
    # Keep attribute paths (they say where), drop values, counts and indexes.
    path = re.findall(r"</[^>]*>", line)
    rest = _VALUES.sub("#", line)
    return " ".join([*path, rest])


def _objects(sample_set: Callable[[], list[Dataset]], pydicom_test_files: Path) -> list[Dataset]:
    picked: dict[str, Dataset] = {}
    try:
        for ds in sample_set():
            picked.setdefault(f"{ds.SOPClassUID}-{ds.get('SpecificCharacterSet')}", ds)
    except pytest.skip.Exception:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("CT_small.dcm", "MR_small.dcm"):
            path = pydicom_test_files / name
            if path.exists():
                picked[name] = pydicom.dcmread(path)
    return list(picked.values())


@needs_dciodvfy
def test_basic_profile_adds_no_dciodvfy_errors(builtin: dict[str, Policy], keys: EngineKeys,
                                              sample_set: Callable[[], list[Dataset]],
                                              pydicom_test_files: Path, tmp_path: Path) -> None:
    objects = _objects(sample_set, pydicom_test_files)
    assert len(objects) >= 5
    engine = Deidentifier(builtin["ps315-basic"], keys)
    new_errors: dict[str, set[str]] = {}
    for index, ds in enumerate(objects):
        before, after = tmp_path / f"in{index}.dcm", tmp_path / f"out{index}.dcm"
        ds.save_as(before, enforce_file_format=True)
        name = str(ds.SOPClassUID.name)
        engine.deidentify(ds)
        ds.save_as(after, enforce_file_format=True)
        added = _errors(after) - _errors(before)
        if added:
            new_errors[f"{index} {name}"] = added
    assert not new_errors, new_errors
