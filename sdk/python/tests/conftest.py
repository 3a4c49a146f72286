from __future__ import annotations

import os

# Keeps gRPC's INFO lines about closed test servers out of the output.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import FakeEngine, RunningEngine
from helpers import connected_to

from danube import _plan


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test defines its pipelines and tasks from scratch."""
    _plan.reset_registry()
    yield
    _plan.reset_registry()


@pytest.fixture
def engine() -> Iterator[RunningEngine]:
    """A fake engine on a loopback port; `engine.engine` is the servicer."""
    running = RunningEngine(FakeEngine())
    yield running
    running.stop()


@pytest.fixture
def connected(engine: RunningEngine) -> Iterator[None]:
    """The process-wide client, connected to the fake engine with its token."""
    with connected_to(engine.address):
        yield


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A job workspace in a temp dir, as DANUBE_WORKSPACE and the cwd."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("DANUBE_WORKSPACE", str(root))
    monkeypatch.chdir(root)
    return root
