"""Fixtures for the Receiver tests: real nodes in subprocesses, torn down with SIGTERM.

Every node still running at teardown is stopped with SIGTERM, and the teardown fails unless it
exits 0: a graceful stop is part of what every test proves.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.receiver.harness import ReceiverFactory


def _factory(make_dir: Callable[[str], Path]) -> Iterator[ReceiverFactory]:
    for tool in ("storescu", "echoscu", "dcmdump"):
        if shutil.which(tool) is None:  # pragma: no cover - the CI image installs dcmtk
            pytest.skip(f"dcmtk's {tool} is not installed (apt-get install dcmtk)")
    factory = ReceiverFactory(make_dir)
    try:
        yield factory
    finally:
        problems = factory.close()
        assert not problems, "\n".join(problems)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[ReceiverFactory]:
    """Receivers for one test."""
    counter = iter(range(1, 1000))
    yield from _factory(lambda name: tmp_path / f"{name}{next(counter)}")


@pytest.fixture(scope="module")
def module_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverFactory]:
    """Receivers shared by the tests of one module."""
    yield from _factory(lambda name: tmp_path_factory.mktemp(name))
