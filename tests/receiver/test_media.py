"""``tce receiver media write OUT``: received studies as IHE PDI media any DICOM reader can open.

The sample study set (5 studies, 22 instances of 7 SOP classes) is sent with dcmtk's storescu to
a running Receiver; the media are then written by the CLI, as an operator would, and read back
with dcmtk's ``dcmdump`` and pydicom's FileSet.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from sqlalchemy import select

from appliance.models import Media, MediaStudy
from appliance.synthetic import make_sample_study_set
from tests.receiver.harness import (
    SUCCESS,
    ReceiverDir,
    ReceiverFactory,
    RunningReceiver,
    ct_instances,
    send,
    storescu,
    write,
)

Node = tuple[ReceiverDir, RunningReceiver, dict[str, str]]


@pytest.fixture(scope="module")
def node(module_receivers: ReceiverFactory,
         tmp_path_factory: pytest.TempPathFactory) -> Node:
    """A running Receiver holding the sample study set; {SOP Instance UID: Study UID}."""
    folder = module_receivers.folder("media")
    running = module_receivers.start(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        datasets = make_sample_study_set(0)
    source = tmp_path_factory.mktemp("media-source")
    paths = [write(ds, source / f"{i:02d}.dcm") for i, ds in enumerate(datasets)]
    done = storescu(running.port, paths)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, running, {str(ds.SOPInstanceUID): str(ds.StudyInstanceUID)
                             for ds in datasets}


def _fileset(root: Path) -> dict[str, Path]:
    """{SOP Instance UID: file} as pydicom's FileSet reads them from root/DICOMDIR."""
    fs = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    return {str(inst.SOPInstanceUID): Path(inst.path) for inst in fs}


def _media_rows(folder: ReceiverDir) -> list[tuple[str, int, int, list[str]]]:
    with folder.engine.connect() as conn:
        media = list(conn.execute(select(Media.__table__).order_by(Media.id)))
        studies = list(conn.execute(select(MediaStudy.__table__)))
    return [(m.path, m.instance_count, m.study_count,
             sorted(s.study_uid for s in studies if s.media_id == m.id)) for m in media]


def test_media_holds_every_received_instance_readable_by_dcmdump_and_pydicom(
        node: Node, tmp_path: Path) -> None:
    folder, _running, sent = node
    out = tmp_path / "usb"
    done = folder.tce("receiver", "media", "write", str(out))
    assert done.returncode == 0, done.stderr
    assert "5 studies, 22 instances" in done.stdout
    dump = subprocess.run(["dcmdump", "-q", str(out / "DICOMDIR")], capture_output=True,
                          text=True, errors="replace", timeout=60, check=False)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("(0004,1500)") == 22  # one Referenced File ID per instance
    on_media = _fileset(out)
    assert set(on_media) == set(sent)
    stored = folder.instances()
    for uid, path in on_media.items():
        assert path.read_bytes() == Path(stored[uid].store_path).read_bytes()
    assert (out / "README.TXT").is_file() and (out / "INDEX.HTM").is_file()
    assert _media_rows(folder)[-1] == (str(out), 22, 5, sorted(set(sent.values())))
    assert {s.state for s in folder.studies().values()} == {"MEDIA_WRITTEN"}
    assert folder.audit("media.written")


def test_study_option_writes_only_that_study(node: Node, tmp_path: Path) -> None:
    folder, _running, sent = node
    study = next(iter(sent.values()))
    out = tmp_path / "one"
    done = folder.tce("receiver", "media", "write", str(out), "--study", study)
    assert done.returncode == 0, done.stderr
    assert set(_fileset(out)) == {uid for uid, st in sent.items() if st == study}
    assert _media_rows(folder)[-1][2:] == (1, [study])


def test_small_volumes_split_into_independent_file_sets(node: Node, tmp_path: Path) -> None:
    folder, _running, sent = node
    out = tmp_path / "cds"
    done = folder.tce("receiver", "media", "write", str(out), "--volume-bytes", "400000")
    assert done.returncode == 0, done.stderr
    volumes = sorted(out.glob("VOL*"))
    assert len(volumes) > 1
    found: dict[str, Path] = {}
    for volume in volumes:
        found.update(_fileset(volume))
    assert set(found) == set(sent)
    assert [row[0] for row in _media_rows(folder)[-len(volumes):]] == [str(v) for v in volumes]


def test_refusals_write_nothing(node: Node, tmp_path: Path) -> None:
    folder, _running, _sent = node
    rows = len(_media_rows(folder))
    done = folder.tce("receiver", "media", "write", str(tmp_path / "x"), "--study", "1.2.3.4")
    assert done.returncode == 1
    assert "unknown study UID(s): 1.2.3.4" in done.stderr
    assert not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("operator's file")
    done = folder.tce("receiver", "media", "write", str(busy))
    assert done.returncode == 1 and "--overwrite" in done.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert len(_media_rows(folder)) == rows
    done = folder.tce("receiver", "media", "write", str(busy), "--volume-bytes", "10")
    assert done.returncode == 2 and "--volume-bytes" in done.stderr
    done = folder.tce("receiver", "media", "write", str(busy), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (busy / "DICOMDIR").is_file()


def test_a_new_instance_after_media_reopens_its_study(node: Node) -> None:
    folder, running, sent = node
    extra = ct_instances("after-media", 1)[0]
    extra.StudyInstanceUID = next(iter(sent.values()))
    assert send(running.port, [extra]) == [SUCCESS]
    study = folder.studies()[str(extra.StudyInstanceUID)]
    assert study.state == "RECEIVING" and study.media_written_at is not None


def test_empty_receiver_has_nothing_to_write(receivers: ReceiverFactory, tmp_path: Path) -> None:
    folder = receivers.folder("empty")
    done = folder.tce("receiver", "media", "write", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "holds no study yet" in done.stderr
    assert folder.tce("receiver", "studies").stdout.strip() == "no studies received yet"
