"""appliance.fastwrite writes exactly the bytes pydicom's own writer would.

The product writes every de-identified instance with :func:`write_instance`, which copies untouched
elements as raw runs. The proof is the oddest corpus there is, every file pydicom ships (implicit
and big endian, deflated, private sequences, odd character sets), de-identified with ps315-basic
and written both ways: the files must be byte-identical, and read back. The synthetic sample set
adds nested sequences, private blocks and the character sets the engine re-encodes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.fastwrite import write_instance
from appliance.synthetic import make_sample_study_set
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import load_builtin
from policies.outcome import PolicyRefusal
from tests.policies.test_engine_corpus import _candidates, _read


def _deidentified() -> list[tuple[str, Dataset, bytes]]:
    """(name, de-identified dataset, pydicom's Part 10 encoding of it) for the corpus."""
    engine = Deidentifier(load_builtin("ps315-basic"), EngineKeys.for_testing())
    found = []
    synthetic: list[tuple[str, bytes | None]] = []  # nested, private, several charsets
    for index, ds in enumerate(make_sample_study_set(1)):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        synthetic.append((f"synthetic-{index}", buffer.getvalue()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs: list[tuple[str, bytes | None]] = [(str(p), None) for p in _candidates()]
        for path, data in inputs + synthetic:
            read = _read(Path(path)) if data is None else pydicom.dcmread(io.BytesIO(data))
            if read is None or "TransferSyntaxUID" not in getattr(read, "file_meta", Dataset()):
                continue
            ds = read
            try:
                engine.deidentify(ds)
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
            except PolicyRefusal:
                continue
            except Exception:  # pydicom cannot write it either: nothing to compare
                continue
            found.append((Path(path).name, ds, buffer.getvalue()))
    return found


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, Dataset, bytes]]:
    found = _deidentified()
    if len(found) < 50:
        pytest.skip("pydicom's test files are not installed")
    return found


def test_output_is_byte_identical_to_pydicom(corpus: list[tuple[str, Dataset, bytes]]) -> None:
    differ, unreadable = [], []
    syntaxes = set()
    for name, ds, expected in corpus:
        buffer = io.BytesIO()
        write_instance(ds, buffer)
        written = buffer.getvalue()
        syntaxes.add(ds.file_meta.TransferSyntaxUID.name)
        if written != expected:
            differ.append(name)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = pydicom.dcmread(io.BytesIO(written))
                assert back.PatientIdentityRemoved == "YES"
        except Exception as exc:
            unreadable.append(f"{name}: {type(exc).__name__}")
    assert not differ and not unreadable, (differ, unreadable)
    assert len(corpus) > 150
    assert {"Deflated Explicit VR Little Endian", "Explicit VR Big Endian",
            "Implicit VR Little Endian", "Explicit VR Little Endian"} <= syntaxes
