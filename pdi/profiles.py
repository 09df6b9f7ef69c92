"""Which PS3.11 General Purpose media profile a set of transfer syntaxes satisfies.

Why: pydicom does not transcode, and de-identified files keep the transfer syntax they arrived
in. Rather than refusing media a hospital viewer could still read, the writer accepts any
transfer syntax and states truthfully (README.TXT, VolumeResult.profile) which STD-GEN profile
the volume meets, so the person burning a CD knows whether it is a conformant CD.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
)

STD_GEN_CD = "STD-GEN-CD"
STD_GEN_USB_JPEG = "STD-GEN-USB-JPEG"
STD_GEN_USB_J2K = "STD-GEN-USB-J2K"
GENERAL_PURPOSE = "none (general purpose file-set)"

_JPEG = frozenset({JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit})
_J2K = frozenset({JPEG2000Lossless, JPEG2000})

DESCRIPTIONS = {
    STD_GEN_CD: "General Purpose CD-R Interchange (PS3.11): Explicit VR Little Endian only; "
    "also valid on DVD and USB media",
    STD_GEN_USB_JPEG: "General Purpose USB and Flash Memory with JPEG (PS3.11); also meets "
    "STD-GEN-DVD-JPEG; not a conformant CD-R",
    STD_GEN_USB_J2K: "General Purpose USB and Flash Memory with JPEG 2000 (PS3.11); also meets "
    "STD-GEN-DVD-J2K; not a conformant CD-R",
    GENERAL_PURPOSE: "no STD-GEN profile: some files use a transfer syntax no General Purpose "
    "profile allows; DICOM viewers may still read them",
}


def media_profile(transfer_syntaxes: Iterable[str]) -> str:
    """The most restrictive STD-GEN profile allowing every transfer syntax given.

    STD-GEN-CD allows Explicit VR Little Endian only. The USB/DVD JPEG profiles add JPEG
    Lossless SV1, Baseline and Extended; the J2K profiles add JPEG 2000 (both) but not JPEG, so
    a mixture of JPEG and JPEG 2000 meets neither (as dcmtk's dcmmkdir checks it).
    """
    used = set(transfer_syntaxes)
    if used <= {ExplicitVRLittleEndian}:
        return STD_GEN_CD
    if used <= {ExplicitVRLittleEndian} | _JPEG:
        return STD_GEN_USB_JPEG
    if used <= {ExplicitVRLittleEndian} | _J2K:
        return STD_GEN_USB_J2K
    return GENERAL_PURPOSE
