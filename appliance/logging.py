"""Structured JSON logs that refuse to carry PHI.

Every line is one JSON object: ``timestamp`` (ISO 8601, UTC), ``level``, ``event`` and the fields
the caller bound. Logs are copied, shipped and kept far longer than the data they describe, so a
processor, :func:`refuse_phi`, replaces the value of any key that names an identifying attribute
(``PatientName``, ``patient_id``, ``original_uid``, anything ending in ``_original``...) with
``"[refused]"`` and lists the refused keys in ``phi_refused``. This is a safety net, not a licence:
code must still log pseudonymized identifiers, counts and key ids only.

Standard-library loggers (pynetdicom, SQLAlchemy, APScheduler) go through the same processors, and
:func:`quiet_pynetdicom` stops pynetdicom from logging the identifiers of C-FIND/C-MOVE requests.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Keys are compared case-insensitively with "_" and "-" removed, so "PatientName",
# "patient_name" and "patient-name" are one entry. Any key ending in "_original" is refused too.
PHI_KEYS: frozenset[str] = frozenset({
    "patient_name", "patient_id", "patient_birth_date", "patient_birth_time",
    "patient_address", "patient_telephone_numbers", "patient_mother_birth_name",
    "other_patient_ids", "other_patient_names", "other_patient_ids_sequence",
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames",
    "IssuerOfPatientID", "MedicalRecordLocator", "MilitaryRank", "BranchOfService",
    "AccessionNumber", "accession_number", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "PhysiciansOfRecord",
    "InstitutionName", "InstitutionAddress",
    "original_uid", "original_uids", "study_instance_uid_original", "series_instance_uid_original",
    "sop_instance_uid_original", "original_value", "original_values", "original",
    "name", "birth_date", "birthdate", "dob", "date_of_birth", "mrn", "ssn",
})
PHI_SUFFIX = "original"
REFUSED = "[refused]"
PYNETDICOM_LOGGERS = ("pynetdicom", "pynetdicom.assoc", "pynetdicom.dsutils", "pynetdicom.acse",
                      "pynetdicom.dimse", "pynetdicom.events")
_HANDLER_FLAG = "_tce_handler"
_LEADING = ("timestamp", "level", "event", "logger")


def _normal(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


_DENIED = frozenset(_normal(k) for k in PHI_KEYS)


def is_phi_key(key: str) -> bool:
    """True when a log key names an identifying attribute and its value must not be written."""
    normal = _normal(key)
    return normal in _DENIED or normal.endswith(PHI_SUFFIX)


def _refuse(mapping: MutableMapping[str, Any], prefix: str, refused: list[str]) -> None:
    for key in list(mapping):
        value = mapping[key]
        if isinstance(key, str) and is_phi_key(key):
            mapping[key] = REFUSED
            refused.append(prefix + key)
        elif isinstance(value, dict):
            inner = dict(value)  # never mutate the caller's object
            _refuse(inner, f"{prefix}{key}.", refused)
            mapping[key] = inner


def refuse_phi(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace values of PHI-bearing keys, list them in ``phi_refused``."""
    refused: list[str] = []
    _refuse(event_dict, "", refused)
    if refused:
        event_dict["phi_refused"] = refused
    return event_dict


def _leading_keys_first(logger: WrappedLogger, method_name: str,
                        event_dict: EventDict) -> EventDict:
    """Put timestamp, level, event and logger first so that a line reads left to right."""
    ordered = {k: event_dict.pop(k) for k in _LEADING if k in event_dict}
    ordered.update(event_dict)
    return ordered


def quiet_pynetdicom() -> None:
    """Stop pynetdicom logging query identifiers (they hold patient data); WARNING and above."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    for name in PYNETDICOM_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    return number


def configure_logging(settings_or_level: Any = "INFO", log_file: Path | str | None = None,
                      stream: TextIO | None = None) -> None:
    """Send structlog and standard-library logging to JSON lines on stderr or ``log_file``.

    ``settings_or_level`` is a :class:`appliance.settings.Settings` (its ``log_level`` and
    ``log_file`` are used unless ``log_file`` is given) or a level name or number. Calling it
    again replaces the handler it installed before, so tests and long-running services can
    reconfigure without duplicating lines.
    """
    if isinstance(settings_or_level, (str, int)):
        level = _level_number(settings_or_level)
    else:
        level = _level_number(settings_or_level.log_level)
        if log_file is None:
            log_file = settings_or_level.log_file

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        refuse_phi,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _leading_keys_first,
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
        foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
    )
    handler: logging.Handler
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_FLAG, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    quiet_pynetdicom()


def get_logger(name: str | None = None, **bound: Any) -> Any:
    """A structlog logger; bind pseudonymized ids and counts only."""
    return structlog.get_logger(name, **bound)
