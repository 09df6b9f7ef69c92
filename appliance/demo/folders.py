"""The demo folder: one node folder per role made by ``tce init``, plus sample, media and logs.

Why separate node folders: stage 1 and stage 2 must never share a key ring in production (the
research site could then re-identify what the hospital pseudonymized), so the demo builds them
as production does, with ``tce init --role stage1`` and ``--role stage2``, rather than with
``--role all``. The demo changes only ports and log files, and edits those lines of the generated
``tce.yaml`` in place, so each file keeps the comment that explains every setting.

A folder is reused only if an earlier ``tce demo`` made it (it holds :data:`MARKER`); anything
else that is not empty is refused, so a mistyped path can never delete a user's files.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.settings import Settings, load, yaml_value

MARKER = ".tce-demo"
ROLES = ("stage1", "stage2", "receiver")
_MAPPING_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


class DemoFolderError(Exception):
    """The demo folder cannot be used; nothing was changed."""


@dataclass(frozen=True)
class DemoFolders:
    """Where everything of one demo run lives, under :attr:`root`."""

    root: Path

    def node(self, role: str) -> Path:
        return self.root / role

    def config(self, role: str) -> Path:
        return self.node(role) / "tce.yaml"

    def settings(self, role: str) -> Settings:
        return load(self.config(role), environ={})

    @property
    def sample(self) -> Path:
        return self.root / "sample"

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, role: str) -> Path:
        return self.logs / f"{role}.log"

    @property
    def verify_report(self) -> Path:
        return self.root / "verify.json"

    def prepare(self) -> bool:
        """Create an empty :attr:`root`; True when an earlier demo's folder was replaced."""
        root = self.root
        replaced = False
        if root.exists() and not root.is_dir():
            raise DemoFolderError(f"{root} exists and is not a folder; choose another folder")
        if root.is_dir() and any(root.iterdir()):
            if not (root / MARKER).is_file():
                raise DemoFolderError(
                    f"{root} is not empty and was not made by 'tce demo'; choose a new or empty"
                    " folder (the demo deletes and recreates its own folder only)")
            shutil.rmtree(root)
            replaced = True
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("made by 'tce demo'; it may delete this folder on its next"
                                   " run\n", encoding="utf-8")
        self.logs.mkdir(exist_ok=True)
        return replaced


def set_values(config: Path, values: Mapping[str, Any]) -> None:
    """Set ``dotted.key: value`` lines of a generated tce.yaml in place, keeping its comments.

    Only keys that are already present can be set (``tce init`` writes every key), and the
    result is loaded with the strict settings loader, so a wrong key or value fails here.
    """
    lines = config.read_text(encoding="utf-8").splitlines()
    pending = dict(values)
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for number, line in enumerate(lines):
        match = _MAPPING_LINE.match(line)
        if match is None:
            continue
        indent, key = len(match["indent"]), match["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), key])
        if path in pending:
            lines[number] = f"{match['indent']}{key}: {yaml_value(pending.pop(path))}"
        elif not match["rest"].strip():
            stack.append((indent, key))
    if pending:
        raise KeyError(f"{config}: no setting {', '.join(sorted(pending))} to change")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    load(config, environ={})  # strict: raises SettingsError naming the key path
