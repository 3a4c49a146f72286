"""Helpers shared by the tests: running code as a task, running the coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fake_engine import TOKEN

from danube import _client, _runtime

SDK_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def in_task(name: str = "main") -> Iterator[_runtime.TaskRun]:
    with _runtime.running_task(name) as run:
        yield run


@contextmanager
def connected_to(address: str, token: str = TOKEN, retry_window: float = 5) -> Iterator[None]:
    """Connect the process-wide client for the duration of the block."""
    _client.connect(address, token, retry_window)
    try:
        yield
    finally:
        _client.set_client(None)


def run_coordinator(
    address: str,
    workspace: Path,
    source: str,
    *args: str,
    token: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Write `source` as danubefile.py in `workspace` and run the coordinator
    on it the way the engine does: cwd = workspace, token on stdin."""
    (workspace / "danubefile.py").write_text(source)
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("DANUBE_")}
    child_env.update(
        {
            "PYTHONPATH": str(SDK_ROOT),
            "DANUBE_ENGINE_ADDR": address,
            "DANUBE_JOB_ID": "job-42",
            "DANUBE_PIPELINE": "",
            "DANUBE_REPO": "https://example.invalid/repo.git",
            "DANUBE_BRANCH": "main",
            "DANUBE_COMMIT_SHA": "0123abcd",
            "DANUBE_TRIGGER_TYPE": "local",
            "DANUBE_TRIGGER_REF": "",
            "DANUBE_WORKSPACE": str(workspace),
        }
    )
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "danube._coordinator", "--file", "danubefile.py", *args],
        cwd=workspace,
        env=child_env,
        input=f"{TOKEN if token is None else token}\n",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
