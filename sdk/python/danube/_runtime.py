"""The task each thread runs, and the step names each task has used.

The coordinator runs every task in its own thread and marks the thread with
`running_task`. `step.run` and `artifacts.upload` look the task up here to
tell the engine where they belong.

A thread that the script starts itself is not marked. When exactly one task
is running, such a thread is taken to work for that task, so a sequential
pipeline may run steps from a thread pool. With several tasks running, the
SDK cannot tell which one the thread works for and raises instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DanubeError


class TaskRun:
    """One running task: its name and the step names already given out."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._step_names: set[str] = set()

    def claim_step_name(self, name: str) -> str:
        """Return `name`, or `name (2)`, `name (3)`... if the task already
        used it, and record the result as used."""
        with self._lock:
            claimed = name
            suffix = 2
            while claimed in self._step_names:
                claimed = f"{name} ({suffix})"
                suffix += 1
            self._step_names.add(claimed)
            return claimed


_local = threading.local()
_running: dict[int, TaskRun] = {}
_running_lock = threading.Lock()


@contextmanager
def running_task(name: str) -> Iterator[TaskRun]:
    """Mark the calling thread as running the task `name` until the block ends."""
    run = TaskRun(name)
    previous: TaskRun | None = getattr(_local, "task", None)
    with _running_lock:
        _running[id(run)] = run
    _local.task = run
    try:
        yield run
    finally:
        _local.task = previous
        with _running_lock:
            del _running[id(run)]


def current_task(action: str) -> TaskRun:
    """Return the task the calling thread works for.

    Raises:
        DanubeError: no task is running, or several are and the calling
            thread belongs to none of them. `action` names the call in the message.
    """
    run: TaskRun | None = getattr(_local, "task", None)
    if run is not None:
        return run

    with _running_lock:
        runs = list(_running.values())
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise DanubeError(
            f"{action} was called outside a task: call it from a @pipeline or @task "
            "function, and run the file with `danube run`"
        )
    names = ", ".join(sorted(f"`{other.name}`" for other in runs))
    raise DanubeError(
        f"{action} was called from a thread that belongs to no task while tasks {names} "
        "run: call it from the task's own thread"
    )
