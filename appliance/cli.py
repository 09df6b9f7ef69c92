"""The one ``tce`` command: global options, subcommand discovery and exit codes.

Exit codes: 0 ok, 1 failure, 2 bad usage or bad configuration. Errors are printed as
``tce: error: <what was wrong and what to do>``, the way argparse prints usage errors, so that
scripts and people see one format. Subcommands live in ``appliance/commands/`` (see
``COMMAND_MODULES``); this module only wires them together and owns no command logic.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib import metadata
from pathlib import Path

from appliance import settings as settings_module
from appliance.commands import COMMAND_MODULES
from appliance.settings import ConfigError, Settings, SettingsError

CONFIG_ENV = "TCE_CONFIG"
DEFAULT_CONFIG_NAME = "tce.yaml"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
NO_CONFIG_MESSAGE = ("no configuration found: pass --config, set TCE_CONFIG,"
                     " or run 'tce init DIR'")


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as an error, exit status 1."""


def _version() -> str:
    try:
        return metadata.version("tce-appliance")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run scripts/bootstrap)"


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser with every available subcommand, and warnings about modules that failed."""
    parser = argparse.ArgumentParser(
        prog="tce",
        description="IHE TCE two-stage DICOM de-identification appliance.",
        epilog="Exit status: 0 ok, 1 failure, 2 bad usage or bad configuration.",
    )
    parser.add_argument(
        "--config", metavar="PATH", type=Path, default=None,
        help=f"configuration file (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG_NAME}"
             " if it exists)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    warnings: list[str] = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet: the command is simply not offered
                continue
            warnings.append(f"command module {name} could not be imported: {exc}")
            continue
        except Exception as exc:  # a broken module must not take the other commands down
            warnings.append(f"command module {name} could not be imported: {exc!r}")
            continue
        try:
            module.register(subparsers)
        except Exception as exc:
            warnings.append(f"command module {name} failed to register: {exc!r}")
    return parser, warnings


def config_path(args: argparse.Namespace) -> Path | None:
    """``--config``, else ``$TCE_CONFIG``, else ``./tce.yaml`` when it exists, else None."""
    explicit = getattr(args, "config", None)
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings a command runs with; raises :class:`SettingsError` with what to do."""
    path = config_path(args)
    if path is None:
        raise SettingsError(NO_CONFIG_MESSAGE)
    if not path.exists():
        source = "--config" if getattr(args, "config", None) is not None else CONFIG_ENV
        raise SettingsError(f"configuration file {path} (from {source}) does not exist:"
                            " fix the path, or run 'tce init DIR' to create one")
    return settings_module.load(path)


def main(argv: list[str] | None = None) -> int:
    """Run ``tce``; returns the exit status instead of exiting so tests can call it."""
    parser, warnings = build_parser()
    for warning in warnings:
        print(f"tce: warning: {warning}", file=sys.stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("tce: error: a command is required; see 'tce --help'", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or EXIT_OK)
    except ConfigError as exc:
        print(f"tce: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"tce: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("tce: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
