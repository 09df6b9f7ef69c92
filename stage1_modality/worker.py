"""The pseudonymization step, run in worker processes.

One Python process cannot use both cores, and de-identification is CPU work, so the SCP hands
spooled files to a process pool. Each worker builds its :class:`Deidentifier` once. The output
depends only on the input file, the policy and the key, so reprocessing after a crash writes
byte-identical files under the same UIDs: at-least-once execution gives exactly-once results.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom

from appliance.durable import make_dirs, write_atomic
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import resolve_policy
from policies.outcome import PolicyRefusal


@dataclass
class WorkResult:
    """What the coordinator needs to record. ``pseudonyms`` holds originals: seal, never log."""

    key: str
    ok: bool
    refused: bool = False
    reason: str = ""
    store_path: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_pseudonym: str = ""
    sha256: str = ""
    size: int = 0
    pseudonyms: list[tuple[str, str, str]] = field(default_factory=list)


_ENGINE: Deidentifier | None = None
WATCHDOG_SECONDS = 0.5
WORKER_NICENESS = 10


def init_worker(policy_name: str, keys: EngineKeys, node_pid: int | None = None) -> None:
    global _ENGINE
    _ENGINE = Deidentifier(resolve_policy(policy_name), keys)
    # Receiving comes first: a sender waits for every C-STORE response, while pseudonymization
    # may lag behind and catch up when the senders pause. Workers yield the CPU to the SCP.
    os.nice(WORKER_NICENESS)
    if node_pid is not None:
        threading.Thread(target=_exit_with_node, args=(node_pid,), daemon=True,
                         name="stage1-worker-watchdog").start()


def _exit_with_node(node_pid: int) -> None:
    """End this worker when the node is gone.

    A node killed with SIGKILL (or by the OOM killer) runs no clean-up, and the pool's workers,
    children of the forkserver, would wait on their queue for ever, holding memory and the
    patient data they had read. Anything they were doing is redone after the restart.
    """
    while True:
        time.sleep(WATCHDOG_SECONDS)
        try:
            os.kill(node_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid was reused by another user's process
            os._exit(1)


def engine() -> Deidentifier:
    if _ENGINE is None:
        raise RuntimeError("worker not initialised")
    return _ENGINE


def process(key: str, spool_path: str, store_dir: str) -> WorkResult:
    """Pseudonymize one spooled file into ``store_dir/<study>/<series>/<instance>.dcm``."""
    try:
        ds = pydicom.dcmread(spool_path)
        outcome = engine().deidentify(ds)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
    except PolicyRefusal as exc:
        return WorkResult(key, ok=False, refused=True, reason=str(exc))
    except Exception as exc:  # unreadable or un-de-identifiable: quarantine with the reason
        return WorkResult(key, ok=False, reason=f"{type(exc).__name__}: cannot de-identify")
    folder = Path(store_dir) / outcome.study_instance_uid / outcome.series_instance_uid
    make_dirs(folder)
    target = folder / f"{outcome.sop_instance_uid}.dcm"
    write_atomic(target, data)
    return WorkResult(
        key, ok=True, store_path=str(target),
        sop_instance_uid=outcome.sop_instance_uid,
        study_instance_uid=outcome.study_instance_uid,
        series_instance_uid=outcome.series_instance_uid,
        patient_pseudonym=str(ds.get("PatientID", "")),
        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        pseudonyms=[(p.keyword, p.pseudonym, p.original) for p in outcome.pseudonyms],
    )
