"""PS3.10 File IDs: the only path names a DICOM File-set may use.

Why a module of its own: the rules (PS3.10 §8.2, PS3.12 for ISO 9660) are easy to break by
accident - a ".dcm" extension, a lower-case letter, a ninth level - and a reader on another
system may then fail to open the medium. Every name the writer creates comes from
`sequential_names()`, and both the writer and the tests check paths with
`is_conformant_file_id()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

MAX_COMPONENT_LENGTH = 8
MAX_LEVELS = 8
_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")


def is_conformant_component(name: str) -> bool:
    """True if `name` is 1-8 characters from A-Z, 0-9 and underscore (no dot, no extension)."""
    return _COMPONENT.fullmatch(name) is not None


def is_conformant_file_id(components: Sequence[str] | str | PurePosixPath) -> bool:
    """True if a File ID has 1-8 components that are each conformant.

    Accepts the (0004,1500) value as a list of components, a single component, or a
    relative POSIX path such as "DICOM/PT000001/ST000001/SE000001/IM000001".
    """
    if isinstance(components, PurePosixPath):
        parts: Sequence[str] = components.parts
    elif isinstance(components, str):
        parts = PurePosixPath(components).parts if "/" in components else [components]
    else:
        parts = components
    if not 1 <= len(parts) <= MAX_LEVELS:
        return False
    return all(is_conformant_component(part) for part in parts)


def numbered_name(prefix: str, number: int) -> str:
    """PREFIX + `number` zero-padded to exactly 8 characters, e.g. ("IM", 7) -> "IM000007".

    The prefix says what the level holds (PT, ST, SE, IM, ...) so a person browsing the medium
    can find their way; the number keeps names unique within one directory. Raises ValueError
    rather than ever producing a 9-character name.
    """
    if not prefix or not is_conformant_component(prefix) or len(prefix) >= MAX_COMPONENT_LENGTH:
        raise ValueError(f"File ID prefix must be 1-7 characters of A-Z 0-9 _, not {prefix!r}")
    width = MAX_COMPONENT_LENGTH - len(prefix)
    if not 0 <= number < 10**width:
        raise ValueError(f"{number} does not fit in a File ID component with prefix {prefix!r}")
    return f"{prefix}{number:0{width}d}"


def sequential_names(prefix: str) -> Iterator[str]:
    """Yield numbered_name(prefix, 1), numbered_name(prefix, 2), ... until the names run out."""
    number = 1
    while True:
        yield numbered_name(prefix, number)
        number += 1


def file_id_path(root: Path, components: Sequence[str]) -> Path:
    """The local path of a File ID under the File-set root."""
    return root.joinpath(*components)


def file_id_of(root: Path, path: Path) -> list[str]:
    """The File ID components of `path` relative to the File-set root."""
    return list(path.relative_to(root).parts)
