"""Images a person should look at: burned-in text cannot be seen in the header.

No header check can prove that the pixels hold no name. Two header facts say they might:
Burned In Annotation (0028,0301) or Recognizable Visual Features (0028,0302) is YES, and the
kind of image (ultrasound, secondary and screen captures, angiography and fluoroscopy, "other",
endoscopy, external-camera photographs, scanned documents) commonly carries burned-in patient
data even when the flag says NO or is absent. Both are
WARNINGs listed for review.

One case is an ERROR: a policy that requests Clean Pixel Data (or Clean Recognizable Visual
Features) makes the engine refuse an instance flagged YES, because this release cannot clean
pixels. Such an instance in the output did not come from that policy's run as the policy says.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from appliance.verify.findings import Check, Findings
from policies.charset import encodings_of, raw_strings
from policies.model import Option, Policy

REVIEW_MODALITIES = frozenset({"US", "SC", "XA", "RF", "OT", "ES", "XC", "DOC"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and the multi-frame SC classes
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00280010)  # pixel data, or Rows
_FLAGS = (
    (0x00280301, "BurnedInAnnotation", "Burned In Annotation", Option.CLEAN_PIXEL_DATA),
    (0x00280302, "RecognizableVisualFeatures", "Recognizable Visual Features",
     Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES),
)


def _text(ds: Dataset, tag: int) -> str:
    values = raw_strings(ds.get_item(tag), encodings_of(ds))
    return values[0].strip("\x00 ").upper() if values else ""


def check_review(findings: Findings, file: str, ds: Dataset, policy: Policy) -> None:
    """Flag images for a person to review (and the one case that is a policy violation)."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return
    for tag, keyword, name, option in _FLAGS:
        if _text(ds, tag) != "YES":
            continue
        if option in policy.options:
            findings.error(Check.PIXELS, file, keyword,
                           f"{name} is YES, but the policy requests {option.value}, which makes"
                           " the engine hold such instances back (pixels are not cleaned)")
        else:
            findings.warning(Check.BURNED_IN, file, keyword,
                             f"{name} is YES: review the pixels for burned-in identifiers")
    modality = _text(ds, 0x00080060)
    sop_class = _text(ds, 0x00080016)
    if modality in REVIEW_MODALITIES or sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        kind = "a secondary capture" if sop_class.startswith(SECONDARY_CAPTURE_PREFIX) else (
            f"a {modality} image")
        findings.warning(Check.MODALITY, file, "Modality",
                         f"{kind}: such images commonly carry burned-in text; review the pixels")
