"""``tce demo``: the README's first command, run as a user runs it, and what it leaves behind.

The demo runs once per module (``tce demo demo`` in a fresh folder, as ``scripts/demo`` does);
the tests read its output and the folder. ``--keep-running`` is started as a separate process:
the test talks to the nodes it leaves up with pynetdicom, then stops it with SIGTERM.
The node runner and the folder helpers are tested on their own, against real nodes and files.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from appliance.demo.folders import MARKER, DemoFolderError, DemoFolders, set_values
from appliance.demo.nodes import NodeError, NodeProcess
from appliance.demo.scan import scan_folders
from appliance.settings import load
from appliance.synthetic import (
    make_ct_instance,
    make_sample_study_set,
    original_uids,
    planted_phi,
    sample_patients,
)
from tests.stage1_modality.harness import echo, send

TCE = Path(sys.executable).parent / "tce"
POLICY = "research-age-band-5y"
TIME_LIMIT = 120  # the promise on a 2-core machine
SAMPLE = make_sample_study_set(0)
BURNED = [ds for ds in SAMPLE if ds.get("BurnedInAnnotation") == "YES"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("TCE_CONFIG", "TCE_DATABASE_URL")}


def assert_demo_status(code: int, output: str) -> None:
    assert code == 0, output
    assert re.search(r"tce demo finished in [0-9.]+ s: OK$", output.rstrip()), output


@dataclass(frozen=True)
class DemoRun:
    root: Path
    code: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    cwd = tmp_path_factory.mktemp("user")
    started = time.monotonic()
    done = subprocess.run([str(TCE), "demo", "demo"], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=TIME_LIMIT * 2, check=False)
    return DemoRun(cwd / "demo", done.returncode, done.stdout + done.stderr,
                   time.monotonic() - started)


def test_demo_succeeds_within_the_time_limit_and_names_its_folder(demo: DemoRun) -> None:
    assert_demo_status(demo.code, demo.output)
    assert demo.seconds < TIME_LIMIT, demo.seconds
    assert demo.output.startswith("tce demo: the whole chain on loopback, in demo/")
    assert "Everything is in demo/:" in demo.output
    assert "Traceback" not in demo.output


def test_steps_are_numbered_and_show_the_commands(demo: DemoRun) -> None:
    titles = re.findall(r"^ ?(\d+)\. ", demo.output, re.MULTILINE)
    assert titles == [str(n) for n in range(1, 12)], titles
    for command in ("$ tce init demo/stage1 --role stage1",
                    "$ TCE_CONFIG=demo/stage1/tce.yaml tce stage1 media write demo/media --all",
                    "$ TCE_CONFIG=demo/stage2/tce.yaml tce stage2 import demo/media",
                    "$ TCE_CONFIG=demo/stage2/tce.yaml tce stage2 export"):
        assert command in demo.output


def test_the_sender_skips_the_text_file_and_stage1_refuses_the_truncated_one(
        demo: DemoRun) -> None:
    assert f"23 file(s) sent: {len(SAMPLE)} stored, 1 refused; 1 skipped" in demo.output
    assert "refused  PAT00001/STU00001/IMG99999.dcm: status 0xC210" in demo.output
    assert "skipped  notes.txt: not a DICOM file" in demo.output


def test_preview_approval_and_the_held_instance_are_shown(demo: DemoRun) -> None:
    assert re.search(r"tce stage2 preview \d+ --policy research-age-band-5y", demo.output)
    assert "age          092Y -> 090Y (90 years or older)" in demo.output
    assert "! BurnedInAnnotation YES in 1 instance(s)" in demo.output
    assert demo.output.count(f"APPROVED with {POLICY}") == 5
    assert "by Demo Privacy Officer" in demo.output
    assert f"{len(SAMPLE) - 1} instance(s) sent, 1 failed" in demo.output
    assert f"held for review: {len(BURNED)} instance(s) flagged BurnedInAnnotation=YES" \
        in demo.output


def test_before_after_table_follows_the_first_ct_through_both_stages(demo: DemoRun) -> None:
    first = SAMPLE[0]
    assert first.Modality == "CT" and first.PatientName == "Doe^John"
    rows = {re.split(r"\s{2,}", line.strip())[0]: line for line in demo.output.splitlines()
            if line.startswith("    ") and "→" in line}
    assert list(rows) == ["name", "ID", "age", "birth date", "study date", "study UID"]
    assert re.search(r"Doe\^John +→ PSEUDO\^(\w+) +→ \(empty\)$", rows["name"])
    pseudonym = re.search(r"PSEUDO\^(\w+)", rows["name"]).group(1)  # type: ignore[union-attr]
    assert re.search(rf"{first.PatientID} +→ PSN{pseudonym} +→ \w+$", rows["ID"])
    assert re.search(r"092Y +→ 092Y +→ 090Y$", rows["age"])
    assert re.search(rf"{first.PatientBirthDate} +→ {first.PatientBirthDate} +→ \(empty\)$",
                     rows["birth date"])
    study = re.search(rf"{first.StudyDate} +→ {first.StudyDate} +→ (\d{{8}})$", rows["study date"])
    assert study and study.group(1) != first.StudyDate
    assert re.search(r"1\.2\.826\S+ +→ 2\.25\.\S+ +→ 2\.25\.\S+$", rows["study UID"])
    assert "after stage 1 (media)" in demo.output and "after stage 2 (Receiver)" in demo.output
    assert "planted identifiers found: 0" in demo.output


def test_the_verification_result_is_reported(demo: DemoRun) -> None:
    assert "verify: passed" in demo.output
    assert (demo.root / "verify.json").is_file()


def test_the_folder_holds_media_logs_databases_and_separate_key_rings(demo: DemoRun) -> None:
    root = demo.root
    assert (root / MARKER).is_file()
    assert (root / "media" / "DICOMDIR").is_file()
    on_media = [p for p in (root / "media" / "DICOM").rglob("*") if p.is_file()]
    assert len(on_media) == len(SAMPLE)
    for role in ("stage1", "stage2", "receiver"):
        assert (root / role / "tce.yaml").is_file()
        assert (root / role / "tce.sqlite3").is_file()
        assert (root / "logs" / f"{role}.log").stat().st_size > 0
    rings = [(root / role / "keys" / "keyring.json").read_bytes() for role in ("stage1", "stage2")]
    assert rings[0] != rings[1]
    assert not (root / "receiver" / "keys").exists()


def test_the_receiver_holds_everything_but_the_burned_in_instance(demo: DemoRun) -> None:
    store = load(demo.root / "receiver" / "tce.yaml", environ={}).receiver.store_dir
    received = [pydicom.dcmread(p, stop_before_pixels=True) for p in store.rglob("*.dcm")]
    assert len(received) == len(SAMPLE) - len(BURNED) == 21
    assert all(ds.PatientIdentityRemoved == "YES" for ds in received)
    assert not [ds for ds in received if ds.get("BurnedInAnnotation") == "YES"]


def test_logs_hold_no_planted_identifier_and_the_scan_can_find_them(demo: DemoRun) -> None:
    values = [*planted_phi(sample_patients(0)), *original_uids(SAMPLE)]
    assert scan_folders([demo.root / "logs"], values).found == 0
    assert scan_folders([demo.root / "sample"], values).found > 50  # the scan finds PHI


def test_the_nodes_are_stopped_when_the_demo_ends(demo: DemoRun) -> None:
    pids = [int(p) for p in re.findall(r"answers C-ECHO \(pid (\d+)\)", demo.output)]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- --keep-running ------------------------------------------------------------------------


class Lines:
    """The output of a running process, line by line, with a timeout."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return "".join(self.seen)
        raise AssertionError(f"{text!r} not printed:\n{''.join(self.seen)}")

    def rest(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


def test_keep_running_leaves_the_nodes_up_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(TCE), "demo", "kept", "--keep-running"], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        shown = lines.until("Press Ctrl-C", timeout=TIME_LIMIT)
        stage1 = re.search(r"stage 1 +AE title (\S+) +host (\S+) +port (\d+)", shown)
        receiver = re.search(r"Receiver +AE title (\S+) +host (\S+) +port (\d+)", shown)
        assert stage1 and receiver, shown
        assert stage1.group(1) == "TCE_STAGE1" and receiver.group(1) == "TCE_RECEIVER"
        assert f"echoscu -aec TCE_STAGE1 127.0.0.1 {stage1.group(3)}" in shown
        port1, port_rx = int(stage1.group(3)), int(receiver.group(3))
        assert echo(port1, calling="ANY_SCU", called="TCE_STAGE1") == 0x0000
        assert echo(port_rx, calling="ANY_SCU", called="TCE_RECEIVER") == 0x0000

        store = tmp_path / "kept" / "stage1" / "stage1" / "store"
        before = sum(1 for p in store.rglob("*") if p.is_file())
        ct = make_ct_instance(0, generate_uid(), generate_uid(), sample_patients(7)[0], 64, 64)
        assert send(port1, [ct], calling="ANY_SCU") == [(str(ct.SOPInstanceUID), 0x0000)]

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        output = lines.rest()
        assert "Stopping the nodes (SIGTERM)" in output
        assert_demo_status(code, output)
        after = sum(1 for p in store.rglob("*") if p.is_file())
        assert after == before + 1  # stage 1 finished the instance before it stopped
        for port in (port1, port_rx):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_sigterm_during_the_run_stops_the_nodes_and_fails(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(TCE), "demo", "cut"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.until("Receiver  TCE_RECEIVER@", timeout=TIME_LIMIT)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        output = lines.rest()
        assert code == 1, output
        assert re.search(r"FAILED: stopped by SIGTERM during step \d+$", output.rstrip()), output
        pids = [int(p) for p in re.findall(r"answers C-ECHO \(pid (\d+)\)", output)]
        assert len(pids) == 2
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


# --- the pieces -----------------------------------------------------------------------------


def test_a_folder_not_made_by_the_demo_is_refused_and_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me", encoding="utf-8")
    done = subprocess.run([str(TCE), "demo", str(mine)], env=_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not empty and was not made by 'tce demo'" in done.stderr
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    with pytest.raises(DemoFolderError):
        DemoFolders(mine).prepare()


def test_an_earlier_demo_folder_is_replaced(tmp_path: Path) -> None:
    folders = DemoFolders(tmp_path / "demo")
    assert folders.prepare() is False
    (folders.root / "old.txt").write_text("from the last run", encoding="utf-8")
    assert folders.prepare() is True
    assert sorted(p.name for p in folders.root.iterdir()) == [MARKER, "logs"]


def test_set_values_edits_lines_in_place_and_keeps_the_comments(tmp_path: Path) -> None:
    node = tmp_path / "research"
    subprocess.run([str(TCE), "init", str(node), "--role", "stage2"], env=_env(), check=True,
                   capture_output=True, timeout=60)
    config = node / "tce.yaml"
    comments = [line for line in config.read_text().splitlines() if line.lstrip().startswith("#")]
    set_values(config, {"stage2.receiver.port": 40123, "log_file": "../logs/stage2.log"})
    settings = load(config, environ={})
    assert settings.stage2.receiver.port == 40123
    assert settings.log_file is not None
    assert settings.log_file.resolve() == (tmp_path / "logs" / "stage2.log").resolve()
    assert [line for line in config.read_text().splitlines()
            if line.lstrip().startswith("#")] == comments
    with pytest.raises(KeyError, match=r"stage2\.receiver\.prot"):
        set_values(config, {"stage2.receiver.prot": 1})


def test_the_runner_starts_stops_and_reports_a_port_in_use(tmp_path: Path) -> None:
    subprocess.run([str(TCE), "init", str(tmp_path / "rx"), "--role", "receiver"], env=_env(),
                   check=True, capture_output=True, timeout=60)
    config = tmp_path / "rx" / "tce.yaml"
    node = NodeProcess.start("receiver", config)
    assert node.running and echo(node.port, called="TCE_RECEIVER") == 0x0000
    assert node.stop() == 0 and not node.running
    assert '"event": "receiver.listening"' in node.log()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NodeError, match="in use"):
            NodeProcess.start("receiver", config, port=port, timeout=20)
