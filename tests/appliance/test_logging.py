"""JSON log lines, and the processor that refuses PHI-bearing keys."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from appliance import logging as tce_logging
from appliance.logging import REFUSED, configure_logging, get_logger, is_phi_key
from appliance.settings import from_mapping


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_json_with_utc_timestamp_level_and_event(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "tce.log"
    configure_logging("INFO", log_file=log)
    get_logger("tce.test").info("study received", study="2.25.42", instances=12)
    get_logger("tce.test").debug("not shown at INFO")
    [entry] = lines(log)
    assert list(entry)[:3] == ["timestamp", "level", "event"]
    assert entry["event"] == "study received" and entry["level"] == "info"
    assert entry["study"] == "2.25.42" and entry["instances"] == 12
    assert entry["logger"] == "tce.test"
    stamp = datetime.fromisoformat(entry["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_phi_keys_are_refused_and_listed(tmp_path: Path) -> None:
    log = tmp_path / "tce.log"
    configure_logging("DEBUG", log_file=log)
    get_logger("tce.test").warning(
        "instance quarantined", PatientName="DOE^JANE", patient_id="PID-778899",
        PATIENTBIRTHDATE="19700101", AccessionNumber="ACC-5566", name="Jane Doe",
        sop_instance_uid_original="1.2.840.99999.7", reason="unreadable",
        detail={"birth_date": "19700101", "count": 3}, study_pseudonym="TCE-8Q2K")
    text = log.read_text()
    for secret in ("DOE^JANE", "PID-778899", "19700101", "ACC-5566", "Jane Doe", "1.2.840.99999"):
        assert secret not in text
    [entry] = lines(log)
    assert entry["PatientName"] == REFUSED and entry["patient_id"] == REFUSED
    assert entry["detail"] == {"birth_date": REFUSED, "count": 3}
    assert sorted(entry["phi_refused"]) == sorted([
        "PatientName", "patient_id", "PATIENTBIRTHDATE", "AccessionNumber", "name",
        "sop_instance_uid_original", "detail.birth_date"])
    assert entry["reason"] == "unreadable" and entry["study_pseudonym"] == "TCE-8Q2K"


def test_clean_events_carry_no_refusal_marker(tmp_path: Path) -> None:
    log = tmp_path / "tce.log"
    configure_logging("INFO", log_file=log)
    get_logger().info("export done", study_id="TCE-1", key_id="ab12cd34", attempts=1)
    [entry] = lines(log)
    assert "phi_refused" not in entry and entry["study_id"] == "TCE-1"


@pytest.mark.parametrize(("key", "refused"), [
    ("PatientID", True), ("patient_id", True), ("patient-name", True), ("Birth_Date", True),
    ("uid_original", True), ("StudyInstanceUID_Original", True), ("original_uid", True),
    ("study_instance_uid", False), ("sop_class_uid", False), ("event", False), ("count", False),
])
def test_deny_list_is_case_insensitive(key: str, refused: bool) -> None:
    assert is_phi_key(key) is refused


def test_standard_library_loggers_write_the_same_json(tmp_path: Path) -> None:
    log = tmp_path / "tce.log"
    configure_logging("INFO", log_file=log)
    logging.getLogger("sqlalchemy.engine").warning("pool exhausted after %d tries", 3)
    [entry] = lines(log)
    assert entry["event"] == "pool exhausted after 3 tries"
    assert entry["level"] == "warning" and entry["logger"] == "sqlalchemy.engine"


def test_settings_choose_level_and_file(tmp_path: Path) -> None:
    settings = from_mapping({"log_level": "WARNING", "log_file": "logs/tce.log"},
                            base_dir=tmp_path, environ={})
    configure_logging(settings)
    get_logger().info("below the level")
    get_logger().error("above the level")
    assert [e["event"] for e in lines(tmp_path / "logs" / "tce.log")] == ["above the level"]


def test_reconfiguring_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=io.StringIO())
    configure_logging("INFO", stream=stream)
    get_logger().info("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_default_destination_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    get_logger().info("to stderr", PatientID="X1")
    entry = json.loads(capsys.readouterr().err.strip())
    assert entry["event"] == "to stderr" and entry["PatientID"] == REFUSED


def test_quiet_pynetdicom_stops_identifier_logging() -> None:
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = True
    _config.LOG_RESPONSE_IDENTIFIERS = True
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG)
    try:
        tce_logging.quiet_pynetdicom()
        assert _config.LOG_REQUEST_IDENTIFIERS is False
        assert _config.LOG_RESPONSE_IDENTIFIERS is False
        assert logging.getLogger("pynetdicom").level == logging.WARNING
        assert logging.getLogger("pynetdicom.assoc").getEffectiveLevel() == logging.WARNING
    finally:
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
