"""step.run's names and argument checks, which need no engine."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from helpers import in_task

from danube import DanubeError, step
from danube._runtime import TaskRun, current_task, running_task
from danube.step import derive_step_name


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("npm ci", "npm ci"),
        ("  npm   run\tlint  ", "npm run lint"),
        ("\n\n  make test\n", "make test"),
        ("set -e\nmake\nmake install", "set -e …"),
        ("x" * 40, "x" * 40),
        ("x" * 41, "x" * 39 + "…"),
        (
            "python -m pytest --maxfail=1 -q tests/unit tests/integration",
            "python -m pytest --maxfail=1 -q tests/u…",
        ),
    ],
)
def test_step_name_derived_from_command(command: str, expected: str) -> None:
    derived = derive_step_name(command)

    assert derived == expected
    assert len(derived) <= 40


def test_repeated_step_names_get_suffixes() -> None:
    run = TaskRun("main")

    claimed = [run.claim_step_name(name) for name in ["test", "test", "build", "test"]]

    assert claimed == ["test", "test (2)", "build", "test (3)"]


def test_suffix_skips_names_already_taken() -> None:
    run = TaskRun("main")

    claimed = [run.claim_step_name(name) for name in ["test (2)", "test", "test"]]

    assert claimed == ["test (2)", "test", "test (3)"]


def test_step_names_are_unique_across_threads() -> None:
    run = TaskRun("main")
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        for _ in range(50):
            name = run.claim_step_name("build")
            with lock:
                claimed.append(name)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(claimed) == 400
    assert set(claimed) == {"build"} | {f"build ({n})" for n in range(2, 401)}


def test_each_task_thread_sees_its_own_task() -> None:
    seen: dict[str, str] = {}
    both_running = threading.Barrier(2)

    def work(name: str) -> None:
        with running_task(name):
            both_running.wait()
            seen[name] = current_task("test").name

    threads = [threading.Thread(target=work, args=(name,)) for name in ["a", "b"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == {"a": "a", "b": "b"}


def test_helper_thread_works_for_the_only_running_task() -> None:
    found: list[str] = []
    with in_task("main"):
        helper = threading.Thread(target=lambda: found.append(current_task("test").name))
        helper.start()
        helper.join()

    assert found == ["main"]


def test_helper_thread_with_several_tasks_running_is_rejected() -> None:
    errors: list[Exception] = []

    def from_helper() -> None:
        try:
            current_task("step.run")
        except DanubeError as error:
            errors.append(error)

    with in_task("a"):
        other_ready = threading.Event()
        release = threading.Event()

        def other_task() -> None:
            with running_task("b"):
                other_ready.set()
                release.wait()

        other = threading.Thread(target=other_task)
        other.start()
        other_ready.wait()
        helper = threading.Thread(target=from_helper)
        helper.start()
        helper.join()
        release.set()
        other.join()

    assert len(errors) == 1
    assert "tasks `a`, `b` run" in str(errors[0])


def test_step_outside_task_is_rejected() -> None:
    with pytest.raises(DanubeError, match="step.run was called outside a task"):
        step.run("make")


def test_step_without_engine_says_how_to_run() -> None:
    with in_task(), pytest.raises(DanubeError, match="not connected to an engine.*danube run"):
        step.run("make")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"command": ["make", "test"]}, TypeError, "join a list with shlex.join"),
        ({"command": b"make"}, TypeError, "command must be a string"),
        ({"command": "   "}, ValueError, "command must not be empty"),
        ({"command": "make\0"}, ValueError, "NUL"),
        ({"command": "make", "name": ""}, ValueError, "step name must not be empty"),
        ({"command": "make", "name": "a\nb"}, ValueError, "control characters"),
        ({"command": "make", "name": 3}, TypeError, "step name must be a string"),
        ({"command": "make", "image": ""}, ValueError, "image must not be empty"),
        ({"command": "make", "env": ["A=1"]}, TypeError, "env must be a dict"),
        ({"command": "make", "env": {"A": 1}}, TypeError, "env value of `A` must be a string"),
        ({"command": "make", "env": {1: "x"}}, TypeError, "env keys must be strings"),
        ({"command": "make", "env": {"A=B": "x"}}, ValueError, "not a valid variable name"),
        ({"command": "make", "env": {"": "x"}}, ValueError, "not a valid variable name"),
        ({"command": "make", "env": {"A": "x\0"}}, ValueError, "env value of `A` must not contain"),
        ({"command": "make", "check": "no"}, TypeError, "check must be True or False"),
        ({"command": "make", "capture": 1}, TypeError, "capture must be True or False"),
        ({"command": "make", "timeout": 0}, ValueError, "timeout must be a positive number"),
        ({"command": "make", "timeout": -1.5}, ValueError, "timeout must be a positive number"),
        (
            {"command": "make", "timeout": float("nan")},
            ValueError,
            "timeout must be a positive number",
        ),
        (
            {"command": "make", "timeout": timedelta(0)},
            ValueError,
            "timeout must be a positive number",
        ),
        ({"command": "make", "timeout": "10"}, TypeError, "timeout must be a number of seconds"),
        ({"command": "make", "timeout": True}, TypeError, "timeout must be a number of seconds"),
    ],
)
def test_invalid_step_arguments_are_rejected(arguments: dict, error: type, message: str) -> None:
    # Checked before anything else: no task and no engine are needed.
    with pytest.raises(error, match=message):
        step.run(**arguments)


def test_env_error_never_shows_the_value() -> None:
    with pytest.raises(ValueError) as raised:
        step.run("deploy", env={"TOKEN": "hunter2\0"})

    assert "hunter2" not in str(raised.value)
