"""Group instances into patients/studies/series and split them into volumes.

Why a plan before any byte is written: the DICOMDIR hierarchy and the volume boundaries must
be known up front so that a study is never split across volumes unless it cannot fit on one
(then it is split by series, and a series that still does not fit by instances), and so that
the README of each volume can say so. Sizes are counted in 2048-byte blocks, as ISO 9660 stores
files, plus an allowance per instance for its DICOMDIR record and INDEX.HTM line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from pdi.records import Records

BLOCK = 2048
PER_INSTANCE_OVERHEAD = 1024
VOLUME_OVERHEAD = 32 * 1024  # DICOMDIR root, README.TXT, INDEX.HTM head


@dataclass
class Instance:
    path: Path
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    records: Records
    rank: tuple[float, str] = (0.0, "")

    @property
    def cost(self) -> int:
        return math.ceil(self.size / BLOCK) * BLOCK + PER_INSTANCE_OVERHEAD


@dataclass
class Series:
    uid: str
    record: Dataset
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Study:
    uid: str
    record: Dataset
    series: list[Series] = field(default_factory=list)


@dataclass
class Patient:
    patient_id: str
    record: Dataset
    studies: list[Study] = field(default_factory=list)


class PlanError(ValueError):
    """Inconsistent input (the message says which identifiers disagree, without values)."""


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return math.inf


def _study_order(study: Study) -> tuple[str, str, str]:
    rec = study.record
    return (str(rec.StudyDate), str(rec.StudyTime), study.uid)


def organize(instances: Iterable[Instance], *, assign_numbers: bool = True) -> list[Patient]:
    """Build the sorted PATIENT → STUDY → SERIES → instance tree.

    The first instance of each group (in input order) supplies the group's record, as pydicom's
    FileSet does. With `assign_numbers`, empty Series Number / Instance Number keys get their
    ordinal position (done once, before volumes are split, so numbers agree across volumes).
    """
    patients: dict[str, Patient] = {}
    studies: dict[str, tuple[str, Study]] = {}
    series_of: dict[str, tuple[str, Series]] = {}
    for inst in instances:
        recs = inst.records
        pid = str(recs.patient.PatientID)
        study_uid = str(recs.study.StudyInstanceUID)
        series_uid = str(recs.series.SeriesInstanceUID)
        patient = patients.setdefault(pid, Patient(pid, recs.patient))
        if study_uid in studies:
            owner, study = studies[study_uid]
            if owner != pid:
                raise PlanError("one study has instances with different Patient IDs")
        else:
            study = Study(study_uid, recs.study)
            studies[study_uid] = (pid, study)
            patient.studies.append(study)
        if series_uid in series_of:
            owner, series = series_of[series_uid]
            if owner != study_uid:
                raise PlanError("one series has instances in different studies")
        else:
            series = Series(series_uid, recs.series)
            series_of[series_uid] = (study_uid, series)
            study.series.append(series)
        series.instances.append(inst)

    for patient in patients.values():
        patient.studies.sort(key=_study_order)
        for study in patient.studies:
            study.series.sort(key=lambda s: (_number(s.record.SeriesNumber), s.uid))
            for position, series in enumerate(study.series, 1):
                if assign_numbers and series.record.SeriesNumber is None:
                    series.record.SeriesNumber = str(position)
                if assign_numbers:
                    series.instances.sort(key=lambda i: (
                        _number(i.records.leaf.InstanceNumber), i.sop_instance_uid))
                    for order, inst in enumerate(series.instances, 1):
                        inst.rank = (float(order), inst.sop_instance_uid)
                        if inst.records.leaf.InstanceNumber is None:
                            inst.records.leaf.InstanceNumber = str(order)
                else:
                    series.instances.sort(key=lambda i: i.rank)
    return sorted(patients.values(), key=lambda p: p.patient_id)


@dataclass
class Unit:
    """Instances that must stay on one volume; `split` names what was split to make it."""

    instances: list[Instance]
    study_uid: str
    split: str = ""  # "", "series" or "instances"

    @property
    def cost(self) -> int:
        return sum(inst.cost for inst in self.instances)


def units(patients: Sequence[Patient], capacity: int) -> list[Unit]:
    """Whole studies where they fit; otherwise series; otherwise runs of instances."""
    out: list[Unit] = []
    for patient in patients:
        for study in patient.studies:
            whole = Unit([i for s in study.series for i in s.instances], study.uid)
            if whole.cost <= capacity:
                out.append(whole)
                continue
            for series in study.series:
                part = Unit(list(series.instances), study.uid, "series")
                if part.cost <= capacity:
                    out.append(part)
                    continue
                run = Unit([], study.uid, "instances")
                for inst in series.instances:
                    if run.instances and run.cost + inst.cost > capacity:
                        out.append(run)
                        run = Unit([], study.uid, "instances")
                    run.instances.append(inst)
                out.append(run)
    return out


def pack(patients: Sequence[Patient], volume_bytes: int) -> list[list[Unit]]:
    """Next-fit packing of units in order, so patients and studies stay together and in order."""
    capacity = volume_bytes - VOLUME_OVERHEAD
    volumes: list[list[Unit]] = [[]]
    used = 0
    for unit in units(patients, capacity):
        if volumes[-1] and used + unit.cost > capacity:
            volumes.append([])
            used = 0
        volumes[-1].append(unit)
        used += unit.cost
    return volumes
