"""Synthetic, IOD-plausible DICOM studies with PHI planted where anonymizers tend to miss it.

Why this exists: the README quick start, the demo, the benchmarks and most tests need input that
looks like a real hospital export (several character sets, nested sequences, private blocks,
SR/KOS/GSPS that reference images, overlays, burned-in text, odd file names) without ever
touching a real patient. Every value is derived from the seed through SHA-256 (never `random`
or `hash()`), so one seed gives byte-identical files on every machine and Python version.

The package is split by concept; callers import from here:

- fixtures: the fictional patients, staff, equipment, studies and series, and the seeded hash;
- common: the modules every IOD shares (patient, study, series, equipment, request, private);
- pixels: the chest phantom and burned-in text;
- images: CT, MR, Secondary Capture, Enhanced CT, and make_ct_instance for benchmarks;
- documents: Basic Text SR, Key Object Selection, GSPS;
- studyset: make_sample_study_set, the shape of the sample;
- files: write_datasets, write_sample, the nested layout's extra files, `tce sample`;
- oracle: planted_phi and original_uids, what must be gone after de-identification.
"""

from __future__ import annotations

from appliance.synthetic.files import (
    NOTES_FILE,
    TRUNCATED_FILE,
    main_sample,
    write_datasets,
    write_sample,
)
from appliance.synthetic.fixtures import (
    EQUIPMENT,
    INSTITUTION,
    INSTITUTION_ADDRESS,
    OPERATOR,
    PERFORMER,
    READER,
    REFERRERS,
    UID_ROOT,
    SamplePatient,
    sample_patients,
)
from appliance.synthetic.fixtures import _uid as _uid  # tests and benchmarks derive UIDs with it
from appliance.synthetic.images import make_ct_instance
from appliance.synthetic.oracle import original_uids, planted_phi
from appliance.synthetic.studyset import make_sample_study_set

__all__ = [
    "EQUIPMENT",
    "INSTITUTION",
    "INSTITUTION_ADDRESS",
    "NOTES_FILE",
    "OPERATOR",
    "PERFORMER",
    "READER",
    "REFERRERS",
    "TRUNCATED_FILE",
    "UID_ROOT",
    "SamplePatient",
    "main_sample",
    "make_ct_instance",
    "make_sample_study_set",
    "original_uids",
    "planted_phi",
    "sample_patients",
    "write_datasets",
    "write_sample",
]
