"""Stage 2 from import to the Receiver: import, anonymize and send, against storescu.

Run on demand (not part of pytest)::

    .venv/bin/python benchmarks/stage2_export.py --count 2000 --json benchmarks/out/stage2.json

What it does, on ``--count`` synthetic CT instances (512x512, 16-bit, realistic headers; four
studies of two series, one patient each, from ``appliance.synthetic.make_ct_instance``):

1. Stage 1, not timed: ``tce deidentify --policy stage1-pseudonymize`` with a stage-1 node's key
   ring, then IHE PDI media written by :func:`pdi.writer.write_media`.
2. **import**: ``tce stage2 import MEDIA`` on a separate stage-2 node (its own key ring), then
   ``tce stage2 approve --all-pending --policy research-age-band-5y``.
3. **anonymize** and **send**: :func:`stage2_export_manager.exporter.export_due` in a fresh
   process, timed per phase (``ExportSummary.anonymize_seconds`` and ``send_seconds``; the send
   phase includes association set-up and the per-instance result commits).
   * 1 association: one process exports the four studies one after the other.
   * 4 associations: four processes export one study each; they anonymize, wait for each other,
     then send at the same time. The rate is all instances over the span of the four sends.
4. **baseline**: dcmtk ``storescu`` sending the very files stage 2 staged (the outbox) to the same
   kind of ``storescp``: one process, and four processes of one study each.
5. **the Receiver**: the 1-association export and storescu again, each to a fresh
   ``tce receiver serve`` (which fsyncs every instance before answering), unless
   ``--no-receiver``.

Every run sends to a fresh ``storescp --fork +uf`` (every reception is its own file) and the
script asserts that each expected SOP Instance UID arrived exactly once: no instance lost, none
sent twice. dcmtk gets ``TCP_NODELAY=1`` (Debian's build leaves Nagle on otherwise, which caps
storescu at ~20 instances/s and would flatter us). ``--pdu`` sets storescp's maximum receive PDU
(default 131072, the largest it accepts): every sender cuts its PDUs to it.

``--diagnose N`` (default 300; 0 skips) also sends N staged files over one association with the
SCU configurations that explain the gap we started from (pynetdicom defaults, then TCP_NODELAY,
then streaming the file, then the event-driven DUL and held reactor, then this project's SCU),
to storescp with its default maximum PDU (16384) and with ``--pdu``; and it runs pynetdicom's
own ``send_c_store`` on four parallel associations, counting instances that did not arrive.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
TCE = VENV_BIN / "tce"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
RECEIVER = "TCE_RECEIVER"
STUDIES, SERIES_PER_STUDY = 4, 2


# --- input ----------------------------------------------------------------------------------


def generate(data: Path, count: int) -> None:
    """``count`` CT instances: four studies (one patient each) of two series; cached."""
    marker = data / f".complete-{count}"
    if marker.exists():
        return
    from appliance.synthetic import _uid, make_ct_instance, sample_patients

    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    patients = sample_patients(0)
    per_series = count // (STUDIES * SERIES_PER_STUDY)
    for index in range(count):
        series_no = min(index // per_series, STUDIES * SERIES_PER_STUDY - 1)
        study_no = series_no // SERIES_PER_STUDY
        ds = make_ct_instance(index, _uid(1, "s2-study", study_no), _uid(1, "s2-series", series_no),
                              patients[study_no], 512, 512)
        ds.save_as(data / f"IMG{index:05d}.dcm", enforce_file_format=True)
        if index % 500 == 499:
            print(f"  generated {index + 1}/{count}", file=sys.stderr)
    marker.write_text(f"{count}\n")


def tce(config: Path, *args: str) -> str:
    done = subprocess.run([str(TCE), "--config", str(config), *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tce {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def init_node(folder: Path, role: str) -> Path:
    subprocess.run([str(TCE), "init", str(folder), "--role", role], check=True,
                   capture_output=True)
    return folder / "tce.yaml"


# --- peers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


# --- stage 2 export in worker processes ---------------------------------------------------


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
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(config), study,
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


# --- diagnosis ----------------------------------------------------------------------------


def _stock_send(files: list[Path], port: int, *, nodelay: bool, chunked: bool,
                results: list[str] | None = None, dimse_timeout: float = 30) -> None:
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE, _config, evt

    from appliance.dimse import set_nodelay

    _config.STORE_SEND_CHUNKED_DATASET = chunked
    ae = AE(ae_title="TCE_STAGE2")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)] if nodelay else []
    assoc = ae.associate("127.0.0.1", port, ae_title=RECEIVER, evt_handlers=handlers)
    for path in files:
        try:
            status = assoc.send_c_store(path)
        except RuntimeError:
            outcome = "raised (association gone)"
        else:
            outcome = ("no status" if "Status" not in status
                       else "ok" if status.Status == 0 else "failure status")
        if results is not None:
            results.append(outcome)
    if assoc.is_established:
        assoc.release()


def _held_send_c_store(files: list[Path], port: int) -> None:
    """This project's DUL and held reactor, but pynetdicom's send_c_store(path) per instance."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import _config, evt
    from pynetdicom.dimse import DIMSEServiceProvider

    from appliance.dimse import hold_reactor, release_reactor, set_nodelay
    from stage2_export_manager.cstore import StreamingAE

    class PlainDIMSEAE(StreamingAE):
        def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
            sock = super()._create_socket(assoc, address, tls_args)
            assoc.dimse = DIMSEServiceProvider(assoc)
            return sock

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = PlainDIMSEAE(ae_title="TCE_STAGE2")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=RECEIVER,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    hold_reactor(assoc)
    for path in files:
        assoc.send_c_store(path)
    release_reactor(assoc)
    assoc.release()


