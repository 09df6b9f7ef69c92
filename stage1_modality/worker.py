"""The pseudonymization step, run in worker processes.

One Python process cannot use both cores, and de-identification is CPU work, so the SCP hands
spooled files to a process pool. Each worker builds its :class:`Deidentifier` once. The output
depends only on the input file, the policy and the key, so reprocessing after a crash writes
byte-identical files under the same UIDs: at-least-once execution gives exactly-once results.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.batch_worker import (
    InvalidInstance,
    read_for_splice,
    read_instance,
    write_temporary,
)
from appliance.durable import FILE_MODE, fsync_dir, make_dirs
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
WORKER_NICENESS = 5


def init_worker(policy_name: str, keys: EngineKeys, node_pid: int | None = None) -> None:
    global _ENGINE
    _ENGINE = Deidentifier(resolve_policy(policy_name), keys)
    # Receiving comes first: a sender waits for every C-STORE response, while pseudonymization
    # may lag behind and catch up when the senders pause. Workers yield the CPU to the SCP, but
    # not all of it: measured on the ingest benchmark (2 cores), niceness 10 left the workers
    # so little during four parallel associations that pseudonymization finished at 1.8-1.9x
    # the receive time (target 2x); 5 gives 1.75-1.8x at the same acknowledgement rate, and
    # 0 costs a quarter of the single-association rate.
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
    return process_batch([(key, spool_path)], store_dir)[0]


def process_batch(items: Sequence[tuple[str, str]], store_dir: str) -> list[WorkResult]:
    """Pseudonymize several spooled files (receipt key, spool path); one result each.

    Each output is written to a temporary file first; then all of them are fsynced, renamed
    into place, and each folder is fsynced once. Every fsync forces a journal commit, which
    stalls the receiving side's file writes for its duration, so a batch costs a few commits
    instead of two per instance. An :class:`OSError` (disk full) fails the whole batch: its
    instances stay RECEIVED and are processed again at the next start.
    """
    done: list[tuple[WorkResult, Path | None]] = [
        _pseudonymize(key, spool_path, Path(store_dir)) for key, spool_path in items]
    folders: set[Path] = set()
    for _result, tmp in done:
        if tmp is not None:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for result, tmp in done:
        if tmp is not None:
            target = Path(result.store_path)
            os.replace(tmp, target)
            folders.add(target.parent)
    for folder in sorted(folders):
        fsync_dir(folder)
    return [result for result, _ in done]


def _pseudonymize(key: str, spool_path: str, store_dir: Path) -> tuple[WorkResult, Path | None]:
    """The result, and the temporary file holding the output (None when there is none).

    The fast path of ``tce deidentify`` (:func:`appliance.batch_worker.read_for_splice`): the
    header is parsed and de-identified, Pixel Data is copied from the spool file by the kernel.
    """
    try:
        size = os.stat(spool_path).st_size
        with open(spool_path, "rb") as fh:
            ds, span = read_for_splice(fh, size)
            if ds is None:
                ds = read_instance(spool_path)
            outcome = engine().deidentify(ds)
            folder = store_dir / outcome.study_instance_uid / outcome.series_instance_uid
            new_folder = not folder.is_dir()
            make_dirs(folder)
            target = folder / f"{outcome.sop_instance_uid}.dcm"
            tmp, size_out = write_temporary(target, ds, fh, span)
    except PolicyRefusal as exc:
        return WorkResult(key, ok=False, refused=True, reason=str(exc)), None
    except InvalidInstance as exc:
        return WorkResult(key, ok=False, reason=f"cannot de-identify: {exc}"), None
    except OSError:
        raise
    except Exception as exc:  # unreadable or un-de-identifiable: quarantine with the reason
        return WorkResult(key, ok=False, reason=f"{type(exc).__name__}: cannot de-identify"), None
    assert tmp is not None
    os.chmod(tmp, FILE_MODE)
    with open(tmp, "rb") as out, mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) as view:
        sha256 = hashlib.sha256(view).hexdigest()
    if new_folder:  # its entries in the study folder and the store are new too
        fsync_dir(folder.parent)
        fsync_dir(folder.parent.parent)
    return WorkResult(
        key, ok=True, store_path=str(target),
        sop_instance_uid=outcome.sop_instance_uid,
        study_instance_uid=outcome.study_instance_uid,
        series_instance_uid=outcome.series_instance_uid,
        patient_pseudonym=str(ds.get("PatientID", "")),
        sha256=sha256, size=size_out,
        pseudonyms=[(p.keyword, p.pseudonym, p.original) for p in outcome.pseudonyms],
    ), tmp
