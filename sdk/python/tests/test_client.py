"""step.run and secrets.get against the fake engine over real gRPC."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from fake_engine import TOKEN, FakeEngine, RunningEngine, ended, exited
from helpers import connected_to, in_task

from danube import (
    EngineError,
    EngineUnavailable,
    JobCancelled,
    SecretError,
    StepFailed,
    StepTimedOut,
    secrets,
    step,
)
from danube._proto import job_pb2


def test_token_is_sent_on_every_call(engine: RunningEngine, connected) -> None:
    engine.engine.secrets["API_KEY"] = "value"

    with in_task():
        step.run("make")
        secrets.get("API_KEY")

    assert engine.engine.authorizations == [
        ("RunStep", f"Bearer {TOKEN}"),
        ("GetSecret", f"Bearer {TOKEN}"),
    ]


def test_wrong_token_is_an_engine_error(engine: RunningEngine) -> None:
    with connected_to(engine.address, token="stolen-token"), in_task():
        with pytest.raises(EngineError) as raised:
            step.run("make")

    assert raised.value.code == "PERMISSION_DENIED"
    assert "stolen-token" not in str(raised.value)


def test_step_request_carries_every_argument(engine: RunningEngine, connected) -> None:
    with in_task("build"):
        code = step.run(
            "make all",
            name="compile",
            image="gcc:14",
            env={"CC": "gcc", "EMPTY": ""},
            timeout=12.5,
        )

    assert code == 0
    [request] = engine.engine.steps
    assert request.task == "build"
    assert request.name == "compile"
    assert request.command == "make all"
    assert request.image == "gcc:14"
    assert dict(request.env) == {"CC": "gcc", "EMPTY": ""}
    assert request.timeout_seconds == 12.5
    assert request.capture is False


def test_default_step_names_are_derived_and_deduplicated(engine: RunningEngine, connected) -> None:
    with in_task("main"):
        step.run("npm test")
        step.run("npm test")
        step.run("npm test", name="npm test")

    assert [request.name for request in engine.engine.steps] == [
        "npm test",
        "npm test (2)",
        "npm test (3)",
    ]
    assert engine.engine.steps[0].timeout_seconds == 0
    assert engine.engine.steps[0].image == ""


def test_failed_step_raises_step_failed(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["npm test"] = exited(3)

    with in_task("unit"), pytest.raises(StepFailed) as raised:
        step.run("npm test", name="test")

    assert raised.value.exit_code == 3
    assert raised.value.step == "test"
    assert raised.value.task == "unit"
    assert str(raised.value) == "step `test` in task `unit` failed with exit code 3"


def test_failed_step_with_check_false_returns_code(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["npm test"] = exited(137)

    with in_task():
        code = step.run("npm test", check=False)

    assert code == 137


def test_capture_returns_stdout_only(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["git rev-parse HEAD"] = [
        *exited(0, stdout=b"abc", stderr=b"warning: noise\n")[:-1],
        *exited(0, stdout=b"123\n"),
    ]

    with in_task():
        output = step.run("git rev-parse HEAD", capture=True)

    assert output == "abc123\n"
    assert engine.engine.steps[0].capture is True


def test_capture_replaces_invalid_utf8(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["cat blob"] = exited(0, stdout=b"ok \xff\xfe end")

    with in_task():
        output = step.run("cat blob", capture=True)

    assert output == "ok \ufffd\ufffd end"


def test_capture_with_failure_keeps_output_on_exception(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["make"] = exited(2, stdout=b"partial\n")

    with in_task(), pytest.raises(StepFailed) as raised:
        step.run("make", capture=True)

    assert raised.value.output == "partial\n"


def test_unchecked_capture_returns_failed_output(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["make"] = exited(2, stdout=b"partial\n")

    with in_task():
        output = step.run("make", capture=True, check=False)

    assert output == "partial\n"


def test_timed_out_step_raises_step_timed_out(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["sleep 100"] = ended(job_pb2.STEP_OUTCOME_TIMED_OUT, exit_code=137)

    with in_task("slow"), pytest.raises(StepTimedOut) as raised:
        step.run("sleep 100", timeout=1.5)

    assert isinstance(raised.value, StepFailed)
    assert raised.value.exit_code == 124
    assert raised.value.timeout == 1.5
    assert str(raised.value) == "step `sleep 100` in task `slow` timed out after 1.5 s"


def test_timed_out_step_with_check_false_returns_124(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["sleep 100"] = ended(job_pb2.STEP_OUTCOME_TIMED_OUT, exit_code=137)

    with in_task():
        code = step.run("sleep 100", timeout=1, check=False)

    assert code == 124


def test_cancelled_step_raises_job_cancelled(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["deploy"] = ended(
        job_pb2.STEP_OUTCOME_CANCELLED, "cancelled by alice"
    )

    with in_task(), pytest.raises(JobCancelled) as raised:
        step.run("deploy", check=False)

    assert not isinstance(raised.value, StepFailed)
    assert "cancelled by alice" in str(raised.value)


def test_step_that_cannot_start_raises_even_without_check(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["build"] = ended(
        job_pb2.STEP_OUTCOME_ERROR,
        "image= needs podman or docker, and neither is installed",
        exit_code=127,
    )

    with in_task("pkg"), pytest.raises(StepFailed) as raised:
        step.run("build", image="alpine", check=False)

    assert raised.value.message == "image= needs podman or docker, and neither is installed"
    assert "could not run: image= needs podman" in str(raised.value)


def test_stream_without_exit_is_an_engine_error(engine: RunningEngine, connected) -> None:
    engine.engine.step_results["make"] = []

    with in_task(), pytest.raises(EngineError, match="without an exit status"):
        step.run("make")


def test_steps_run_from_several_task_threads_at_once(engine: RunningEngine, connected) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def handler(request: job_pb2.RunStepRequest) -> list[job_pb2.RunStepEvent]:
        if request.command == "wait for the other task":
            # Returns only once both tasks are inside a step at the same time.
            barrier.wait()
        return exited(0)

    engine.engine.step_handler = handler
    errors: list[BaseException] = []

    def task_body(name: str) -> None:
        try:
            with in_task(name):
                step.run("wait for the other task")
                step.run("make")
                step.run("make")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=task_body, args=(name,)) for name in ["a", "b"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for name in ["a", "b"]:
        assert [request.name for request in engine.engine.steps_of(name)] == [
            "wait for the other task",
            "make",
            "make (2)",
        ]


def test_secret_value_is_returned(engine: RunningEngine, connected) -> None:
    engine.engine.secrets["REGISTRY_TOKEN"] = "s3cr3t"

    assert secrets.get("REGISTRY_TOKEN") == "s3cr3t"


def test_missing_secret_raises_secret_error(engine: RunningEngine, connected) -> None:
    with pytest.raises(SecretError) as raised:
        secrets.get("NOPE")

    message = str(raised.value)
    assert raised.value.key == "NOPE"
    assert message == "no secret named NOPE"


def test_denied_secret_raises_secret_error(engine: RunningEngine, connected) -> None:
    engine.engine.secrets["PROD_KEY"] = "value"
    engine.engine.denied_secrets.add("PROD_KEY")

    with pytest.raises(SecretError) as raised:
        secrets.get("PROD_KEY")

    assert "reading secret `PROD_KEY` was denied: pipeline may not read secret PROD_KEY" in str(
        raised.value
    )
    assert "value" not in str(raised.value)


@pytest.mark.parametrize(("key", "error"), [("", ValueError), (None, TypeError)])
def test_secret_key_is_validated(key: object, error: type) -> None:
    with pytest.raises(error, match="secret key"):
        secrets.get(key)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_engine_fails_after_retry_window() -> None:
    started = time.monotonic()
    with connected_to(f"127.0.0.1:{free_port()}", retry_window=1.0):
        with pytest.raises(EngineUnavailable) as raised:
            secrets.get("ANY")
    elapsed = time.monotonic() - started

    assert 0.8 <= elapsed < 10
    assert "unreachable for 1 s" in str(raised.value)


def test_step_waits_for_engine_within_retry_window_only() -> None:
    with connected_to(f"127.0.0.1:{free_port()}", retry_window=1.0), in_task():
        with pytest.raises(EngineUnavailable, match="could not connect to the engine"):
            step.run("make")


def test_engine_starting_late_is_reached_by_retries() -> None:
    port = free_port()
    engine = FakeEngine()
    engine.secrets["API_KEY"] = "late"
    holder: list[RunningEngine] = []
    starter = threading.Timer(1.0, lambda: holder.append(RunningEngine(engine, port=port)))
    starter.start()
    try:
        with connected_to(f"127.0.0.1:{port}", retry_window=20):
            assert secrets.get("API_KEY") == "late"
    finally:
        starter.join()
        for running in holder:
            running.stop()
