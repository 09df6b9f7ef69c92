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

This module holds the command line and the report; the rest is in its siblings, one concept
each: ``stage2_export_input`` (the CT studies, ``tce`` nodes), ``stage2_export_peers`` (storescp,
the Receiver, the exactly-once check), ``stage2_export_runs`` (the export workers, storescu) and
``stage2_export_diagnose`` (``--diagnose``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stage2_export_diagnose import diagnose
from stage2_export_input import generate, init_node, tce
from stage2_export_peers import check_once
from stage2_export_runs import export, reset, storescu, worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
