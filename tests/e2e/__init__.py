"""End-to-end tests: the whole appliance as separate processes, the way three sites run it.

dcmtk ``storescu`` (a modality) → stage 1 (the hospital, its own key ring) → a PDI media folder
(the USB stick) → ``tce stage2 import``, ``approve``, ``export`` (the research site, another key
ring) → the Receiver (a third folder) or a real Orthanc server. Every node is a ``tce``
subprocess with its own ``TCE_CONFIG``; the test process only reads what the nodes left behind
(files, SQLite databases, logs, Orthanc's REST API).

The stage-1 half runs once per session (``conftest.stage1_media``); every test treats that
medium as read-only and copies it before damaging it.

Both stages remap every UID, so received instances are matched to the ORIGINAL sample files
through the structure: Study Time (kept by both policies; only dates move), Series Number and
Instance Number identify each of the 22 sample instances uniquely.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import yaml
from pydicom.dataset import Dataset
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.pool import NullPool

from appliance.models import Job, JobInstance
from appliance.settings import Settings, load
from appliance.synthetic import original_uids, planted_phi, sample_patients

TCE = Path(sys.executable).parent / "tce"
POLICY = "research-age-band-5y"
BAND_YEARS, AGE_CAP = 5, 90  # what research-age-band-5y promises: 5-year bands, 90+ as 090Y
MAX_SHIFT_DAYS = 365
SEED = 0

Key = tuple[str, int, int]  # (StudyTime, SeriesNumber, InstanceNumber)


# --- stage 2 as a folder made by ``tce init --role stage2`` ----------------------------------


class Stage2Dir:
    """A stage-2 node folder with its own key ring; every command is a ``tce`` subprocess."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "tce.yaml"
        done = subprocess.run([str(TCE), "init", str(root), "--role", "stage2"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self._engine: Engine | None = None

    def configure(self, **stage2: Any) -> None:
        """Change ``stage2.*`` settings in tce.yaml (each command reads them when it starts)."""
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        data["stage2"].update(stage2)
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")

    @property
    def settings(self) -> Settings:
        return load(self.config, environ={})

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TCE_DATABASE_URL"}
        env["TCE_CONFIG"] = str(self.config)
        return env

    def tce(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TCE), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    def import_media(self, media: Path) -> subprocess.CompletedProcess[str]:
        return self.tce("stage2", "import", str(media))

    def approve_all(self, policy: str = POLICY) -> subprocess.CompletedProcess[str]:
        return self.tce("stage2", "approve", "--all-pending", "--policy", policy,
                        "--approver", "test")

    def export(self, to: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.tce("stage2", "export", *(["--to", to] if to else []))

    # -- what the node left in its database ----------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(str(self.settings.database_url), poolclass=NullPool)
        return self._engine

    def jobs(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Job.__table__).order_by(Job.id)))

    def job_instances(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(JobInstance.__table__).order_by(JobInstance.id)))

    def store_files(self) -> list[Path]:
        return sorted(p for p in self.settings.stage2.store_dir.rglob("*") if p.is_file())

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class Stage2Factory:
    """Makes stage-2 node folders; disposes of their database engines at teardown."""

    def __init__(self, make_dir: Callable[[str], Path]) -> None:
        self.make_dir = make_dir
        self.dirs: list[Stage2Dir] = []

    def folder(self, name: str = "research", **stage2: object) -> Stage2Dir:
        node = Stage2Dir(self.make_dir(name))
        if stage2:
            node.configure(**stage2)
        self.dirs.append(node)
        return node

    def close(self) -> None:
        for node in self.dirs:
            node.dispose()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """Assert a ``tce`` command succeeded; its stdout."""
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n" \
                                 f"{done.stderr}"
    return done.stdout


def delivered(done: subprocess.CompletedProcess[str]) -> str:
    """Assert an export sent everything research-age-band-5y lets through; its output.

    Only the instance flagged with burned-in annotation is refused (the policy requests Clean
    Pixel Data, which is not performed), so its study's job ends FAILED with that one instance
    and the command exits 1; every other instance is sent.
    """
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "(1 refused by policy: BurnedInAnnotation is YES" in output, output
    assert ("held for pixel cleaning or manual review); the rest was sent" in output), output
    return output


def peer(ae_title: str, port: int) -> str:
    """The ``--to`` argument of ``tce stage2 export``."""
    return f"{ae_title}@127.0.0.1:{port}"


# --- stage 1's output, shared by the session ---------------------------------------------------


