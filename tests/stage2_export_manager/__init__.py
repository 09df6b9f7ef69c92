"""Stage-2 tests, and the builders they share: real stage-1 output written as real PDI media.

Stage-1 output is made the way stage 1 makes it: the synthetic sample study set
(:mod:`appliance.synthetic`: 4 patients, 5 studies, the first patient with two studies, 22
instances) run through the ``stage1-pseudonymize`` policy with the engine, then written as IHE
PDI media by :func:`pdi.writer.write_media`. The engine run is cached; callers get copies.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from appliance.db import open_database, session_factory
from appliance.settings import Settings, defaults
from appliance.synthetic import make_sample_study_set
from pdi.writer import write_media
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import load_builtin

STAGE1_KEYS = EngineKeys.for_testing(b"stage1-hospital")  # never the stage-2 ring


@functools.cache
def _stage1_sample() -> tuple[Dataset, ...]:
    engine = Deidentifier(load_builtin("stage1-pseudonymize"), STAGE1_KEYS)
    datasets = make_sample_study_set(0)
    for ds in datasets:
        engine.deidentify(ds)
    return tuple(datasets)


def stage1_datasets() -> list[Dataset]:
    """Fresh copies of the stage-1 pseudonymized sample (22 instances, 5 studies, 4 patients)."""
    return [copy.deepcopy(ds) for ds in _stage1_sample()]


def raw_datasets() -> list[Dataset]:
    """The synthetic sample as a hospital holds it: every identifier still in place."""
    return make_sample_study_set(0)


def write_pdi(datasets: Iterable[Dataset], out: Path) -> Path:
    """Write ``datasets`` as PDI media at ``out`` (files staged beside it); returns ``out``."""
    staging = out.with_name(out.name + "-files")
    staging.mkdir(parents=True)
    files = []
    for n, ds in enumerate(datasets):
        path = staging / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    write_media(files, out)
    return out


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``root`` with its sha256 and mode: equal before and after = untouched."""
    state = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            state[path.relative_to(root).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return state


def stage2_node(base: Path, database_url: str | None = None,
                ) -> tuple[Settings, sessionmaker[Session]]:
    """Default settings rooted at ``base`` and a session factory on a fresh database: SQLite
    in ``base``, or ``database_url`` (the ``db_url`` fixture's PostgreSQL database)."""
    base.mkdir(parents=True, exist_ok=True)
    settings = defaults(base, environ={"TCE_DATABASE_URL": database_url} if database_url else {})
    assert settings.database_url is not None
    return settings, session_factory(open_database(settings.database_url))
