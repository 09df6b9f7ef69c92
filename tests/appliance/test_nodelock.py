"""NodeLock: one serving process per role and working folder, and a crash never leaves it stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.nodelock import NodeAlreadyRunning, NodeLock

HOLD = """
import sys, time
from pathlib import Path
from appliance.nodelock import NodeLock
NodeLock(Path(sys.argv[1]), "stage1").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(NodeAlreadyRunning, match=rf"another stage1 node \(pid {holder.pid}\)"):
            NodeLock(tmp_path, "stage1").acquire()
        other_role = NodeLock(tmp_path, "receiver")  # each role has its own lock
        other_role.acquire()
        other_role.release()
    finally:
        holder.kill()
        holder.wait(10)
    assert (tmp_path / ".tce-stage1.lock").stat().st_mode & 0o777 == 0o600


def test_forked_children_do_not_inherit_the_lock(tmp_path: Path) -> None:
    """Worker processes outlive a SIGKILLed node for a moment; they must not keep it locked."""
    lock = NodeLock(tmp_path, "stage1")
    lock.acquire()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only sleeps
        time.sleep(30)
        os._exit(0)
    try:
        assert lock._fd is not None
        os.close(lock._fd)  # as this process dying would (no unlock); the child still runs
        lock._fd = None
        probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", ""),
                                str(tmp_path)], capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "held", probe.stderr
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(NodeAlreadyRunning, match=rf"pid {holder.pid}"):
            NodeLock(tmp_path, "stage1").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
    deadline = time.monotonic() + 5
    while True:
        try:
            NodeLock(tmp_path, "stage1").acquire()
            break
        except NodeAlreadyRunning:
            assert time.monotonic() < deadline, "the kernel did not drop the dead holder's lock"
            time.sleep(0.05)
