"""The shape of the sample: which patient gets which studies, series and instances.

Why this is its own module: tests, the demo and the README count on this exact set (four
patients, five studies, the first patient twice, 22 instances of 7 SOP classes); it is decided in
one function, apart from how each instance is built.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from appliance.synthetic.documents import _gsps, _kos, _sr
from appliance.synthetic.fixtures import (
    CT_GE,
    CT_PHILIPS,
    MR_SIEMENS,
    WORKSTATION,
    _Equipment,
    _make_study,
    _Series,
    _Study,
    _uid,
    sample_patients,
)
from appliance.synthetic.images import _ct, _enhanced_ct, _mr, _sc


def make_sample_study_set(seed: int = 0, small: bool = True) -> list[Dataset]:
    """Four patients, five studies (the first patient has two), 22 instances of 7 SOP classes."""
    size, sc_size = (64, 256) if small else (512, 512)
    p0, p1, p2, p3 = sample_patients(seed)

    def series(st: _Study, number: int, modality: str, description: str, eq: _Equipment,
               age: bool = True) -> _Series:
        return _Series(_uid(seed, "series", st.uid, number), number, modality, description, eq,
                       age)

    s1 = _make_study(p0, seed, 1, "CT chest")
    ct_a = [_ct(s1, series(s1, 1, "CT", "Chest 5mm", CT_GE), i, size, size, overlay=i == 0)
            for i in range(3)]
    thin = series(s1, 2, "CT", "Chest 1.25mm recon", CT_GE, age=False)
    ct_b = [_ct(s1, thin, i, size, size, derived_from=ct_a[i:i + 1]) for i in range(2)]
    captures = series(s1, 3, "OT", "Key screen captures", WORKSTATION)
    sc = [_sc(s1, captures, 0, sc_size, ct_a[1], burned=True),
          _sc(s1, captures, 1, sc_size, ct_a[2])]
    report = _sr(s1, series(s1, 4, "SR", "Radiology report", WORKSTATION), ct_a[:2])
    kos = _kos(s1, series(s1, 5, "KO", "Key images", WORKSTATION), [ct_a[1], ct_b[0]])
    gsps = _gsps(s1, series(s1, 6, "PR", "Annotations", WORKSTATION), ct_a)
    s2 = _make_study(p0, seed, 2, "MR chest")
    mr_followup = [_mr(s2, series(s2, 1, "MR", "T1 SE axial", MR_SIEMENS), i, size, size)
                   for i in range(3)]
    s3 = _make_study(p1, seed, 1, "CT chest")
    ct_de = [_ct(s3, series(s3, 1, "CT", "Thorax 5mm", CT_PHILIPS), i, size, size)
             for i in range(2)]
    s4 = _make_study(p2, seed, 1, "CT chest")
    ct_utf = [_ct(s4, series(s4, 1, "CT", "Chest 5mm", CT_GE), i, size, size) for i in range(3)]
    enhanced = _enhanced_ct(s4, series(s4, 2, "CT", "Chest volume", CT_GE), ct_utf)
    s5 = _make_study(p3, seed, 1, "MR chest")
    mr_jp = [_mr(s5, series(s5, 1, "MR", "T2 TSE axial", MR_SIEMENS), i, size, size)
             for i in range(2)]
    sc_jp = _sc(s5, series(s5, 2, "OT", "Screen capture", WORKSTATION), 0, sc_size, mr_jp[0])
    return [*ct_a, *ct_b, *sc, report, kos, gsps, *mr_followup, *ct_de, *ct_utf, enhanced,
            *mr_jp, sc_jp]
