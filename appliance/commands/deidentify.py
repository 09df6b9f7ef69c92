"""``tce deidentify IN OUT --policy P``: offline batch de-identification of a folder or DICOMDIR.

The runner is :mod:`appliance.batch`; this module checks the arguments against the
configuration, draws the progress line, prints the summary and the ``--dry-run`` preview, and
writes the ``--report`` file.

The preview is the one place where original values are shown: an operator checking a policy
against their own data needs to see what changes. It goes to the terminal (stdout) only; it is
never logged and never part of the report, which identifies files by a hash of their path.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from appliance.batch import BatchReport, iter_sources, run_batch
from appliance.batch_worker import InvalidInstance, NotDicom, read_instance
from appliance.diff import diff_rows
from appliance.settings import ConfigError
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.model import Policy
from policies.outcome import PolicyRefusal

PROGRESS_INTERVAL = 0.2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "deidentify", help="de-identify a folder or DICOMDIR into OUT (offline batch)",
        description="De-identify every DICOM file under IN (a folder, searched recursively, or"
                    " a DICOMDIR) with policy P and write OUT/<study>/<series>/<instance>.dcm,"
                    " named by the new UIDs. Files that cannot be processed are copied to the"
                    " quarantine folder of the configuration, never to OUT; non-DICOM files are"
                    " skipped. The key ring and quarantine folder come from --config/TCE_CONFIG.",
        epilog="Exit status: 0 all processed, 1 something was quarantined or failed,"
               " 2 bad usage or configuration.")
    parser.add_argument("input", metavar="IN", type=Path, help="folder or DICOMDIR file to read")
    parser.add_argument("output", metavar="OUT", type=Path, help="folder to write into")
    parser.add_argument("--policy", required=True, metavar="P",
                        help="built-in policy id (see 'tce policy list') or a policy YAML file")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                        help="worker processes (default 1; 0 = one per CPU)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write nothing (not even to the quarantine); show what would change"
                             " in the first --sample instances and what would be quarantined")
    parser.add_argument("--sample", type=int, default=1, metavar="N",
                        help="instances to preview with --dry-run (default 1)")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="write a JSON report (counts, actions per attribute, reasons; no"
                             " PHI); written with --dry-run too")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line, even on a terminal")
    parser.add_argument("--no-sync", action="store_true",
                        help="do not flush OUT to disk at the end (faster; a crash soon after"
                             " the run may lose its newest files)")
    parser.set_defaults(func=run)
    _register_sample_command(subparsers)


def _register_sample_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Offer ``tce sample`` until the command registry lists it itself."""
    from appliance.commands import COMMAND_MODULES

    if "appliance.commands.sample" not in COMMAND_MODULES:
        from appliance.commands import sample

        sample.register(subparsers)


def run(args: argparse.Namespace) -> int:
    from appliance.cli import CommandError, load_settings
    from appliance.keys import KeyRing
    from policies.loader import PolicyError, resolve_policy

    settings = load_settings(args)
    try:
        policy = resolve_policy(args.policy)
    except PolicyError as exc:
        raise ConfigError(f"--policy: {exc}") from None
    keys = KeyRing.load(settings.key_ring).engine_keys()
    in_path, out_dir = _check_paths(args.input, args.output, settings.quarantine_dir)
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    if args.sample < 0:
        raise ConfigError("--sample must be 0 or more")

    if not args.dry_run:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"cannot create OUT {out_dir}: {exc.strerror}") from None
    show = not args.no_progress and sys.stderr.isatty()
    bar = Progress(sys.stderr) if show else None
    try:
        if args.dry_run:
            preview(in_path, policy, keys, args.sample, sys.stdout)
        report = run_batch(in_path, None if args.dry_run else out_dir, policy, keys,
                           settings.quarantine_dir, jobs=jobs, progress=bar,
                           sync=not args.no_sync)
    except (OSError, ValueError) as exc:  # e.g. a DICOMDIR that cannot be read
        raise CommandError(f"cannot read IN {in_path}: {exc}; check that it is a folder or"
                           " a readable DICOMDIR") from None
    finally:
        if bar is not None:
            bar.clear()
    print_summary(report, sys.stdout)
    if args.report is not None:
        write_report(report, args.report)
        print(f"report: {args.report}")
    if report.aborted:
        raise CommandError(f"stopped early: {report.aborted}; free space or fix permissions on"
                           f" {out_dir}, then run again into a new OUT")
    return 0 if report.ok else 1


