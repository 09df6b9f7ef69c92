"""Fixtures for the end-to-end tests: stage 1 once per session, fresh stage-2 and Receiver nodes
per test or module, every node a subprocess stopped with SIGTERM and required to exit 0."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.synthetic import write_sample
from tests.e2e import SEED, Stage1Media, Stage2Factory, ok
from tests.receiver.harness import ReceiverFactory
from tests.stage1_modality.harness import NodeFactory, storescu

for tool in ("storescu", "echoscu"):
    if shutil.which(tool) is None:  # pragma: no cover - the CI image installs dcmtk
        pytest.skip(f"dcmtk's {tool} is not installed (apt-get install dcmtk)",
                    allow_module_level=True)


@pytest.fixture(scope="session")
def stage1_media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage1Media]:
    """The hospital half, once: storescu sends the sample to stage 1, which writes PDI media.

    The sample uses the "nested" layout (patient/study folders, files without extensions, plus
    a truncated file and a text file that storescu must skip), sent with ``+sd +r``.
    """
    factory = NodeFactory(lambda name: tmp_path_factory.mktemp(name))
    try:
        node = factory.folder("hospital", quiet_period_seconds=3600)
        running = factory.start(node)
        sample = tmp_path_factory.mktemp("sample")
        files = write_sample(sample, seed=SEED)
        sent = storescu(running.port, [sample], "+sd", "+r", "--no-halt")
        output = sent.stdout + sent.stderr
        assert output.count("Received Store Response (Success)") == len(files), output
        node.wait_processed(len(files))
        media = tmp_path_factory.mktemp("usb") / "MEDIA"
        written = ok(node.tce("stage1", "media", "write", str(media), "--all"))
        assert f"{len(files)} instances" in written, written
        assert running.stop() == 0, running.log()[-3000:]
        yield Stage1Media(media, sample, tuple(files), output, len(files))
    finally:
        problems = factory.close()
        assert not problems, "\n".join(problems)


def _receivers(make_dir: Callable[[str], Path]) -> Iterator[ReceiverFactory]:
    factory = ReceiverFactory(make_dir)
    try:
        yield factory
    finally:
        problems = factory.close()
        assert not problems, "\n".join(problems)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[ReceiverFactory]:
    """Receiver nodes (``tce init --role receiver``) for one test."""
    counter = iter(range(1, 1000))
    yield from _receivers(lambda name: tmp_path / f"{name}{next(counter)}")


@pytest.fixture(scope="module")
def module_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverFactory]:
    yield from _receivers(lambda name: tmp_path_factory.mktemp(name))


@pytest.fixture
def stage2(tmp_path: Path) -> Iterator[Stage2Factory]:
    """Stage-2 node folders (``tce init --role stage2``, own key ring) for one test."""
    counter = iter(range(1, 1000))
    factory = Stage2Factory(lambda name: tmp_path / f"{name}{next(counter)}")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_stage2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage2Factory]:
    factory = Stage2Factory(lambda name: tmp_path_factory.mktemp(name))
    yield factory
    factory.close()
