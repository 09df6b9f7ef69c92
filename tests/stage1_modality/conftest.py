"""Fixtures for the stage-1 node tests: real nodes in subprocesses, torn down with SIGTERM.

Every node started through :func:`nodes` or :func:`module_nodes` that is still running at
teardown is stopped with SIGTERM, and the teardown fails unless it exits 0 and its worker
processes end with it: a graceful stop is part of what every test proves.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.stage1_modality.harness import NodeFactory

for tool in ("storescu", "echoscu", "dcmdump"):
    if shutil.which(tool) is None:  # pragma: no cover - the CI image installs dcmtk
        pytest.skip(f"dcmtk's {tool} is not installed (apt-get install dcmtk)",
                    allow_module_level=True)


def _factory(make_dir: Callable[[str], Path]) -> Iterator[NodeFactory]:
    factory = NodeFactory(make_dir)
    try:
        yield factory
    finally:
        problems = factory.close()
        assert not problems, "\n".join(problems)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeFactory]:
    """Nodes for one test."""

    def make_dir(name: str) -> Path:
        folder = tmp_path / name
        n = 1
        while folder.exists():
            n += 1
            folder = tmp_path / f"{name}{n}"
        return folder

    yield from _factory(make_dir)


@pytest.fixture(scope="module")
def module_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Nodes shared by the tests of one module."""
    yield from _factory(lambda name: tmp_path_factory.mktemp(name))
