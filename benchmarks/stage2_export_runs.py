"""The timed runs of the stage-2 benchmark: the ``tce`` export and the dcmtk storescu baseline.

Split out of ``benchmarks/stage2_export.py``. :func:`export` runs
:func:`stage2_export_manager.exporter.export_due` in worker processes (``stage2_export.py
--worker``, see :data:`SCRIPT`) whose send phases start together; :func:`storescu` sends files
with dcmtk's ``storescu`` to the same kind of peer; :func:`reset` makes the next export redo
everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stage2_export_peers import DCMTK_ENV, RECEIVER, Receiver, Storescp

# The script whose ``--worker`` option runs :func:`worker` in a process of its own.
SCRIPT = Path(__file__).with_name("stage2_export.py")


def worker(config: str, study: str, port: int, barrier: str, parties: int) -> None:
    """One export process; its send phase starts when ``parties`` workers are ready."""
    from appliance import settings as settings_module
    from appliance.db import open_database, session_factory
    from appliance.keys import KeyRing
    from stage2_export_manager import exporter
    from stage2_export_manager.scu import Peer

    settings = settings_module.load(config)
    sessions = session_factory(open_database(str(settings.database_url)))
    keyring = KeyRing.load(settings.key_ring)
    spans: list[tuple[float, float]] = []
    real_send = exporter.send_study  # type: ignore[attr-defined]

    def timed_send(*args: Any, **kwargs: Any) -> None:
        folder = Path(barrier)
        (folder / f"ready-{os.getpid()}-{len(spans)}").touch()
        while len(list(folder.iterdir())) < parties:
            time.sleep(0.0005)
        start = time.time()
        try:
            real_send(*args, **kwargs)
        finally:
            spans.append((start, time.time()))

    exporter.send_study = timed_send  # type: ignore[attr-defined]
    summary = exporter.export_due(settings, sessions, keyring, to=Peer(RECEIVER, "127.0.0.1", port),
                                  study=None if study == "all" else study)
    print(json.dumps({"anonymize_seconds": summary.anonymize_seconds,
                      "send_seconds": summary.send_seconds, "spans": spans,
                      "sent": summary.instances_sent, "failed": summary.instances_failed,
                      "exported": summary.jobs_exported, "messages": summary.messages}))


def reset(database: Path) -> None:
    """Every job APPROVED again, every instance unsent: the next export redoes everything."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("UPDATE job_instances SET send_status='PENDING', dimse_status=NULL,"
                   " sent_at=NULL, attempts=0")
        db.execute("UPDATE jobs SET state='APPROVED', attempts=0, next_attempt_at=NULL,"
                   " last_error=NULL, sent_count=0")


def export(config: Path, studies: list[str], pdu: int, scratch: Path,
           receiver: bool = False) -> dict[str, Any]:
    barrier = scratch / "barrier"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    scp: Storescp | Receiver = (Receiver(scratch / "receiver") if receiver
                                else Storescp(scratch / "rx", pdu))
    try:
        procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--worker", str(config), study,
                                   str(scp.port), str(barrier), str(len(studies))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for study in studies]
        outputs = []
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"export worker failed:\n{err[-3000:]}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        received = scp.received()
    finally:
        scp.close()
    sent = sum(o["sent"] for o in outputs)
    spans = [span for o in outputs for span in o["spans"]]
    if len(studies) == 1:
        send_seconds = outputs[0]["send_seconds"]
    else:
        send_seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"sent": sent, "failed": sum(o["failed"] for o in outputs),
            "anonymize_seconds": sum(o["anonymize_seconds"] for o in outputs),
            "send_seconds": send_seconds, "received": received}


def storescu(files: list[list[Path]], pdu: int, scratch: Path,
             receiver: bool = False) -> tuple[float, Counter[str]]:
    scp: Storescp | Receiver = (Receiver(scratch / "receiver") if receiver
                                else Storescp(scratch / "rx", pdu))
    try:
        started = time.perf_counter()
        procs = [subprocess.Popen(["storescu", "-aec", RECEIVER, "127.0.0.1", str(scp.port),
                                   *map(str, group)], env=DCMTK_ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for group in files]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"storescu failed: {err.decode()[-2000:]}")
        seconds = time.perf_counter() - started
        received = scp.received()
    finally:
        scp.close()
    return seconds, received
