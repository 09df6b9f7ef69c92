"""``tce init DIR``: a commented tce.yaml, a private key ring and the working folders of one node.

The configuration file is generated from the settings model (every value is its default, every
line carries the model's doc), so it always lists every setting the installed version knows.
Each node gets its own key ring: stage 1 and stage 2 must never share one in production, or the
research site could re-identify what the hospital pseudonymized. An existing key ring is never
overwritten, not even with ``--force``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import yaml

from appliance import settings as settings_module
from appliance.keys import KeyRing
from appliance.settings import ROLES, Settings, field_default, iter_model, yaml_value

CONFIG_NAME = "tce.yaml"
CONFIG_MODE = 0o640  # may hold a database URL with a password: not world-readable
FOLDER_MODE = 0o700  # spool and stores hold (pseudonymized) patient data
SECTIONS_FOR_ROLE = {
    "all": ("stage1", "stage2", "receiver"),
    "stage1": ("stage1",),
    "stage2": ("stage2",),
    "receiver": ("receiver",),
}
ROLES_WITH_KEYS = ("all", "stage1", "stage2")  # the Receiver only stores anonymized data


class InitRefused(Exception):
    """``tce init`` would overwrite something; nothing was written."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "init", help="create a configuration, key ring and working folders in DIR",
        description="Create DIR/tce.yaml (every setting, commented, at its default), a key ring"
                    " (mode 0600) and the working folders. Stage 1 and stage 2 never share a key"
                    " ring in production: run 'tce init' on each machine with its own --role.")
    parser.add_argument("dir", metavar="DIR", type=Path, help="folder for this node")
    parser.add_argument("--role", choices=ROLES, default="all",
                        help="what this node runs (default: all, for a demo on one machine)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing tce.yaml (an existing key ring is kept)")
    parser.set_defaults(func=run)


def render_config(role: str) -> str:
    """tce.yaml text for ``role``: every setting at its default, each with its doc as a comment."""
    sections = SECTIONS_FOR_ROLE[role]
    lines = [
        f"# tce.yaml: one tce-appliance node (created by 'tce init --role {role}').",
        "# Every setting is shown at its default; delete a line to keep the default.",
        "# work_dir is relative to this file's folder; other relative paths to work_dir.",
        "# Unknown keys are errors, so a misspelt setting is never silently ignored.",
    ]
    for key, f, tp in iter_model():
        depth = key.count(".")
        top = key.split(".", 1)[0]
        if top in SECTIONS_FOR_ROLE["all"] and top not in sections:
            continue
        indent = "  " * depth
        name = key.rsplit(".", 1)[-1]
        if is_dataclass(tp):
            if depth == 0:
                lines.append("")
            lines.append(f"{indent}# {f.metadata['doc']}")
            lines.append(f"{indent}{name}:")
            continue
        value: Any = role if key == "role" else field_default(f)
        lines.append(f"{indent}# {f.metadata['doc']}")
        lines.append(f"{indent}{name}: {yaml_value(value)}")
    return "\n".join(lines) + "\n"


def _write_config(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONFIG_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), CONFIG_MODE)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def initialise(directory: Path, role: str = "all", force: bool = False) -> list[str]:
    """Create the node in ``directory``; returns report lines. Raises InitRefused, OSError."""
    directory = directory.expanduser().absolute()
    config = directory / CONFIG_NAME
    text = render_config(role)
    # Settings as the node will see them: validates the generated text and gives the paths.
    planned: Settings = settings_module.from_mapping(
        yaml.safe_load(text), base_dir=directory, path=config, environ={})
    ring_path = planned.key_ring
    wants_ring = role in ROLES_WITH_KEYS

    if config.exists() and not force:
        raise InitRefused(f"{config} already exists; pass --force to replace it with a fresh one"
                          " (an existing key ring is kept)")
    if wants_ring and ring_path.exists() and not force:
        raise InitRefused(
            f"key ring {ring_path} already exists; pass --force to write a new {CONFIG_NAME}"
            " and keep this key ring (it is never overwritten)")
    existing_ring = KeyRing.load(ring_path) if wants_ring and ring_path.exists() else None

    report: list[str] = []
    directory.mkdir(parents=True, exist_ok=True)
    _write_config(config, text)
    report.append(f"wrote {config} (role: {role}, mode {CONFIG_MODE:04o})")
    if existing_ring is not None:
        report.append(
            f"kept key ring {ring_path} (key {existing_ring.active_key_id}): a key ring is never"
            " overwritten, because replacing it would unlink new pseudonyms from earlier ones and"
            " make sealed originals unrecoverable")
    elif wants_ring:
        ring = KeyRing.create(ring_path)
        report.append(f"created key ring {ring_path} (mode 0600, key {ring.active_key_id})")
    for folder in planned.directories():
        if _make_private_dirs(folder):
            report.append(f"created folder {folder}")
    return report


def _make_private_dirs(folder: Path) -> list[Path]:
    """mkdir -p with mode 0700 for every folder it creates; returns the ones it created."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=FOLDER_MODE)
        os.chmod(path, FOLDER_MODE)
    return missing[::-1]


def run(args: argparse.Namespace) -> int:
    from appliance.cli import CommandError

    try:
        report = initialise(args.dir, role=args.role, force=args.force)
    except InitRefused as exc:
        raise CommandError(f"{exc}; nothing was changed") from None
    except OSError as exc:
        raise CommandError(f"cannot create the node in {args.dir}: {exc}") from None
    for line in report:
        print(line)
    config = args.dir.expanduser().absolute() / CONFIG_NAME
    print()
    print("Next steps:")
    print(f"  export TCE_CONFIG={config}")
    print(f"  review {config} (AE titles, ports, allowed_callers)")
    if args.role in ROLES_WITH_KEYS:
        print("  back up the key ring somewhere safe: without it pseudonyms cannot be reproduced")
    if args.role == "all":
        print("  role 'all' is for demos: in production run 'tce init --role stage1' at the"
              " hospital and 'tce init --role stage2' at the research site (separate key rings)")
    return 0
