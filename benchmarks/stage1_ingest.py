"""How fast the stage-1 node acknowledges C-STOREs durably, against dcmtk's storescp.

Run on demand (not part of pytest)::

    .venv/bin/python benchmarks/stage1_ingest.py --count 2000 --json benchmarks/out/stage1-2000.json

The input is the CT series of ``benchmarks/deidentify.py`` (512x512 16-bit, realistic headers,
about 0.5 MB each), generated once and cached in ``benchmarks/out/ct-<count>`` (shared with that
benchmark). dcmtk's ``storescu`` sends it, in interleaved runs of one round (``--repeat`` for
more; the best time of each run is kept, since a shared machine adds noise, never speed):

* ``storescp, 1 association``: ``storescu +sd +r`` on the folder into ``storescp --fork``
  writing every file to disk (no fsync; that is storescp's default);
* ``node, 1 association``: the same into ``tce stage1 serve`` (fresh ``tce init`` node, default
  configuration: a success status only after the spool file is fsynced, validated, renamed and
  its folder fsynced; the row is committed right after, and a restart adopts a spool file
  whose row a crash prevented);
* ``storescp, 4 associations`` and ``node, 4 associations``: four ``storescu`` processes at
  once, each sending a quarter of the files.

For each run it reports instances/s and, for the node, the ratio to storescp with the same
number of associations (target: 0.33 or more) and the pseudonymization time: from the first
instance received until every instance is PROCESSED, as a multiple of the receive time (the
time storescu took; target: 2 or less). The node must exit 0 on SIGTERM after each run.
Besides the best times, each node run's ratio is given per round (against the storescp run of
the same round), since the best of each is flattering when the machine is shared.

dcmtk as packaged by Debian leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is in the
environment, and then every C-STORE waits ~40 ms for a delayed ACK, whatever the receiver does.
Both dcmtk tools get ``TCP_NODELAY=1`` here (``--nagle`` measures the packaged default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.demo.nodes import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TCE = VENV_BIN / "tce"
SERIES_SIZE = 250  # as benchmarks/deidentify.py, so the cache is shared
CALLED = "TCE_STAGE1"


def generate(data: Path, count: int) -> None:
    """Write ``count`` CT instances into ``data`` unless a complete set is already there."""
    marker = data / f".complete-{count}"
    if marker.exists():
        return
    sys.path.insert(0, str(ROOT))
    from appliance.synthetic import _uid, make_ct_instance, sample_patients

    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    patients = sample_patients(0)
    started = time.perf_counter()
    for index in range(count):
        series_no = index // SERIES_SIZE
        study_no = series_no // 4
        patient = patients[study_no % len(patients)]
        ds = make_ct_instance(index % SERIES_SIZE, _uid(0, "bench-study", study_no),
                              _uid(0, "bench-series", series_no), patient, 512, 512)
        ds.save_as(data / f"IMG{index:05d}.dcm", enforce_file_format=True)
        if index % 200 == 199:
            print(f"  generated {index + 1}/{count}", file=sys.stderr)
    marker.write_text(f"{count} instances in {time.perf_counter() - started:.1f} s\n")


def wait_for_echo(port: int, called: str, env: dict[str, str], proc: subprocess.Popen[bytes],
                  timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SCP exited with {proc.returncode} before answering")
        done = subprocess.run(["echoscu", "-aec", called, "127.0.0.1", str(port)],
                              capture_output=True, env=env, check=False)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the SCP did not answer C-ECHO")


def send(port: int, called: str, data: Path, files: Sequence[Path], associations: int,
         env: dict[str, str]) -> float:
    """storescu into the SCP: one on the folder, or ``associations`` at once; wall seconds."""
    base = ["storescu", "-q", "-aet", "STORESCU", "-aec", called]
    if associations == 1:
        commands = [[*base, "+sd", "+r", "+sp", "*.dcm", "127.0.0.1", str(port), str(data)]]
    else:
        size = -(-len(files) // associations)
        commands = [[*base, "127.0.0.1", str(port), *map(str, files[n:n + size])]
                    for n in range(0, len(files), size)]
    started = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for c in commands]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - started
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed


def run_storescp(work: Path, data: Path, files: Sequence[Path], associations: int,
                 env: dict[str, str]) -> dict[str, object]:
    out = work / "storescp-out"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(["storescp", "--fork", "-aet", CALLED, "-od", str(out), str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_echo(port, CALLED, env, proc)
        seconds = send(port, CALLED, data, files, associations, env)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    written = sum(1 for p in out.iterdir() if p.is_file())
    shutil.rmtree(out)
    if written != len(files):
        raise RuntimeError(f"storescp wrote {written} of {len(files)} files")
    return {"seconds": round(seconds, 3)}


def _db_counts(database: Path) -> tuple[int, int, str | None, str | None]:
    """(instances, PROCESSED, first received_at, last processed_at), read-only."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT count(*), sum(state = 'PROCESSED'), min(received_at),"
                           " max(processed_at) FROM instances").fetchone()
    return int(row[0] or 0), int(row[1] or 0), row[2], row[3]


def _seconds_between(first: str, last: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(last) - parse(first)).total_seconds()


