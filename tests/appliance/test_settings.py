"""tce.yaml loading: defaults, path resolution, strict errors that name the key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance import settings
from appliance.settings import DEFAULT_TRANSFER_SYNTAXES, SettingsError, describe_settings, load


def write(tmp_path: Path, text: str, name: str = "tce.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load(path, environ={})
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


def test_empty_file_gives_defaults_rooted_at_the_config_folder(tmp_path: Path) -> None:
    s = load(write(tmp_path, ""), environ={})
    assert s.path == tmp_path / "tce.yaml"
    assert s.work_dir == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve()}/tce.sqlite3"
    assert s.key_ring == tmp_path.resolve() / "keys" / "keyring.json"
    assert s.quarantine_dir == tmp_path.resolve() / "quarantine"
    assert s.log_level == "INFO" and s.log_file is None and s.role == "all"
    assert (s.stage1.ae_title, s.stage1.bind, s.stage1.port) == ("TCE_STAGE1", "127.0.0.1", 11112)
    assert s.stage1.spool_dir == tmp_path.resolve() / "stage1" / "spool"
    assert s.stage1.allowed_callers == () and s.stage1.policy == "stage1-pseudonymize"
    assert s.stage1.media_volume_bytes == 700_000_000 and s.stage1.workers == 2
    assert s.stage2.receiver.ae_title == "TCE_RECEIVER" and s.stage2.receiver.port == 11114
    assert s.stage2.retention_days is None and s.stage2.media_watch_dir is None
    assert s.receiver.ae_title == "TCE_RECEIVER" and s.receiver.port == 11114
    assert s.roles == ("stage1", "stage2", "receiver")


def test_values_are_read(tmp_path: Path) -> None:
    s = load(write(tmp_path, """
role: stage1
log_level: DEBUG
stage1:
  ae_title: HOSP_TCE
  port: 104
  allowed_callers: [CT1, "PACS@10.0.0.5"]
  transfer_syntaxes: ["1.2.840.10008.1.2.1"]
stage2:
  receiver: {host: research.example.org, port: 4242}
  retention_days: 30
"""), environ={})
    assert s.role == "stage1" and s.roles == ("stage1",)
    assert s.stage1.ae_title == "HOSP_TCE" and s.stage1.port == 104
    assert s.stage1.allowed_callers == ("CT1", "PACS@10.0.0.5")
    assert settings.effective_transfer_syntaxes(s.stage1.transfer_syntaxes) == (
        "1.2.840.10008.1.2.1",)
    assert settings.effective_transfer_syntaxes(s.receiver.transfer_syntaxes) == (
        DEFAULT_TRANSFER_SYNTAXES)
    assert s.stage2.receiver.host == "research.example.org" and s.stage2.receiver.port == 4242
    assert s.stage2.receiver.ae_title == "TCE_RECEIVER"  # unset nested keys keep defaults
    assert s.stage2.retention_days == 30


def test_relative_paths_resolve_against_work_dir_and_work_dir_against_the_file(
        tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    s = load(write(tmp_path / "conf", """
