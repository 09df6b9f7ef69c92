"""The receiving ends of the stage-2 benchmark, and the exactly-once check on what they got.

Split out of ``benchmarks/stage2_export.py``: every run (the export, the storescu baseline and
the diagnosis) sends to a fresh ``storescp --fork +uf`` or a fresh ``tce receiver serve`` and
then asserts, with :func:`check_once`, that each expected SOP Instance UID arrived exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from stage2_export_input import TCE, init_node

from appliance.demo.nodes import free_port

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
RECEIVER = "TCE_RECEIVER"


class Storescp:
    """``storescp --fork +uf`` on a free port, writing every reception to its own file."""

    def __init__(self, folder: Path, pdu: int) -> None:
        import psutil

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.proc = subprocess.Popen(
            ["storescp", "-aet", RECEIVER, "-od", str(folder), "+uf", "--fork", "-pdu", str(pdu),
             str(self.port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                      for c in psutil.Process(self.proc.pid).net_connections("tcp")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("storescp did not start")
            time.sleep(0.02)

    def received(self) -> Counter[str]:
        from pydicom.filereader import read_file_meta_info

        time.sleep(0.3)  # forked children finish writing
        return Counter(str(read_file_meta_info(p).MediaStorageSOPInstanceUID)
                       for p in self.folder.iterdir() if p.is_file())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)


class Receiver:
    """The real Receiver (``tce receiver serve``) in a fresh node of its own, for one run."""

    def __init__(self, folder: Path) -> None:
        import psutil

        shutil.rmtree(folder, ignore_errors=True)
        self.folder, self.port = folder, free_port()
        config = init_node(folder, "receiver")
        self.proc = subprocess.Popen([str(TCE), "--config", str(config), "receiver", "serve",
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                      for c in psutil.Process(self.proc.pid).net_connections("tcp")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("tce receiver serve did not start")
            time.sleep(0.05)

    def received(self) -> Counter[str]:
        from pydicom.filereader import read_file_meta_info

        return Counter(str(read_file_meta_info(p).MediaStorageSOPInstanceUID)
                       for p in (self.folder / "receiver" / "store").rglob("*.dcm"))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        shutil.rmtree(self.folder, ignore_errors=True)


def check_once(received: Counter[str], expected: set[str], what: str) -> None:
    lost = expected - set(received)
    twice = {uid for uid, n in received.items() if n > 1}
    extra = set(received) - expected
    if lost or twice or extra:
        raise SystemExit(f"{what}: {len(lost)} instance(s) lost, {len(twice)} received more than"
                         f" once, {len(extra)} unexpected")
