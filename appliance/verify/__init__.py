"""``tce verify``: the appliance checks its own output, so that no one has to trust it blindly.

Like MIDI-B style validation, verification re-reads de-identified files and checks them against
the policy that produced them (:mod:`.walk`, :mod:`.forms`, :mod:`.markers`), checks UIDs and
references inside the set (:mod:`.uids`) and DICOMDIRs (:mod:`.dicomdir`), flags free text and
images a person should review (:mod:`.text`, :mod:`.review`) and, with stage 1's key ring,
scans every byte for the original identifiers stage 1 sealed (:mod:`.originals`,
:mod:`.bytescan`). :func:`verify_output` runs it all and returns a :class:`Report`.
"""

from appliance.verify.findings import Check, Finding, Severity
from appliance.verify.originals import Original, OriginalsError, load_originals
from appliance.verify.report import Report
from appliance.verify.runner import PolicyUnknown, verify_output

__all__ = [
    "Check", "Finding", "Original", "OriginalsError", "PolicyUnknown", "Report", "Severity",
    "load_originals", "verify_output",
]