work_dir: ../data
log_file: logs/tce.log
key_ring: /etc/tce/keyring.json
stage1: {spool_dir: spool}
stage2: {media_watch_dir: /media/usb}
"""), environ={})
    data = (tmp_path / "data").resolve()
    assert s.work_dir == data
    assert s.log_file == data / "logs" / "tce.log"
    assert s.stage1.spool_dir == data / "spool"
    assert s.key_ring == Path("/etc/tce/keyring.json")
    assert s.stage2.media_watch_dir == Path("/media/usb")
    assert s.database_url == f"sqlite:///{data}/tce.sqlite3"
    assert data / "logs" in s.directories()


def test_environment_overrides_database_url(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "database_url: sqlite:////var/lib/tce/tce.sqlite3\n")
    assert load(path, environ={}).database_url == "sqlite:////var/lib/tce/tce.sqlite3"
    url = "postgresql+psycopg://tce@localhost/tce_test"
    assert load(path, environ={"TCE_DATABASE_URL": url}).database_url == url
    monkeypatch.setenv("TCE_DATABASE_URL", url)
    assert load(path).database_url == url


@pytest.mark.parametrize(("text", "keypath", "hint"), [
    ("prot: 1\n", "prot", "unknown setting"),
    ("stage1:\n  prot: 104\n", "stage1.prot", "unknown setting"),
    ("stage2:\n  receiver:\n    aetitle: X\n", "stage2.receiver.aetitle", "unknown setting"),
    ("stage1:\n  ae_title: THIS_TITLE_IS_TOO_LONG\n", "stage1.ae_title", "1 to 16"),
    ("stage1:\n  ae_title: 'A\\B'\n", "stage1.ae_title", "backslash"),
    ("receiver:\n  ae_title: '    '\n", "receiver.ae_title", "all spaces"),
    ("stage1:\n  ae_title: 12345\n", "stage1.ae_title", "expected a string"),
    ("stage1:\n  port: 0\n", "stage1.port", "1..65535"),
    ("receiver:\n  port: 70000\n", "receiver.port", "1..65535"),
    ("stage2:\n  receiver:\n    port: 'eleven'\n", "stage2.receiver.port", "whole number"),
    ("stage1:\n  port: true\n", "stage1.port", "whole number"),
    ("stage1:\n  allowed_callers: CT1\n", "stage1.allowed_callers", "expected a list"),
    ("stage1:\n  allowed_callers: ['CT1@']\n", "stage1.allowed_callers", "host"),
    ("stage1:\n  allowed_callers: [7]\n", "stage1.allowed_callers[0]", "expected a string"),
    ("stage1:\n  sop_classes: ['CT Image']\n", "stage1.sop_classes", "not a DICOM UID"),
    ("role: pacs\n", "role", "not one of all, stage1, stage2, receiver"),
    ("log_level: LOUD\n", "log_level", "not one of"),
    ("stage1:\n  workers: 0\n", "stage1.workers", "minimum 1"),
    ("stage1: [1, 2]\n", "stage1", "expected a mapping"),
    ("stage2:\n  backoff_seconds: 60\n  backoff_max_seconds: 10\n",
     "stage2.backoff_max_seconds", "not be less"),
])
def test_errors_name_the_key_path(tmp_path: Path, text: str, keypath: str, hint: str) -> None:
    message = error_of(tmp_path, text)
    assert f": {keypath}: " in message
    assert hint in message


def test_unknown_key_error_lists_the_valid_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stage1:\n  alowed_callers: [CT1]\n")
    assert "remove it or fix its spelling" in message and "allowed_callers" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level: expected a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stage1:\n  port: 1\n bad: [\n")
    assert "not valid YAML at line" in message


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"does not exist.*tce init DIR"):
        load(tmp_path / "nope.yaml")


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load(write(tmp_path, ""), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.stage1.port = 1  # type: ignore[misc]


def test_describe_settings_covers_every_leaf_with_a_doc() -> None:
    rows = {key: (kind, default, doc) for key, kind, default, doc in describe_settings()}
    expected = {
        "work_dir", "database_url", "key_ring", "quarantine_dir", "log_level", "log_file", "role",
        "stage1.ae_title", "stage1.bind", "stage1.port", "stage1.allowed_callers",
        "stage1.policy", "stage1.spool_dir", "stage1.store_dir", "stage1.media_dir",
        "stage1.quiet_period_seconds", "stage1.max_associations", "stage1.acse_timeout",
        "stage1.dimse_timeout", "stage1.network_timeout", "stage1.sop_classes",
        "stage1.transfer_syntaxes", "stage1.workers", "stage1.media_volume_bytes",
        "stage2.ae_title", "stage2.bind", "stage2.port", "stage2.allowed_callers",
        "stage2.store_dir", "stage2.media_watch_dir",
        "stage2.receiver.ae_title", "stage2.receiver.host", "stage2.receiver.port",
        "stage2.max_attempts", "stage2.backoff_seconds", "stage2.backoff_max_seconds",
        "stage2.retention_days", "stage2.poll_seconds", "stage2.acse_timeout",
        "stage2.dimse_timeout", "stage2.network_timeout",
        "receiver.ae_title", "receiver.bind", "receiver.port", "receiver.allowed_callers",
        "receiver.store_dir", "receiver.media_dir", "receiver.max_associations",
        "receiver.acse_timeout", "receiver.dimse_timeout", "receiver.network_timeout",
        "receiver.sop_classes", "receiver.transfer_syntaxes",
    }
    assert set(rows) == expected
    assert all(doc and "\n" not in doc for _, _, doc in rows.values())
    assert rows["stage1.port"] == ("integer", "11112", "TCP port the SCP listens on.")
    assert rows["stage2.retention_days"][:2] == ("integer or null", "null")
    assert rows["stage1.allowed_callers"][:2] == ("list of strings", "[]")
    assert rows["key_ring"][:2] == ("path", "keys/keyring.json")
