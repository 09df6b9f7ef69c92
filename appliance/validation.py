"""What an SCP checks before it acknowledges a C-STORE: shared by stage 1 and the Receiver.

Both nodes promise the same thing to a sender: success (0x0000) means the instance is whole and
kept. A dataset that cannot keep that promise (undecodable, truncated, no SOP Instance UID, or a
UID that differs from the one the request announced) is refused with 0xC210 and quarantined, so
the sender sees the failure instead of a silent loss. The checks live here, outside any stage
package, because nothing may import a stage.
"""

from __future__ import annotations

import hashlib
import hmac
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError


class BadInstance(Exception):
    """The dataset cannot be accepted; the message (no PHI) becomes the quarantine reason."""


def receipt_key(key: bytes, sop_instance_uid: str) -> str:
    """A keyed hash of a received SOP Instance UID: names spool files and rows without the UID."""
    return hmac.new(key, f"receipt\x00{sop_instance_uid}".encode(), hashlib.sha256).hexdigest()


def validate(stream: bytes, affected_uid: str) -> pydicom.Dataset:
    """Parse fully (truncation shows only then) and check the identifying attributes."""
    try:
        ds = pydicom.dcmread(BytesIO(stream))
        for elem in ds.iterall():  # forces every value, so a truncated element is found here
            _ = elem.value
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise BadInstance(f"dataset cannot be decoded ({type(exc).__name__})") from exc
    if "PixelData" in ds:
        declared = ds["PixelData"]
        if declared.is_undefined_length is False and ds.get("Rows") and ds.get("Columns"):
            expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                        * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 16))
                        // 8)
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None and not syntax.is_compressed and len(declared.value) < expected:
                raise BadInstance("dataset truncated: PixelData shorter than declared")
    if not str(ds.get("SOPInstanceUID", "")).strip():
        raise BadInstance("dataset has no SOP Instance UID")
    if str(ds.SOPInstanceUID) != affected_uid:
        raise BadInstance("SOP Instance UID differs from the C-STORE request")
    return ds
