"""``tce demo``: a generated sample through stage 1, PDI media, stage 2 and the Receiver.

The steps are the ones an operator takes, in the order they take them, and each is done by the
product's own command (``tce init``, ``tce stage1 media write``, ``tce stage2 import``,
``preview``, ``approve``, ``export``, ``tce verify``), run in this process through
:func:`appliance.cli.main` and shown as the shell command it equals. Stage 1 and the Receiver run
as real ``serve`` processes (:mod:`appliance.demo.nodes`). The demo then checks what an auditor
would: every complete file reached the media, everything the policy allows reached the
Receiver, ``tce verify`` passes, and none of the identifiers planted in the sample is found in
any byte of the media, stage 2, the Receiver or the logs. Any failure makes the exit status 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import func, select

from appliance.demo.folders import DemoFolders, set_values
from appliance.demo.nodes import NodeError, NodeProcess
from appliance.demo.present import (
    command_line,
    condensed_preview,
    describe_sample,
    indented,
    keep_running_help,
    say,
    shown,
    wrap,
)
from appliance.demo.scan import ENCODINGS, scan_folders
from appliance.demo.sender import send_folder
from appliance.demo.table import find_instance, format_table, structure_key
from appliance.settings import DATABASE_URL_ENV

POLICY = "research-age-band-5y"
APPROVER = "Demo Privacy Officer"
SENDER_AE = "TCE_DEMO_SCU"
NODE_ROLES = {"stage1": "hospital side: receives, pseudonymizes, writes PDI media",
              "stage2": "research side: imports media, waits for approval, exports",
              "receiver": "stores what stage 2 exports"}


class DemoFailed(Exception):
    """A step did not do what it must; the message says which and why."""


class Terminated(BaseException):
    """SIGTERM arrived before the end: unwind, so the nodes are stopped, not orphaned."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """The nodes run in sessions of their own, so this process must stop them on SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Demo:
    folders: DemoFolders
    seed: int = 0
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    number: int = 0

    # -- plumbing ------------------------------------------------------------------------------
    def step(self, title: str) -> None:
        self.number += 1
        say()
        say(f"{self.number:>2}. {title}")

    def tce(self, role: str | None, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        """Run ``tce ARGS`` in this process against a node's config; show it and its output."""
        from appliance.cli import main

        config = self.folders.config(role) if role else None
        indented([command_line(config, args)])
        out = io.StringIO()
        argv = [*(["--config", str(config)] if config else []), *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
        text = out.getvalue().rstrip("\n")
        if code not in ok:
            indented(text.splitlines())
            raise DemoFailed(f"'tce {' '.join(args)}' exited with status {code}")
        return code, text

    # -- steps -----------------------------------------------------------------------------------
    def make_nodes(self) -> None:
        self.step("Node folders: 'tce init' for each role (stage 1 and 2 get separate key rings)")
        for role, what in NODE_ROLES.items():
            self.tce(None, "init", shown(self.folders.node(role)), "--role", role)
            set_values(self.folders.config(role), {"log_file": f"../logs/{role}.log"})
            indented([f"  {role:<9} {shown(self.folders.node(role))}/  ({what})"])

    def make_sample(self) -> list[pydicom.Dataset]:
        from appliance.synthetic import make_sample_study_set, write_datasets

        self.step("Sample: fictitious patients with identifiers planted where anonymizers miss"
                  " them")
        datasets = make_sample_study_set(self.seed)
        paths = write_datasets(datasets, self.folders.sample, layout="nested")
        indented(describe_sample(datasets, len(paths), self.folders.sample))
        return datasets

    def start_nodes(self) -> None:
        self.step("Start stage 1 and the Receiver on free loopback ports")
        for role, label in (("stage1", "stage 1"), ("receiver", "Receiver")):
            node = NodeProcess.start(role, self.folders.config(role),
                                     output=self.folders.logs / f"{role}-serve.out")
            self.nodes[role] = node
            indented([f"{label:<9} {node.address}  answers C-ECHO (pid {node.proc.pid})"])
        rx = self.nodes["receiver"]
        set_values(self.folders.config("stage2"), {"stage2.receiver.ae_title": rx.ae_title,
                                                   "stage2.receiver.host": rx.host,
                                                   "stage2.receiver.port": rx.port})
        indented([f"stage 2 is configured to export to {rx.address}"
                  f" ({shown(self.folders.config('stage2'))})"])

    def send(self, complete: int) -> None:
        node = self.nodes["stage1"]
        self.step(f"Send the sample to stage 1 by C-STORE (pynetdicom, calling AE {SENDER_AE})")
        report = send_folder(self.folders.sample, node.host, node.port, node.ae_title,
                             calling=SENDER_AE)
        indented(report.summary(self.folders.sample))
        quarantined = [p for p in self.folders.settings("stage1").quarantine_dir.rglob("*")
                       if p.is_file() and not p.name.endswith(".json")]
        if report.refused:
            indented(wrap(f"stage 1 answered a failure status for what it could not decode"
                          f" and keeps it in its quarantine ({len(quarantined)} file(s))"))
        if len(report.stored) != complete:
            raise DemoFailed(f"stage 1 stored {len(report.stored)} of the {complete} complete"
                             " DICOM files of the sample")

    def write_media(self, complete: int) -> None:
        self.step("Stage 1 writes IHE PDI media (DICOMDIR + DICOM/ + README.TXT + INDEX.HTM)")
        _, text = self.tce("stage1", "stage1", "media", "write", shown(self.folders.media),
                           "--all")
        indented(text.splitlines())
        files = [p for p in (self.folders.media / "DICOM").rglob("*") if p.is_file()]
        if not (self.folders.media / "DICOMDIR").is_file() or len(files) != complete:
            raise DemoFailed(f"the media hold {len(files)} of {complete} instances")

    def import_media(self) -> None:
        self.step("Stage 2 imports the media: one job per study, pending approval")
        _, text = self.tce("stage2", "stage2", "import", shown(self.folders.media))
        indented(line for line in text.splitlines() if "next:" not in line)

    def preview(self, first: pydicom.Dataset) -> None:
        key = structure_key(first)
        on_media = find_instance(self.folders.media / "DICOM", key) if key else None
        if on_media is None:
            raise DemoFailed("the first CT of the sample is not on the media")
        job = self._job_of(str(on_media.StudyInstanceUID))
        self.step(f"Preview what {POLICY} would change in the first patient's CT study")
        _, text = self.tce("stage2", "stage2", "preview", job, "--policy", POLICY)
        kept = condensed_preview(text)
        indented(kept)
        indented([f"(per-series summary; the full preview lists every attribute with before"
                  f" and after values: {len(text.splitlines())} lines, on the terminal only)"])

    def approve(self) -> None:
        self.step(f"A privacy officer approves {POLICY} for every pending study")
        _, text = self.tce("stage2", "stage2", "approve", "--all-pending", "--policy", POLICY,
                           "--approver", APPROVER)
        indented(text.splitlines())

    def export(self, expected: int, burned: int) -> None:
        self.step("Stage 2 anonymizes and exports to the Receiver (C-STORE)")
        code, text = self.tce("stage2", "stage2", "export", ok=(0, 1))
        indented(text.splitlines())
        sent, failed = self._send_counts()
        received = self._received_files()
        if burned:
            indented([f"held for review: {failed} instance(s) flagged BurnedInAnnotation=YES;"
                      f" {POLICY} requests Clean Pixel Data, which this release does not"
                      " perform, so they stay in stage 2 (see 'tce stage2 jobs')"])
        if sent != expected or failed != burned or len(received) != expected \
                or (code == 1 and not burned):
            raise DemoFailed(f"export: {sent} sent, {failed} held, {len(received)} at the"
                             f" Receiver; expected {expected} sent and {burned} held")

    def verify(self) -> bool:
        self.step("Verify the Receiver's store with 'tce verify'")
        store = self.folders.settings("receiver").receiver.store_dir
        code, text = self.tce("receiver", "verify", shown(store), "--policy", POLICY,
                              "--report", shown(self.folders.verify_report), ok=(0, 1))
        indented(text.splitlines())
        if code != 0:
            self.problems.append(f"tce verify exited with status {code}")
        return code == 0

    def before_after(self, first: pydicom.Dataset, datasets: list[pydicom.Dataset],
                     verified: bool) -> None:
        from appliance.synthetic import original_uids, planted_phi, sample_patients

        self.step("Before and after: the first CT of the first patient")
        key = structure_key(first)
        store = self.folders.settings("receiver").receiver.store_dir
        columns = [("original", first),
                   ("after stage 1 (media)", find_instance(self.folders.media, key)
                    if key else None),
                   ("after stage 2 (Receiver)", find_instance(store, key) if key else None)]
        indented(format_table(columns))
        planted = planted_phi(sample_patients(self.seed))
        uids = sorted(original_uids(datasets))
        roots = [self.folders.media, self.folders.node("stage2"), self.folders.node("receiver"),
                 self.folders.logs]
        result = scan_folders(roots, [*planted, *uids])
        say()
        indented([f"planted identifiers found: {result.found}"])
        indented(wrap(f"({len(planted)} planted values and {len(uids)} original UIDs, each in"
                      f" {len(ENCODINGS)} encodings, searched in every byte of {result.files}"
                      f" files under {', '.join(shown(r) + '/' for r in roots)})"))
        for where, found in sorted(result.hits.items()):
            indented([f"  LEAK in {where}: {', '.join(found)}"])
        if result.found:
            self.problems.append(f"{result.found} planted identifier(s) found")
        indented([f"verify: {'passed' if verified else 'FAILED'}"])

    # -- helpers ---------------------------------------------------------------------------------
    def _stage2_rows(self, query: Any) -> list[Any]:
        """Rows from stage 2's database, read with an engine of its own (closed at once)."""
        from appliance.db import make_engine

        engine = make_engine(str(self.folders.settings("stage2").database_url))
        try:
            with engine.connect() as conn:
                return list(conn.execute(query).all())
        finally:
            engine.dispose()

    def _job_of(self, study_uid: str) -> str:
        """The stage-2 job id of a study (shorter to type than its UID)."""
        from appliance.models import Job

        rows = self._stage2_rows(select(Job.id).where(Job.study_instance_uid == study_uid))
        return str(rows[0][0]) if rows else study_uid

    def _send_counts(self) -> tuple[int, int]:
        from appliance.models import JobInstance, SendStatus

        rows = self._stage2_rows(select(JobInstance.send_status, func.count())
                                 .group_by(JobInstance.send_status))
        counts = {str(getattr(k, "value", k)): int(v) for k, v in rows}
        return counts.get(SendStatus.SENT.value, 0), counts.get(SendStatus.FAILED.value, 0)

    def _received_files(self) -> list[Path]:
        store = self.folders.settings("receiver").receiver.store_dir
        return [p for p in store.rglob("*.dcm") if p.is_file()]

    def stop_nodes(self) -> None:
        for role in reversed(list(self.nodes)):
            node = self.nodes.pop(role)
            try:
                node.stop()
            except NodeError as exc:
                self.problems.append(str(exc))

    def wait_for_signal(self, help_lines: list[str]) -> None:
        """Show ``help_lines``, then block until SIGINT or SIGTERM, or until a node ends.

        The handlers are in place before the lines are printed: a user (or a test) may act on
        them at once.
        """
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            say()
            indented(help_lines)
            while not stop.wait(0.5):
                gone = [role for role, node in self.nodes.items() if not node.running]
                if gone:
                    self.problems.append(f"{', '.join(gone)} stopped by itself")
                    return
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        say()
        say("Stopping the nodes (SIGTERM)...")

    def summary(self, started: float) -> None:
        root = self.folders.root
        say()
        say(f"Everything is in {shown(root)}/:")
        rows = [("sample/", "the generated input (fictitious patients)"),
                ("media/DICOMDIR", "the PDI medium stage 1 wrote; open it in any DICOM viewer"),
                ("stage1/ stage2/ receiver/", "each node: tce.yaml, tce.sqlite3, its store;"
                 " keys/ in stage1/ and stage2/"),
                ("receiver/receiver/store/", "what arrived, one folder per study and series"),
                ("logs/", "JSON-lines logs of every node (no patient data)")]
        if self.folders.verify_report.exists():
            rows.append(("verify.json", "the verification report"))
        indented(f"{name:<27}{what}" for name, what in rows)
        verdict = "OK" if not self.problems else "FAILED: " + "; ".join(self.problems)
        say(f"tce demo finished in {time.monotonic() - started:.1f} s: {verdict}")


def run_demo(root: Path, *, keep_running: bool = False, seed: int = 0) -> int:
    """Run the demo in ``root``; 0 when every check passed, else 1."""
    from appliance.logging import configure_logging

    started = time.monotonic()
    folders = DemoFolders(root.expanduser().absolute())
    replaced = folders.prepare()
    demo = Demo(folders, seed=seed)
    say(f"tce demo: the whole chain on loopback, in {shown(folders.root)}/"
        + (" (the previous demo there was replaced)" if replaced else ""))
    saved_url = os.environ.pop(DATABASE_URL_ENV, None)
    if saved_url is not None:
        say(f"({DATABASE_URL_ENV} is ignored: the demo nodes use their own SQLite databases)")
    configure_logging("INFO", log_file=folders.logs / "demo.log")
    try:
        with _sigterm_unwinds():
            _steps(demo, keep_running)
    except (DemoFailed, NodeError, ConnectionError, OSError) as exc:
        demo.problems.append(f"step {demo.number}: {exc}")
        say()
        say(f"FAILED at step {demo.number}: {exc}")
    except Terminated:
        demo.problems.append(f"stopped by SIGTERM during step {demo.number}")
        say()
        say("Stopping the nodes (SIGTERM)...")
    finally:
        demo.stop_nodes()
        if saved_url is not None:
            os.environ[DATABASE_URL_ENV] = saved_url
    demo.summary(started)
    return 1 if demo.problems else 0


def _steps(demo: Demo, keep_running: bool) -> None:
    """The steps in order; raises DemoFailed (or NodeError, OSError) at the first failure."""
    folders = demo.folders
    demo.make_nodes()
    datasets = demo.make_sample()
    complete = len(datasets)
    burned = sum(1 for ds in datasets
                 if str(ds.get("BurnedInAnnotation", "")).upper() == "YES")
    first = next(ds for ds in datasets if ds.Modality == "CT")
    demo.start_nodes()
    demo.send(complete)
    demo.write_media(complete)
    demo.import_media()
    demo.preview(first)
    demo.approve()
    demo.export(complete - burned, burned)
    verified = demo.verify()
    demo.before_after(first, datasets, verified)
    if keep_running:
        rx, s1 = demo.nodes["receiver"], demo.nodes["stage1"]
        demo.wait_for_signal(keep_running_help(
            s1.ae_title, rx.ae_title, s1.host, (s1.port, rx.port),
            {role: folders.config(role) for role in NODE_ROLES}, folders.media))
