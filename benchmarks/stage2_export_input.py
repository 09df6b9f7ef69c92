"""The stage-2 benchmark's input: the synthetic CT studies and throw-away ``tce`` nodes.

Split out of ``benchmarks/stage2_export.py`` so that the script keeps one concept per module:
this one only prepares what every run consumes (the cached instances of ``--count`` CT images
in four studies of two series, and ``tce init`` nodes driven through the ``tce`` command line).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
TCE = VENV_BIN / "tce"
STUDIES, SERIES_PER_STUDY = 4, 2


def generate(data: Path, count: int) -> None:
    """``count`` CT instances: four studies (one patient each) of two series; cached."""
    marker = data / f".complete-{count}"
    if marker.exists():
        return
    from appliance.synthetic import _uid, make_ct_instance, sample_patients

    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    patients = sample_patients(0)
    per_series = count // (STUDIES * SERIES_PER_STUDY)
    for index in range(count):
        series_no = min(index // per_series, STUDIES * SERIES_PER_STUDY - 1)
        study_no = series_no // SERIES_PER_STUDY
        ds = make_ct_instance(index, _uid(1, "s2-study", study_no), _uid(1, "s2-series", series_no),
                              patients[study_no], 512, 512)
        ds.save_as(data / f"IMG{index:05d}.dcm", enforce_file_format=True)
        if index % 500 == 499:
            print(f"  generated {index + 1}/{count}", file=sys.stderr)
    marker.write_text(f"{count}\n")


def tce(config: Path, *args: str) -> str:
    done = subprocess.run([str(TCE), "--config", str(config), *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tce {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def init_node(folder: Path, role: str) -> Path:
    subprocess.run([str(TCE), "init", str(folder), "--role", role], check=True,
                   capture_output=True)
    return folder / "tce.yaml"