@dataclass(frozen=True)
class Stage1Media:
    """What the hospital produced: the sample it sent and the PDI medium stage 1 wrote."""

    media: Path
    sample: Path  # the folder storescu sent (+sd +r)
    sample_files: tuple[Path, ...]  # the complete DICOM files storescu sent (the originals)
    storescu_output: str
    accepted: int  # instances stage 1 acknowledged and processed

    def originals(self) -> list[Dataset]:
        """The ORIGINAL sample files, read back as the modality sent them."""
        return read_files(self.sample_files)

    def media_files(self) -> list[Path]:
        return sorted(p for p in (self.media / "DICOM").rglob("*") if p.is_file())

    def stage1_datasets(self) -> list[Dataset]:
        """The stage-1 pseudonymized instances on the medium."""
        return read_files(self.media_files())


def read_files(paths: Iterable[Path]) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in paths]


# --- matching and expectations -----------------------------------------------------------------


def key(ds: Dataset) -> Key:
    return (str(ds.StudyTime), int(ds.SeriesNumber), int(ds.InstanceNumber))


def burned_in(ds: Dataset) -> bool:
    return str(ds.get("BurnedInAnnotation", "")).upper() == "YES"


def expected_at_receiver(originals: Iterable[Dataset]) -> list[Dataset]:
    """Originals the research policy sends on: Clean Pixel Data is requested but not performed,
    so instances flagged with burned-in annotation are held back in quarantine."""
    return [ds for ds in originals if not burned_in(ds)]


def match(originals: Iterable[Dataset], received: Iterable[Dataset]
          ) -> list[tuple[Dataset, Dataset]]:
    """(original, received) pairs by structure; fails on keys that are unknown or repeated."""
    by_key: dict[Key, Dataset] = {}
    for ds in originals:
        assert key(ds) not in by_key, f"the sample repeats {key(ds)}: cannot match by structure"
        by_key[key(ds)] = ds
    pairs, seen = [], set()
    for ds in received:
        k = key(ds)
        assert k in by_key, f"received instance {k} matches no original"
        assert k not in seen, f"received instance {k} arrived twice"
        seen.add(k)
        pairs.append((by_key[k], ds))
    return pairs


def parse_da(value: str) -> date:
    """The date of a DA value or of a DT value's date part."""
    return datetime.strptime(value[:8], "%Y%m%d").date()


def age_years(original: Dataset) -> int:
    """The patient's age at the study: Patient's Age, else from birth date and study date."""
    if original.get("PatientAge"):
        text = str(original.PatientAge)
        assert text.endswith("Y"), text
        return int(text[:3])
    born, seen = parse_da(original.PatientBirthDate), parse_da(original.StudyDate)
    return seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))


def age_band(years: int, width: int = BAND_YEARS, cap: int = AGE_CAP) -> str:
    """The AS value of the band: ``045Y`` for 45-49, ``090Y`` for every age at or over the cap."""
    return f"{cap if years >= cap else years - years % width:03d}Y"


def date_shifts(original: Dataset, received: Dataset) -> dict[str, int]:
    """Days each top-level DA/DT value moved ({keyword: days}); the time part must be kept."""
    shifts = {}
    for elem in original:
        if elem.VR not in ("DA", "DT") or not elem.value or elem.keyword == "PatientBirthDate":
            continue
        moved = received.get(elem.tag)
        if moved is None or not moved.value:
            continue
        before, after = str(elem.value), str(moved.value)
        if elem.VR == "DT":
            assert after[8:] == before[8:], f"{elem.keyword}: the time part changed"
        shifts[elem.keyword] = (parse_da(after) - parse_da(before)).days
    return shifts


def nested(ds: Dataset, keyword: str) -> Iterator[str]:
    """Values of ``keyword`` in the items of every sequence (any depth, not the top level)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                if keyword in item and item[keyword].value:
                    yield str(item[keyword].value)
                yield from nested(item, keyword)


# --- what must never reach the Receiver -----------------------------------------------------


def forbidden_values(stage1: Stage1Media) -> list[str]:
    """Planted identifiers, every original UID, and everything stage 1 issued that would link a
    received instance to the hospital's medium: its pseudonyms (PatientID, name code, accession
    number, study ID) and its UIDs."""
    values = list(planted_phi(sample_patients(SEED)))
    values += sorted(original_uids(stage1.originals()))
    pseudonymized = stage1.stage1_datasets()
    for ds in pseudonymized:
        for keyword in ("PatientID", "AccessionNumber", "StudyID"):
            if ds.get(keyword):
                values.append(str(ds[keyword].value))
        name = str(ds.get("PatientName", ""))
        values += [part for part in name.split("^") if part and part != "PSEUDO"]
    ours = {str(ds.file_meta.get("ImplementationClassUID", "")) for ds in pseudonymized}
    values += sorted(original_uids(pseudonymized) - ours)
    return list(dict.fromkeys(v for v in values if v))
