"""The de-identification engine: apply one compiled policy to one dataset, in place.

Both stages run this, with different policies. :class:`Deidentifier` holds what lasts across
datasets (the compiled plan, keys, UID and cleaner caches); each call runs one :class:`_Run`:
read the patient's identifiers before anything changes, walk the dataset
(:mod:`policies.walk`), then add the markers and the new File Meta Information.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from policies import actions
from policies.annex_e import Plan, compile_plan, keyword_or_tag
from policies.charset import encodings_of, ensure_encodable, raw_text
from policies.keying import EngineKeys, code, keyed_uid, shift_days
from policies.markers import apply_markers, is_dicomdir, rebuild_file_meta
from policies.model import Option, Policy
from policies.outcome import ActionRecord, Outcome, PolicyRefusal
from policies.private import SafePrivateTable, declared_safe
from policies.sweep import OriginalIdentifiers, SweepTokens, sweep_tokens
from policies.textclean import Identifiers, TextCleaner
from policies.walk import Mode, Walker

# Overlay bitmaps may hold burned-in text; Clean Graphics keeps one only if a detector says it
# holds none. The engine does no I/O, so the detector (OCR) is injected by the caller.
OverlayTextDetector = Callable[[Dataset, int], bool]


class Deidentifier:
    """Apply ``policy`` under ``keys``; reuse one instance for many datasets.

    The instance caches UID mappings and compiled text cleaners, so consecutive instances of the
    same patient cost less. It holds no file handles and is safe to use from one thread.
    """

    def __init__(
        self,
        policy: Policy,
        keys: EngineKeys,
        *,
        safe_private: SafePrivateTable | None = None,
        overlay_text_detector: OverlayTextDetector | None = None,
    ) -> None:
        self.policy = policy
        self.keys = keys
        self.plan: Plan = compile_plan(policy)
        needs_safe = Option.RETAIN_SAFE_PRIVATE in policy.options
        self.safe_private = safe_private or (SafePrivateTable.bundled() if needs_safe else None)
        self.overlay_text_detector = overlay_text_detector
        # Dates in free text are removed unless the policy keeps full dates: a shifted or
        # removed date in the header must not survive unshifted in a description.
        self.remove_all_dates = Option.RETAIN_LONG_FULL_DATES not in policy.options
        self._uid_cache: dict[str, str] = {}
        self._cleaners: dict[Identifiers, TextCleaner] = {}
        self._tokens: dict[tuple[Identifiers, tuple[str, ...]], SweepTokens | None] = {}

    def remap_uid(self, value: str) -> str:
        """The new UID for ``value``; well-known UIDs (pydicom's dictionary) stay as they are."""
        if not value or value in UID_dictionary:
            return value
        new = self._uid_cache.get(value)
        if new is None:
            if len(self._uid_cache) > 200_000:
                self._uid_cache.clear()
            new = keyed_uid(self.keys.uid, value, self.policy.parameters.uid_root)
            self._uid_cache[value] = new
        return new

    def cleaner_for(self, identifiers: Identifiers) -> TextCleaner:
        cleaner = self._cleaners.get(identifiers)
        if cleaner is None:
            if len(self._cleaners) > 256:
                self._cleaners.clear()
            cleaner = TextCleaner(identifiers, remove_all_dates=self.remove_all_dates)
            self._cleaners[identifiers] = cleaner
        return cleaner

    def tokens_for(self, identifiers: Identifiers, encodings: list[str]) -> SweepTokens | None:
        """Sweep tokens for a patient, cached: a series repeats the same patient."""
        key = (identifiers, tuple(encodings))
        if key not in self._tokens:
            if len(self._tokens) > 256:
                self._tokens.clear()
            self._tokens[key] = sweep_tokens(identifiers, encodings)
        return self._tokens[key]

    def check_refusals(self, ds: Dataset) -> None:
        """Raise :class:`PolicyRefusal` if this policy must not process ``ds``."""
        if is_dicomdir(ds):
            raise PolicyRefusal(
                "a DICOMDIR is not de-identified: write a new one from the de-identified files")
        options = self.policy.options
        if Option.CLEAN_PIXEL_DATA in options and _flag(ds, 0x00280301):
            raise PolicyRefusal(
                "BurnedInAnnotation is YES and the policy requests Clean Pixel Data, which this "
                "release cannot perform: held for pixel cleaning or manual review")
        if Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES in options and _flag(ds, 0x00280302):
            raise PolicyRefusal(
                "RecognizableVisualFeatures is YES and the policy requests Clean Recognizable "
                "Visual Features, which this release cannot perform")

    def deidentify(self, ds: Dataset) -> Outcome:
        """De-identify ``ds`` in place and return what was done (no original values)."""
        self.check_refusals(ds)
        run = _Run(self, ds)
        run.prepare()
        run.walk(ds, Mode.NORMAL, "")
        run.finish()
        return run.outcome


def _flag(ds: Dataset, tag: int) -> bool:
    return raw_text(ds.get_item(tag), ["ascii"]).upper() == "YES"


class _Run(Walker):
    """State for one dataset: the patient's identifiers, date shift and the outcome."""

    def __init__(self, engine: Deidentifier, ds: Dataset) -> None:
        self.engine = engine
        self.safe_private = engine.safe_private
        self.plan = engine.plan
        self.policy = engine.policy
        self.params = engine.policy.parameters
        self.keys = engine.keys
        self.root = ds
        self.outcome = Outcome()
        self.encodings = encodings_of(ds)
        self.written_text = []
        self.sources = {}
        self.remap = self._map_uid
        self.overlay_removal = self._remove_overlay
        self._originals: OriginalIdentifiers | None = None
        self._cleaner: TextCleaner | None = None
        self._shift: int | None = None
        self._patient_key = ""
        self.declared = (frozenset(), frozenset())
        self.sweep = None
        self.pending_groups = []
        self.walked = {}

    # -- setup and teardown -------------------------------------------------------------------
    def prepare(self) -> None:
        ds, enc = self.root, self.encodings
        for override in self.policy.overrides:
            source = override.rule.source
            if source and source not in self.sources:
                self.sources[source] = raw_text(ds.get_item(tag_for_keyword(source) or 0), enc)
        self._patient_key = (raw_text(ds.get_item(0x00100020), enc)
                             or raw_text(ds.get_item(0x00100010), enc)
                             or raw_text(ds.get_item(0x0020000D), enc))
        # Read before anything changes: the cleaner and the sweep look for these values.
        self._originals = OriginalIdentifiers(ds, enc)
        if self.plan.basic:
            self.sweep = self.engine.tokens_for(self._originals.top, enc)
        if Option.RETAIN_SAFE_PRIVATE in self.policy.options and 0x00080300 in ds:
            self.declared = declared_safe(ds)
        if self.params.compute_age and not raw_text(ds.get_item(0x00101010), enc):
            birth = raw_text(ds.get_item(0x00100030), enc)
            seen = (raw_text(ds.get_item(0x00080020), enc)
                    or raw_text(ds.get_item(0x00080023), enc))
            try:
                ds[0x00101010] = DataElement(0x00101010, "AS", actions.age_between(birth, seen))
                self.note(0x00101010, "PatientAge", "added", "computed from birth and study date")
            except actions.UnparseableValue:
                self.outcome.warnings.append("PatientAge missing and not computable")

    def finish(self) -> None:
        ds = self.root
        if self.plan.basic:
            self._ensure_dicomdir_keys(ds)
            apply_markers(ds, self.policy)
        if ensure_encodable(ds, self.written_text):
            self.outcome.charset_switched = True
        rebuild_file_meta(ds)
        out, enc = self.outcome, self.encodings
        out.sop_instance_uid = raw_text(ds.get_item(0x00080018), enc)
        out.study_instance_uid = raw_text(ds.get_item(0x0020000D), enc)
        out.series_instance_uid = raw_text(ds.get_item(0x0020000E), enc)
        out.sop_class_uid = raw_text(ds.get_item(0x00080016), enc)
        out.date_shift_days = self._shift

    def _ensure_dicomdir_keys(self, ds: Dataset) -> None:
        """Patient ID, Study Date, Study Time and Study ID are Type 1 DICOMDIR keys."""
        if 0x0020000D not in ds:
            return
        enc = self.encodings
        study = raw_text(ds.get_item(0x0020000D), enc)
        pseudonym_key = self.keys.pseudonym
        defaults: dict[int, tuple[str, Callable[[], str]]] = {
            0x00100020: ("LO", lambda: code(pseudonym_key, "D|PatientID", self._patient_key, 12)),
            0x00200010: ("SH", lambda: code(pseudonym_key, "D|StudyID", study, 10)),
            0x00080020: ("DA", lambda: actions.DUMMY_DATE),
            0x00080030: ("TM", lambda: actions.DUMMY_TIME),
        }
        for tag, (vr, make) in defaults.items():
            if not raw_text(ds.get_item(tag), enc):
                ds[tag] = DataElement(tag, vr, make())
                self.note(tag, keyword_or_tag(tag), "D", "Type 1 DICOMDIR key")

    # -- state the value handlers use ---------------------------------------------------------
    def note(self, tag: int, path: str, code_: str, note: str = "") -> None:
        self.outcome.actions.append(ActionRecord(path, int(tag), code_, note))

    @property
    def cleaner(self) -> TextCleaner:
        if self._cleaner is None:
            originals = self._originals or OriginalIdentifiers(self.root, self.encodings)
            self._cleaner = self.engine.cleaner_for(originals.all())
        return self._cleaner

    @property
    def shift(self) -> int:
        if self._shift is None:
            self._shift = shift_days(self.keys.date, self._patient_key,
                                     self.params.date_shift_max_days)
        return self._shift

    def _map_uid(self, old: str) -> str:
        new = self.engine.remap_uid(old)
        if new != old:
            self.outcome.uid_map[old] = new
        return new

    def _remove_overlay(self, tag: int, path: str) -> bool:
        """Clean Graphics on overlay data: keep it only if the detector finds no text in it."""
        group = tag >> 16
        if not 0x6000 <= group <= 0x60FF:
            return False
        detector = self.engine.overlay_text_detector
        if detector is not None and not detector(self.root, group):
            self.note(tag, path, "C", "overlay kept: no text detected")
            return True
        reason = "text detected in overlay" if detector else "no overlay text detector"
        self.pending_groups.append(group)
        self.note(tag, path, "X", f"overlay removed: {reason}")
        return True

    # -- the walk -----------------------------------------------------------------------------
