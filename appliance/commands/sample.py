"""``tce sample OUT [--seed N] [--large]``: write the synthetic sample studies to a folder.

The sample is what the README quick start, the demo and the tests feed to ``tce deidentify``:
four fictitious patients with PHI planted where anonymizers tend to miss it, laid out like a
real export (nested folders, repeated file names, one study without ``.dcm`` extensions) plus
one non-DICOM file and one truncated file, so the first run shows skipping and quarantine too.
It needs no configuration: it touches no key ring, database or working folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LAYOUT = "nested"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "sample", help="write synthetic sample studies (fictitious patients) to OUT",
        description="Write the synthetic sample: four fictitious patients, five studies, 22"
                    " instances of seven SOP classes, with PHI planted in names, IDs, free text,"
                    " sequences, private tags and burned-in pixels, plus one non-DICOM file and"
                    " one truncated file. The same seed always gives byte-identical files.")
    parser.add_argument("out", metavar="OUT", type=Path, help="folder to write the sample into")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="choose other fictitious patients and UIDs (default: 0)")
    parser.add_argument("--large", action="store_true",
                        help="512x512 images instead of 64x64 (about 10 MB instead of 0.4 MB)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.cli import CommandError
    from appliance.synthetic import NOTES_FILE, write_sample

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} exists and is not a folder; choose a folder for the sample")
    if out.is_dir() and any(out.iterdir()):
        raise CommandError(f"{out} is not empty; choose a new or empty folder so the sample is"
                           " not mixed with other files")
    try:
        paths = write_sample(out, seed=args.seed, small=not args.large, layout=LAYOUT)
    except OSError as exc:
        raise CommandError(f"cannot write the sample to {out}: {exc.strerror or exc}; choose a"
                           " writable folder") from None
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} DICOM files ({size / 1e6:.1f} MB) of fictitious patients to {out},"
          f" plus {NOTES_FILE} (not DICOM) and one truncated file")
    print(f"next: tce deidentify {out} OUT --policy ps315-basic")
    return 0
