"""``tce verify DIR [--policy P] [--originals] [--ocr]``: check output, report, exit status.

The checks live in :mod:`appliance.verify`; this module parses the arguments, loads the policy
(and, for ``--originals``, stage 1's configuration, key ring and database), prints the human
summary or the JSON report, and turns the result into the exit status: 0 nothing wrong (warnings
for review allowed), 1 a leak or an integrity error, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance.settings import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "verify", help="check de-identified output for residual PHI and broken references",
        description="Check every file under DIR (DICOMDIRs included) against the policy that"
                    " produced it: removed and emptied attributes, private attributes, UID"
                    " remapping and references, de-identification markers, age bands and date"
                    " forms; flag free text and images for review. With --originals (stage 1,"
                    " needs its key ring and database from --config/TCE_CONFIG), also search"
                    " every byte for the original identifiers stage 1 sealed. With --ocr, read"
                    " the pixels with Tesseract for burned-in text.",
        epilog="Exit status: 0 nothing wrong (warnings for review allowed), 1 a leak or an"
               " integrity error, 2 bad usage or configuration.")
    parser.add_argument("dir", metavar="DIR", type=Path,
                        help="folder of de-identified output (or PDI media with a DICOMDIR)")
    parser.add_argument("--policy", metavar="P",
                        help="built-in policy id or policy YAML file the output was made with"
                             " (default: the policy each file names in its"
                             " De-identification Method)")
    parser.add_argument("--originals", action="store_true",
                        help="stage 1 only: unseal the originals behind the pseudonyms and"
                             " search every byte of the output for them")
    parser.add_argument("--ocr", action="store_true",
                        help="also read the first frame of every image with Tesseract and"
                             " report burned-in text (counts only, never the words); needs"
                             " tesseract installed")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of the summary")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="also write the JSON report to FILE (no PHI)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.cli import CommandError, load_settings
    from appliance.verify import load_originals, verify_output
    from appliance.verify.ocr import tesseract_version
    from policies.loader import PolicyError, resolve_policy

    root = args.dir.expanduser().absolute()
    if root.is_file() and root.name.upper().startswith("DICOMDIR"):
        root = root.parent  # a DICOMDIR names its medium
    if not root.is_dir():
        raise ConfigError(f"DIR {args.dir} is not a folder; give the output folder (or the"
                          " medium holding the DICOMDIR)")
    policy = None
    if args.policy is not None:
        try:
            policy = resolve_policy(args.policy)
        except PolicyError as exc:
            raise ConfigError(f"--policy: {exc}") from None
    if args.ocr:
        tesseract_version()  # exit 2 before unsealing anything if Tesseract is missing
    originals = load_originals(load_settings(args)) if args.originals else None
    try:
        report = verify_output(root, policy=policy, originals=originals, ocr=args.ocr)
    except OSError as exc:
        raise CommandError(f"cannot read {exc.filename or root}: {exc.strerror}") from None
    finally:
        del originals  # the unsealed values go out of scope as soon as possible
    document = report.to_json()
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        report.print_summary(sys.stdout)
    if args.report is not None:
        _write(args.report, document)
        if not args.json:
            print(f"report: {args.report}")
    return report.exit_status


def _write(path: Path, document: dict[str, object]) -> None:
    from appliance.cli import CommandError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CommandError(f"cannot write the report {path}: {exc.strerror}") from None