def _check_paths(in_path: Path, out_dir: Path, quarantine: Path) -> tuple[Path, Path]:
    in_path, out_dir = in_path.expanduser().absolute(), out_dir.expanduser().absolute()
    if not in_path.exists():
        raise ConfigError(f"IN {in_path} does not exist; give a folder or a DICOMDIR file")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"OUT {out_dir} exists and is not a folder; give a folder")
    real_in, real_out = os.path.realpath(in_path), os.path.realpath(out_dir)
    if real_in == real_out:
        raise ConfigError("IN and OUT are the same folder; write to a separate OUT folder")
    real_q = os.path.realpath(quarantine)
    if real_q == real_out or real_q.startswith(real_out + os.sep):
        raise ConfigError(f"the quarantine folder {quarantine} is inside OUT; quarantined files"
                          " still hold PHI, so choose an OUT outside it")
    return in_path, out_dir


# --- progress and summary -----------------------------------------------------------------------


class Progress:
    """A one-line ``\\r`` progress display: files done/total, percentage, rate."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.width = 0

    def __call__(self, done: int, total: int, bytes_in: int, elapsed: float) -> None:
        now = time.monotonic()
        if done < total and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        rate = done / elapsed if elapsed > 0 else 0.0
        mb = bytes_in / 1e6 / elapsed if elapsed > 0 else 0.0
        pct = 100 * done // total if total else 100
        line = f"{done}/{total} files  {pct:3d}%  {rate:.1f} files/s  {mb:.1f} MB/s"
        self.width = max(self.width, len(line))
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def print_summary(report: BatchReport, out: TextIO) -> None:
    would = "would be " if report.dry_run else ""
    policy = report.policy
    per_second, mb_per_second = report.throughput()
    lines = [
        f"{'dry run' if report.dry_run else 'done'}: policy {policy.id} v{policy.version}"
        f" (sha256 {policy.digest[:12]})",
        f"  files          {report.files}",
        f"  instances      {report.instances} {would}written ({len(report.studies)} studies,"
        f" {len(report.series)} series)",
        f"  quarantined    {report.quarantined} {would or ''}copied to {report.quarantine_dir}",
        f"  skipped        {report.not_dicom} not DICOM, {report.dicomdirs} DICOMDIR,"
        f" {report.duplicates} duplicate",
        f"  failed         {report.failed}",
        f"  elapsed        {report.elapsed:.2f} s ({per_second:.1f} instances/s,"
        f" {mb_per_second:.1f} MB/s)",
    ]
    reasons = report.problem_reasons()
    if reasons:
        lines.append("  reasons:")
        lines += [f"    {n} x {reason}" for reason, n in reasons.most_common()]
    if report.aborted:
        lines.append(f"  STOPPED EARLY: {report.aborted}")
    print("\n".join(lines), file=out)


def write_report(report: BatchReport, path: Path) -> None:
    from appliance.cli import CommandError

    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CommandError(f"cannot write the report {path}: {exc.strerror}") from None


# --- dry-run preview (terminal only: shows values) ----------------------------------------------


def preview(in_path: Path, policy: Policy, keys: EngineKeys, count: int, out: TextIO) -> int:
    """Print the per-attribute diff of the first ``count`` instances; returns how many shown."""
    if count == 0:
        return 0
    engine = Deidentifier(policy, keys)
    root = in_path if in_path.is_dir() else in_path.parent
    _, sources = iter_sources(in_path)
    shown = 0
    for source in sources:
        try:
            ds = read_instance(source.path)
        except (OSError, NotDicom, InvalidInstance):  # NotDicom covers a DICOMDIR too
            continue
        before = copy.deepcopy(ds)
        name = os.path.relpath(source.path, root)
        try:
            outcome = engine.deidentify(ds)
        except PolicyRefusal as exc:
            print(f"\n== {name}: refused by policy: {exc}", file=out)
            continue
        rows = diff_rows(before, ds, outcome)
        print(f"\n== {name} ({len(rows)} attributes change)", file=out)
        for path, code, old, new in rows:
            print(f"  {code:<9} {path}\n            {old}  ->  {new}", file=out)
        shown += 1
        if shown >= count:
            break
    print("\n(values above are shown on this terminal only; they are not logged or reported)\n",
          file=out)
    return shown