def run_node(work: Path, data: Path, files: Sequence[Path], associations: int,
             env: dict[str, str]) -> dict[str, object]:
    folder = work / "node"
    subprocess.run([str(TCE), "init", str(folder), "--role", "stage1"], check=True,
                   capture_output=True)
    node_env = {**env, "TCE_CONFIG": str(folder / "tce.yaml")}
    node_env.pop("TCE_DATABASE_URL", None)
    port = free_port()
    log = open(work / "node.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(TCE), "stage1", "serve", "--port", str(port)], env=node_env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_echo(port, CALLED, env, proc)
        started = time.perf_counter()
        seconds = send(port, CALLED, data, files, associations, env)
        at_receive_end = _db_counts(folder / "tce.sqlite3")[1]
        deadline = time.monotonic() + 600
        while True:
            total, processed, first, last = _db_counts(folder / "tce.sqlite3")
            if processed >= len(files) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        drained = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        log.close()
    if code != 0:
        raise RuntimeError(f"the node exited {code} after SIGTERM; see {work / 'node.log'}")
    if total != len(files) or processed != len(files):
        raise RuntimeError(f"the node holds {total} instances, {processed} PROCESSED,"
                           f" of {len(files)} sent")
    pseudonymized = _seconds_between(first, last) if first and last else drained
    shutil.rmtree(folder)
    return {"seconds": round(seconds, 3), "pseudonymized_seconds": round(pseudonymized, 3),
            "drained_seconds": round(drained, 3),
            "processed_when_received": at_receive_end}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="CT instances (default 2000)")
    parser.add_argument("--data", type=Path, help="input cache (default benchmarks/out/ct-N)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; the best time of each run is reported (default 1)")
    parser.add_argument("--only", choices=["1", "4"], help="only this number of associations")
    parser.add_argument("--nagle", action="store_true",
                        help="leave dcmtk's Nagle algorithm on (the Debian default)")
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp", "echoscu"):
        if not shutil.which(tool):
            parser.error(f"dcmtk's {tool} is not installed (apt-get install dcmtk)")

    data = args.data or ROOT / "benchmarks" / "out" / f"ct-{args.count}"
    generate(data, args.count)
    files = sorted(data.glob("*.dcm"))[:args.count]
    total_bytes = sum(p.stat().st_size for p in files)
    env = dict(os.environ)
    if not args.nagle:
        env["TCP_NODELAY"] = "1"
    counts = [int(args.only)] if args.only else [1, 4]
    runs: list[tuple[str, int, Callable[..., dict[str, object]]]] = []
    for n in counts:
        runs += [(f"storescp, {n} association{'s' * (n > 1)}", n, run_storescp),
                 (f"node, {n} association{'s' * (n > 1)}", n, run_node)]
    trials: dict[str, list[dict[str, object]]] = {name: [] for name, _, _ in runs}
    for round_no in range(1, args.repeat + 1):
        ordered = runs if round_no % 2 else [r for pair in zip(runs[1::2], runs[::2],
                                                               strict=True) for r in pair]
        for name, associations, run in ordered:
            print(f"round {round_no}/{args.repeat}: {name} ...", file=sys.stderr)
            os.sync()  # no dirty pages of the previous run to write back during this one
            time.sleep(1)
            work = Path(tempfile.mkdtemp(prefix="tce-ingest-", dir=data.parent))
            try:
                trials[name].append(run(work, data, files, associations, env))
            finally:
                shutil.rmtree(work, ignore_errors=True)

    results = report(trials, args.count, total_bytes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"count": args.count, "bytes": total_bytes, "cpus": os.cpu_count(),
               "python": platform.python_version(), "machine": platform.machine(),
               "tcp_nodelay": not args.nagle,
               "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def report(trials: dict[str, list[dict[str, object]]], count: int,
           total_bytes: int) -> list[dict[str, object]]:
    results = []
    baseline: dict[int, float] = {}
    rounds: dict[int, list[float]] = {}
    for name, measured in trials.items():
        best = dict(min(measured, key=lambda r: float(r["seconds"])))  # type: ignore[arg-type]
        seconds = float(best["seconds"])  # type: ignore[arg-type]
        associations = int(name.split(", ")[1].split()[0])
        best.update(name=name, all_seconds=[r["seconds"] for r in measured],
                    instances_per_second=round(count / seconds, 1),
                    mb_per_second=round(total_bytes / 1e6 / seconds, 1))
        if name.startswith("storescp"):
            baseline[associations] = count / seconds
            rounds[associations] = [float(r["seconds"]) for r in measured]  # type: ignore[arg-type]
        else:
            best["ratio_to_storescp"] = round(count / seconds / baseline[associations], 3)
            # each round's node time against the storescp time of the same round
            best["ratio_per_round"] = [round(b / float(r["seconds"]), 3)  # type: ignore[arg-type]
                                       for b, r in zip(rounds[associations], measured,
                                                       strict=True)]
            best["pseudonymization_vs_receive"] = round(
                float(best["pseudonymized_seconds"]) / seconds, 2)  # type: ignore[arg-type]
            best["pseudonymization_vs_receive_per_round"] = [
                round(float(r["pseudonymized_seconds"]) / float(r["seconds"]), 2)  # type: ignore[arg-type]
                for r in measured]
        results.append(best)
    print(f"{count} CT instances, {total_bytes / 1e6:.0f} MB, {os.cpu_count()} CPUs")
    print(f"{'run':<28}{'seconds':>9}{'inst/s':>9}{'MB/s':>8}{'vs storescp':>13}"
          f"  {'pseudonymized (vs receive)'}")
    for r in results:
        ratio = r.get("ratio_to_storescp", "")
        pseudo = (f"{r['pseudonymized_seconds']} s ({r['pseudonymization_vs_receive']}x)"
                  if "pseudonymized_seconds" in r else "")
        print(f"{r['name']!s:<28}{r['seconds']!s:>9}{r['instances_per_second']!s:>9}"
              f"{r['mb_per_second']!s:>8}{ratio!s:>13}  {pseudo}")
    for r in results:
        if "ratio_per_round" in r:
            print(f"{r['name']}: ratio per round {r['ratio_per_round']}, pseudonymization vs"
                  f" receive per round {r['pseudonymization_vs_receive_per_round']}")
    return results


if __name__ == "__main__":
    sys.exit(main())
