"""``tce stage1 media write``: which studies go on the media, volumes, and what the DB records.

The node runs with a one-hour quiet period, so no study becomes COMPLETE by itself here: the
default selection (``--all-complete``) finds nothing, ``--study`` and ``--all`` pick studies
explicitly and finish their queued work first.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from sqlalchemy import select

from appliance.models import Instance, Media, Study, StudyState
from appliance.synthetic import make_sample_study_set, write_datasets
from tests.stage1_modality.harness import NodeDir, NodeFactory, storescu

VOLUME_BYTES = 150_000  # the 22-instance sample is about 0.4 MB


@pytest.fixture(scope="module")
def node(module_nodes: NodeFactory, tmp_path_factory: pytest.TempPathFactory) -> NodeDir:
    node = module_nodes.folder("media", quiet_period_seconds=3600)
    running = module_nodes.start(node)
    sample = tmp_path_factory.mktemp("sample")
    write_datasets(make_sample_study_set(0), sample, layout="flat")
    done = storescu(running.port, [sample], "+sd", "+r")
    assert done.returncode == 0, done.stderr
    return node


def _studies(node: NodeDir) -> dict[str, tuple[StudyState, int]]:
    """What ``tce stage1 studies`` lists: {new Study Instance UID: (state, instance count)}."""
    done = node.tce("stage1", "studies")
    assert done.returncode == 0, done.stderr
    listed = {}
    for line in done.stdout.splitlines():
        uid, state, count, *_ = line.split()
        listed[uid] = (StudyState(state), int(count))
    return listed


def _instances_by_study(node: NodeDir) -> dict[str | None, int]:
    """Instances per new Study Instance UID (None: instances that never got one)."""
    counts: dict[str | None, int] = {}
    with node.engine.connect() as conn:
        for study in conn.scalars(select(Instance.new_study_instance_uid)):
            counts[study] = counts.get(study, 0) + 1
    return counts


def _load(root: Path) -> list[pydicom.Dataset]:
    return [instance.load() for instance in FileSet(pydicom.dcmread(root / "DICOMDIR"))]


def test_all_complete_with_nothing_complete_fails_clearly(node: NodeDir, tmp_path: Path) -> None:
    out = tmp_path / "media"
    for argv in (["--all-complete"], []):  # --all-complete is the default
        done = node.tce("stage1", "media", "write", str(out), *argv)
        assert done.returncode == 1
        assert "no complete study to write" in done.stderr
        assert "--all" in done.stderr  # says what to do
        assert not out.exists()


def test_unknown_study_fails_and_names_the_way_out(node: NodeDir, tmp_path: Path) -> None:
    done = node.tce("stage1", "media", "write", str(tmp_path / "m"), "--study", "2.25.1234")
    assert done.returncode == 1
    assert "unknown study UID(s): 2.25.1234" in done.stderr
    assert "tce stage1 studies" in done.stderr


def test_study_selection_writes_only_that_study_and_marks_it(node: NodeDir,
                                                             tmp_path: Path) -> None:
    listed = _studies(node)
    assert len(listed) == 5
    chosen = max(listed, key=lambda uid: _instances_by_study(node)[uid])
    out = tmp_path / "media"
    done = node.tce("stage1", "media", "write", str(out), "--study", chosen)
    assert done.returncode == 0, done.stderr
    on_media = _load(out)
    assert {str(ds.StudyInstanceUID) for ds in on_media} == {chosen}
    assert len(on_media) == _instances_by_study(node)[chosen] == 10
    after = _studies(node)
    assert after[chosen][0] is StudyState.MEDIA_WRITTEN
    assert all(state is not StudyState.MEDIA_WRITTEN
               for uid, (state, _n) in after.items() if uid != chosen)


def test_small_volume_size_splits_the_media_into_volumes(node: NodeDir, tmp_path: Path) -> None:
    out = tmp_path / "media"
    done = node.tce("stage1", "media", "write", str(out), "--all",
                    "--volume-bytes", str(VOLUME_BYTES))
    assert done.returncode == 0, done.stderr
    volumes = sorted(p for p in out.iterdir())
    assert len(volumes) >= 3
    assert [v.name for v in volumes] == [f"VOL{n:03d}" for n in range(1, len(volumes) + 1)]
    seen: list[str] = []
    for volume in volumes:
        assert (volume / "DICOMDIR").is_file() and (volume / "README.TXT").is_file()
        dump = subprocess.run(["dcmdump", str(volume / "DICOMDIR")], capture_output=True,
                              text=True, check=False)
        assert dump.returncode == 0, dump.stderr
        seen += [str(ds.SOPInstanceUID) for ds in _load(volume)]
        size = sum(p.stat().st_size for p in volume.rglob("*") if p.is_file())
        assert size <= VOLUME_BYTES, f"{volume.name} holds {size} bytes"
    assert len(seen) == len(set(seen)) == 22  # every instance once, the written study too
    with node.engine.connect() as conn:
        media = list(conn.execute(select(Media.volume, Media.instance_count)))
    assert sum(count for name, count in media if name and name.startswith("VOL")) == 22
    assert {state for state, _n in _studies(node).values()} == {StudyState.MEDIA_WRITTEN}


def test_existing_media_is_not_overwritten_without_overwrite(node: NodeDir,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "media"
    assert node.tce("stage1", "media", "write", str(out), "--all").returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    done = node.tce("stage1", "media", "write", str(out), "--all")
    assert done.returncode == 1
    assert "--overwrite" in done.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    written_before = _media_written_at(node)
    done = node.tce("stage1", "media", "write", str(out), "--all", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert len(_load(out)) == 22
    written_after = _media_written_at(node)
    for uid, at in written_before.items():
        later = written_after[uid]
        assert at is not None and later is not None and later > at, uid


def _media_written_at(node: NodeDir) -> dict[str, datetime | None]:
    with node.engine.connect() as conn:
        return {uid: at for uid, at in conn.execute(
            select(Study.new_study_instance_uid, Study.media_written_at))}


def test_without_out_each_write_gets_its_own_dated_folder(node: NodeDir) -> None:
    media_dir = node.settings.stage1.media_dir
    before = set(media_dir.iterdir()) if media_dir.exists() else set()
    written = []
    for _ in range(2):
        done = node.tce("stage1", "media", "write", "--all")
        assert done.returncode == 0, done.stderr
        [path] = [line.split()[1].rstrip(":") for line in done.stdout.splitlines()
                  if line.startswith("wrote ")]
        written.append(Path(path))
    assert written[0] != written[1]
    assert set(media_dir.iterdir()) - before == set(written)
    for folder in written:
        assert folder.parent == media_dir and folder.name[:8].isdigit()
        assert len(_load(folder)) == 22
