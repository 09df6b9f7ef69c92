"""What the demo prints besides the commands' own output: short, numbered, copy-pasteable.

Kept apart from :mod:`appliance.demo.run` so the orchestration reads as the list of steps, and
because these texts are what a user sees first of the product: each line says what happened
and where to look, with paths relative to the current folder when they are under it.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

INDENT = "    "
PREVIEW_KEPT = ("series ", "  age", "  date shift", "  changes", "  warnings", "    !",
                "study warnings", "  !", "job ", "policy ")


def say(text: str = "") -> None:
    """One line to the user, flushed at once (a pipe must see progress as it happens)."""
    print(text, flush=True)


def indented(lines: Iterable[str]) -> None:
    for line in lines:
        say(f"{INDENT}{line}" if line else "")


def shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else absolute."""
    try:
        relative = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(relative) if str(relative) != "." else "."


def command_line(config: Path | None, args: Sequence[str]) -> str:
    """The shell command equivalent to an in-process ``tce`` call."""
    prefix = f"TCE_CONFIG={shlex.quote(shown(config))} " if config is not None else ""
    return f"$ {prefix}tce {shlex.join(args)}"


def describe_sample(datasets: Sequence[Dataset], complete: int, folder: Path) -> list[str]:
    """Counts of patients, studies and SOP classes: no patient data."""
    patients = len({str(ds.PatientID) for ds in datasets})
    studies = len({str(ds.StudyInstanceUID) for ds in datasets})
    classes = Counter(UID(str(ds.SOPClassUID)).name.removesuffix(" Storage") for ds in datasets)
    frames = {UID(str(ds.SOPClassUID)).name.removesuffix(" Storage"): int(ds.NumberOfFrames)
              for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1}
    burned = sum(1 for ds in datasets if str(ds.get("BurnedInAnnotation", "")).upper() == "YES")
    kinds = []
    for name, count in classes.most_common():
        extra = f" (multi-frame, {frames[name]} frames)" if name in frames else ""
        kinds.append(f"{count} {name}{extra}")
    return [
        f"{complete} DICOM files of {patients} fictitious patients, {studies} studies,"
        f" in {shown(folder)}/",
        *wrap("kinds: " + ", ".join(kinds)),
        *wrap("identifiers planted in names, IDs, addresses, nested sequences (3 levels deep),"
              " private tags, free text, SR content and presentation-state text"),
        *wrap(f"{burned} secondary capture flagged BurnedInAnnotation=YES; plus one text file"
              " and one truncated file, as real exports have"),
    ]


def wrap(text: str, width: int = 92) -> list[str]:
    """``text`` in lines of at most ``width`` characters, continuation lines indented."""
    lines, current = [], ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = "  " + word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


def condensed_preview(text: str) -> list[str]:
    """The preview's per-series summary and its warnings; attribute rows are left out."""
    return [line for line in text.splitlines() if line.startswith(PREVIEW_KEPT)]


def keep_running_help(stage1: str, receiver: str, host: str, ports: tuple[int, int],
                      configs: dict[str, Path], media: Path) -> list[str]:
    """How to use the nodes left running: AE titles, ports and commands to try."""
    port1, port_rx = ports
    media2 = shown(media.with_name(media.name + "2"))
    env = {role: f"TCE_CONFIG={shlex.quote(shown(path))}" for role, path in configs.items()}
    return [
        "Nodes left running; send your own files with any DICOM tool:",
        f"  stage 1   AE title {stage1:<13} host {host}  port {port1}"
        "   (pseudonymizes what it receives)",
        f"  Receiver  AE title {receiver:<13} host {host}  port {port_rx}"
        "   (stores what stage 2 exports)",
        "",
        "Try (dcmtk; any C-STORE SCU works, with any calling AE title):",
        f"  echoscu -aec {stage1} {host} {port1}",
        f"  storescu -aec {stage1} +sd +r {host} {port1} /path/to/your/dicom/folder",
        f"  {env['stage1']} tce stage1 media write {media2} --all",
        f"  {env['stage2']} tce stage2 import {media2}",
        f"  {env['stage2']} tce stage2 approve --all-pending --policy research-age-band-5y"
        " --approver you",
        f"  {env['stage2']} tce stage2 export",
        f"  {env['receiver']} tce receiver studies",
        "",
        "Press Ctrl-C (or send SIGTERM) to stop the nodes.",
    ]