def _project_send(files: list[Path], port: int, results: list[str] | None = None) -> None:
    from pydicom.filereader import read_file_meta_info

    from stage2_export_manager.scu import Peer, StoreItem, send_study

    items = []
    for n, path in enumerate(files):
        meta = read_file_meta_info(path)
        items.append(StoreItem(n, path, str(meta.MediaStorageSOPClassUID),
                               str(meta.TransferSyntaxUID),
                               str(meta.MediaStorageSOPInstanceUID)))
    sink: list[Any] = []
    try:
        send_study(Peer(RECEIVER, "127.0.0.1", port), "TCE_STAGE2", items, sink.append)
    finally:
        if results is not None:
            results.extend("ok" if r.sent else "failure status" for r in sink)


def diagnose(files: list[list[Path]], count: int, pdus: list[int],
             scratch: Path) -> dict[str, Any]:
    from pydicom.filereader import read_file_meta_info

    one = [p for group in files for p in group][:count]
    expected = {str(read_file_meta_info(p).MediaStorageSOPInstanceUID) for p in one}
    ladder: list[tuple[str, Any]] = [
        ("pynetdicom defaults (Nagle on, dataset re-encoded)",
         lambda port: _stock_send(one, port, nodelay=False, chunked=False)),
        ("+ TCP_NODELAY", lambda port: _stock_send(one, port, nodelay=True, chunked=False)),
        ("+ file streamed, not re-encoded",
         lambda port: _stock_send(one, port, nodelay=True, chunked=True)),
        ("+ event-driven DUL, reactor held", lambda port: _held_send_c_store(one, port)),
        ("+ command set packed, responses read with struct (scu.send_study)",
         lambda port: _project_send(one, port)),
    ]
    report: dict[str, Any] = {}
    for pdu in pdus:
        rows = []
        base_seconds, received = storescu([one], pdu, scratch)
        check_once(received, expected, "storescu")
        rows.append({"name": "storescu (dcmtk)", "instances_per_second": count / base_seconds})
        for name, run in ladder:
            scp = Storescp(scratch / "rx", pdu)
            try:
                started = time.perf_counter()
                run(scp.port)
                seconds = time.perf_counter() - started
                received = scp.received()
            finally:
                scp.close()
            if name.endswith("(scu.send_study)"):
                check_once(received, expected, name)
            rate = count / seconds
            rows.append({"name": name, "instances_per_second": rate,
                         "ratio_to_storescu": rate * base_seconds / count,
                         "lost": len(expected - set(received)),
                         "received_twice": sum(1 for n in received.values() if n > 1)})
        report[f"one_association_storescp_pdu_{pdu}"] = rows
    report["four_associations"] = race(files, pdus[-1], scratch)
    return report


