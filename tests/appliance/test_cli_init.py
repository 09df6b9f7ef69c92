"""The ``tce`` command line: subcommand discovery, configuration discovery, exit codes, tce init."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from appliance import cli
from appliance.commands.init import render_config
from appliance.keys import KeyRing
from appliance.settings import SettingsError, load

TCE = Path(sys.executable).parent / "tce"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _no_inherited_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TCE_CONFIG", raising=False)
    monkeypatch.delenv("TCE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


# --- tce init ---------------------------------------------------------------------------------


def test_init_creates_config_key_ring_and_folders(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    assert cli.main(["init", str(node)]) == 0
    out = capsys.readouterr().out
    config = node / "tce.yaml"
    assert mode(config) == 0o640
    ring_path = node / "keys" / "keyring.json"
    assert mode(ring_path) == 0o600 and mode(ring_path.parent) == 0o700
    assert KeyRing.load(ring_path).active_key_id in out
    for folder in ("quarantine", "stage1/spool", "stage1/store", "stage1/media", "stage2/store",
                   "receiver/store", "receiver/media"):
        assert (node / folder).is_dir() and mode(node / folder) == 0o700, folder
    assert f"export TCE_CONFIG={config}" in out
    assert "separate key rings" in out

    settings = load(config, environ={})
    assert settings.role == "all" and settings.key_ring == ring_path
    assert settings.stage1.spool_dir == node / "stage1" / "spool"


def test_generated_config_documents_every_setting_at_its_default(tmp_path: Path) -> None:
    text = render_config("all")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("# "), f"no comment above {line!r}"
    assert "  ae_title: TCE_STAGE1" in lines and "    port: 11114" in lines
    # The generated text loads to exactly the defaults.
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "generated.yaml").write_text(text)
    assert load(tmp_path / "generated.yaml", environ={}) == load(tmp_path / "empty.yaml",
                                                                  environ={})


def test_init_for_one_role_writes_only_its_section(tmp_path: Path) -> None:
    node = tmp_path / "hospital"
    assert cli.main(["init", str(node), "--role", "stage1"]) == 0
    data = yaml.safe_load((node / "tce.yaml").read_text())
    assert data["role"] == "stage1"
    assert "stage1" in data and "stage2" not in data and "receiver" not in data
    assert (node / "stage1" / "spool").is_dir() and not (node / "receiver").exists()
    assert (node / "keys" / "keyring.json").is_file()
    assert load(node / "tce.yaml", environ={}).roles == ("stage1",)


def test_receiver_node_gets_no_key_ring(tmp_path: Path) -> None:
    node = tmp_path / "sink"
    assert cli.main(["init", str(node), "--role", "receiver"]) == 0
    assert not (node / "keys").exists()
    assert (node / "receiver" / "store").is_dir()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    assert cli.main(["init", str(node)]) == 0
    config = node / "tce.yaml"
    config.write_text("role: stage1\n")
    capsys.readouterr()
    assert cli.main(["init", str(node)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tce: error: ") and "--force" in err and "nothing was changed" in err
    assert config.read_text() == "role: stage1\n"


def test_init_refuses_when_only_the_key_ring_exists(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    KeyRing.create(node / "keys" / "keyring.json")
    assert cli.main(["init", str(node)]) == 1
    assert "key ring" in capsys.readouterr().err
    assert not (node / "tce.yaml").exists()


def test_force_rewrites_config_but_never_the_key_ring(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    assert cli.main(["init", str(node)]) == 0
    ring_path = node / "keys" / "keyring.json"
    ring_before = ring_path.read_bytes()
    (node / "tce.yaml").write_text("role: stage1\n")
    capsys.readouterr()
    assert cli.main(["init", str(node), "--force"]) == 0
    out = capsys.readouterr().out
    assert ring_path.read_bytes() == ring_before
    assert "kept key ring" in out and "never overwritten" in out
    assert load(node / "tce.yaml", environ={}).role == "all"


def test_init_as_a_real_process(tmp_path: Path) -> None:
    assert TCE.exists(), f"{TCE} is missing: run scripts/bootstrap to install the tce command"
    node = tmp_path / "real"
    env = {k: v for k, v in os.environ.items() if k != "TCE_CONFIG"}
    first = subprocess.run([str(TCE), "init", str(node), "--role", "stage2"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert f"export TCE_CONFIG={node / 'tce.yaml'}" in first.stdout
    assert mode(node / "tce.yaml") == 0o640
    assert mode(node / "keys" / "keyring.json") == 0o600
    assert (node / "stage2" / "store").is_dir()
    second = subprocess.run([str(TCE), "init", str(node)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 1
    assert "already exists" in second.stderr and "--force" in second.stderr


# --- configuration discovery -----------------------------------------------------------------


def ns(config: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(config=None if config is None else Path(config))


def test_no_configuration_found_says_what_to_do() -> None:
    with pytest.raises(SettingsError) as info:
        cli.load_settings(ns())
    assert str(info.value) == ("no configuration found: pass --config, set TCE_CONFIG,"
                               " or run 'tce init DIR'")


def test_discovery_order_is_option_then_environment_then_local_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, role in (("local", "receiver"), ("env", "stage2"), ("option", "stage1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tce.yaml").write_text(f"role: {role}\n")
    monkeypatch.chdir(tmp_path / "local")
    assert cli.load_settings(ns()).role == "receiver"
    monkeypatch.setenv("TCE_CONFIG", str(tmp_path / "env" / "tce.yaml"))
    assert cli.load_settings(ns()).role == "stage2"
    assert cli.load_settings(ns(str(tmp_path / "option" / "tce.yaml"))).role == "stage1"


def test_missing_file_from_environment_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCE_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(SettingsError, match=r"gone.yaml \(from TCE_CONFIG\) does not exist"):
        cli.load_settings(ns())


# --- dispatch and exit codes -----------------------------------------------------------------


@pytest.fixture
def fake_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command module that loads settings and fails in the ways commands can fail."""
    module = types.ModuleType("tests_fake_tce_command")

    def run(args: argparse.Namespace) -> int:
        settings = cli.load_settings(args)
        if args.outcome == "fail":
            raise cli.CommandError("the study could not be sent: check the Receiver")
        print(f"role={settings.role}")
        return 0

    def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        parser = subparsers.add_parser("fake")
        parser.add_argument("outcome", nargs="?", default="ok")
        parser.set_defaults(func=run)

    module.register = register  # type: ignore[attr-defined]
    broken = types.ModuleType("tests_broken_tce_command")  # no register(): must not break tce
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setattr(cli, "COMMAND_MODULES", [
        "appliance.commands.init", "appliance.commands.not_written_yet",
        broken.__name__, module.__name__])


@pytest.mark.usefixtures("fake_command")
def test_exit_codes_and_error_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fake"]) == 2
    captured = capsys.readouterr()
    assert "tce: error: no configuration found" in captured.err
    assert "tests_broken_tce_command failed to register" in captured.err
    assert "not_written_yet" not in captured.err  # a missing module is silently skipped

    (tmp_path / "tce.yaml").write_text("stage1:\n  port: 0\n")
    assert cli.main(["fake"]) == 2
    assert "stage1.port: port 0 is outside 1..65535" in capsys.readouterr().err

    (tmp_path / "tce.yaml").write_text("role: stage2\n")
    assert cli.main(["--config", str(tmp_path / "tce.yaml"), "fake"]) == 0
    assert "role=stage2" in capsys.readouterr().out
    assert cli.main(["fake", "fail"]) == 1
    assert "tce: error: the study could not be sent" in capsys.readouterr().err
    assert cli.main(["init", str(tmp_path / "n")]) == 0


def test_usage_errors_version_and_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--no-such-option"]) == 2
    assert cli.main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert cli.main(["init"]) == 2
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tce ")