def race(files: list[list[Path]], pdu: int, scratch: Path) -> list[dict[str, Any]]:
    """pynetdicom's send_c_store on four parallel associations, then this project's SCU."""
    out = []
    for name, sender in (("pynetdicom send_c_store (streamed, TCP_NODELAY, DIMSE timeout 5 s)",
                          lambda group, port, res: _stock_send(group, port, nodelay=True,
                                                               chunked=True, results=res,
                                                               dimse_timeout=5)),
                         ("stage2_export_manager.scu.send_study",
                          lambda group, port, res: _project_send(group, port, res))):
        scp = Storescp(scratch / "rx", pdu)
        results: list[list[str]] = [[] for _ in files]
        try:
            threads = [threading.Thread(target=sender, args=(group, scp.port, results[n]))
                       for n, group in enumerate(files)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            received = scp.received()
        finally:
            scp.close()
        outcomes = Counter(o for r in results for o in r)
        out.append({"name": name, "outcomes": dict(outcomes),
                    "arrived": len(received), "of": sum(len(g) for g in files)})
    return out


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--pdu", type=int, default=131072,
                        help="storescp's maximum receive PDU (4096..131072)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best time is kept")
    parser.add_argument("--diagnose", type=int, default=300, metavar="N")
    parser.add_argument("--no-receiver", dest="receiver", action="store_false",
                        help="skip the runs against the real Receiver (tce receiver serve)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        config, study, port, barrier, parties = args.worker
        worker(config, study, int(port), barrier, int(parties))
        return 0
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install dcmtk)")
    data = args.data or ROOT / "benchmarks" / "out" / f"stage2-ct-{args.count}"
    print(f"input: {args.count} CT instances in {data}", file=sys.stderr)
    generate(data, args.count)
    work = Path(tempfile.mkdtemp(prefix="tce-stage2-bench-", dir=ROOT / "benchmarks" / "out"))
    try:
        report = run(args, data, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


def run(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    from appliance import settings as settings_module
    from pdi.writer import write_media
    from stage2_export_manager.exporter import outbox_dir

    count = args.count
    s1 = init_node(work / "stage1", "stage1")
    s2 = init_node(work / "stage2", "stage2")
    print("stage 1: pseudonymize, write media", file=sys.stderr)
    tce(s1, "deidentify", str(data), str(work / "s1out"), "--policy", "stage1-pseudonymize",
        "--jobs", "2")
    write_media(sorted((work / "s1out").rglob("*.dcm")), work / "media")
    shutil.rmtree(work / "s1out")
    print("stage 2: import", file=sys.stderr)
    started = time.perf_counter()
    tce(s2, "stage2", "import", str(work / "media"))
    import_seconds = time.perf_counter() - started
    tce(s2, "stage2", "approve", "--all-pending", "--policy", "research-age-band-5y",
        "--approver", "benchmark")
    database = work / "stage2" / "tce.sqlite3"
    outbox_root = outbox_dir(settings_module.load(s2))
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as db:
        studies = [str(row[0]) for row in db.execute("SELECT id FROM jobs ORDER BY id")]
    rounds: dict[str, list[float]] = {k: [] for k in (
        "anonymize_1", "send_1", "storescu_1", "send_4", "storescu_4")}
    outbox: list[list[Path]] = []
    for number in range(args.repeat):
        print(f"round {number + 1}/{args.repeat}", file=sys.stderr)
        for parallel in (1, 4):
            reset(database)
            result = export(s2, ["all"] if parallel == 1 else studies, args.pdu, work)
            with contextlib.closing(sqlite3.connect(database)) as db:
                expected = {r[0] for r in db.execute(
                    "SELECT new_sop_instance_uid FROM job_instances WHERE send_status='SENT'")}
            if result["sent"] != count or len(expected) != count:
                raise SystemExit(f"only {result['sent']} of {count} instances were sent")
            check_once(result["received"], expected, f"stage 2, {parallel} association(s)")
            outbox = [sorted((outbox_root / job).iterdir()) for job in studies]
            assert sum(map(len, outbox)) == count
            rounds[f"send_{parallel}"].append(result["send_seconds"])
            if parallel == 1:
                rounds["anonymize_1"].append(result["anonymize_seconds"])
            seconds, received = storescu([[p for g in outbox for p in g]] if parallel == 1
                                         else outbox, args.pdu, work)
            check_once(received, expected, f"storescu, {parallel} process(es)")
            rounds[f"storescu_{parallel}"].append(seconds)
    if args.receiver:
        print("the Receiver (tce receiver serve)", file=sys.stderr)
        rounds["send_receiver"], rounds["storescu_receiver"] = [], []
        for _ in range(args.repeat):
            reset(database)
            result = export(s2, ["all"], args.pdu, work, receiver=True)
            with contextlib.closing(sqlite3.connect(database)) as db:
                expected = {r[0] for r in db.execute(
                    "SELECT new_sop_instance_uid FROM job_instances WHERE send_status='SENT'")}
            check_once(result["received"], expected, "stage 2 to the Receiver")
            rounds["send_receiver"].append(result["send_seconds"])
            outbox = [sorted((outbox_root / job).iterdir()) for job in studies]
            seconds, received = storescu([[p for g in outbox for p in g]], args.pdu, work,
                                         receiver=True)
            check_once(received, expected, "storescu to the Receiver")
            rounds["storescu_receiver"].append(seconds)
    best = {k: min(v) for k, v in rounds.items()}
    rate = {k: count / v for k, v in best.items()}
    report: dict[str, Any] = {
        "count": count, "cpus": os.cpu_count(), "python": platform.python_version(),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "storescp_max_pdu": args.pdu, "rounds": rounds,
        "instances_per_second": {
            "import": count / import_seconds,
            "anonymize (1 process)": rate["anonymize_1"],
            "send, 1 association": rate["send_1"],
            "storescu, 1 association": rate["storescu_1"],
            "send, 4 associations": rate["send_4"],
            "storescu, 4 associations": rate["storescu_4"],
        },
        "send_ratio_to_storescu": {"1 association": rate["send_1"] / rate["storescu_1"],
                                   "4 associations": rate["send_4"] / rate["storescu_4"]},
        "to_the_receiver": None if not args.receiver else {
            "send, 1 association": rate["send_receiver"],
            "storescu, 1 association": rate["storescu_receiver"],
            "ratio": rate["send_receiver"] / rate["storescu_receiver"]},
        "every_instance_arrived_exactly_once": True,
    }
    if args.diagnose:
        print("diagnosis", file=sys.stderr)
        report["diagnosis"] = diagnose(outbox, min(args.diagnose, len(outbox[0])),
                                       sorted({16384, args.pdu}), work)
    return report


if __name__ == "__main__":
    sys.exit(main())
