"""The coordinator: load a danubefile, declare its plan, run the tasks the
engine schedules.

The engine starts it in the job's workspace:

    python -m danube._coordinator --file PATH [--pipeline NAME] [--project-dir DIR]
        [--retry-window SECONDS]

with the SDK on PYTHONPATH and the packages of danube/_requirements.txt
installed. It reads:

- the job token, as the first line of stdin. Stdin is closed afterwards
  (reads by the script see end of file). The token is sent as
  `authorization: Bearer <token>` metadata on every call and never printed.
- `DANUBE_ENGINE_ADDR`, the engine's `host:port` (plain-text gRPC).
- `DANUBE_PIPELINE`, the pipeline to run when `--pipeline` is not given. If
  both are empty, the file must define exactly one pipeline.
- the other `DANUBE_*` variables, which `ctx` exposes to the script.

Then it imports the file, resolves the pipeline's graph and sends it with
`DeclarePlan`. It opens `WatchSchedule` and runs each task the engine starts
in a thread of its own, reporting `task_started` and then `task_finished`
(with the StepFailed text or the traceback when the task failed). When the
engine ends the schedule, it waits for the task threads and exits.

The script's `print()` goes to this process's stdout, which is line
buffered, and the engine stores it as the job's coordinator log.

Exit codes:

- 0: the engine ended the schedule and every task thread finished. Failed
  tasks were reported to the engine and do not change the exit code.
- 1: an exception escaped outside any task (a coordinator bug); reported as
  `ScriptError` with its traceback.
- 2: invalid invocation: bad arguments, `DANUBE_ENGINE_ADDR` unset, or no
  token on stdin. Nothing was reported.
- 3: the file could not be loaded: an exception or syntax error at import, an
  unknown or ambiguous pipeline, an invalid graph, or a plan the engine
  rejected. Reported as `LoadError`.
- 4: the engine stayed unreachable for the retry window (30 s by default).
  What could not be sent was not reported.
- 5: the engine rejected one of the coordinator's calls with an unexpected
  status, such as `PERMISSION_DENIED` for a revoked token.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import threading
import traceback
from typing import Any

from . import _client, _runtime
from ._client import EngineClient, ResumableStream
from ._loader import LoadFailure, load_plan
from ._plan import Plan, PlannedTask
from .errors import EngineError, EngineUnavailable, JobCancelled, StepFailed

EXIT_OK = 0
EXIT_SCRIPT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOAD_ERROR = 3
EXIT_ENGINE_UNAVAILABLE = 4
EXIT_ENGINE_REJECTED = 5

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_TASK_THREAD_PREFIX = "danube-task-"

log = logging.getLogger("danube")


class Coordinator:
    """One job's coordinator, from loading the file to the end of the schedule."""

    def __init__(
        self,
        client: EngineClient,
        file: str,
        pipeline: str | None,
        project_dir: str | None = None,
    ) -> None:
        self._client = client
        self._messages: Any = client.messages
        self._file = file
        self._pipeline = pipeline
        self._project_dir = project_dir
        self._fatal: EngineError | None = None
        self._fatal_lock = threading.Lock()
        self._schedule: ResumableStream | None = None

    def run(self) -> int:
        """Run the job's side of the protocol and return the exit code.

        Raises:
            EngineError: the engine was unreachable or rejected a call.
        """
        try:
            plan = load_plan(self._file, self._pipeline, self._project_dir)
        except LoadFailure as failure:
            return self._fail_load(str(failure))
        # `ctx.pipeline` must name the pipeline even when the engine left the
        # choice to the file.
        os.environ["DANUBE_PIPELINE"] = plan.pipeline

        try:
            self._client.unary("DeclarePlan", self._plan_request(plan))
        except EngineError as error:
            if error.code != "INVALID_ARGUMENT":
                raise
            return self._fail_load(
                f"the engine rejected the plan of pipeline `{plan.pipeline}`: {error.details}"
            )

        try:
            self._run_schedule(plan)
        except EngineError as error:
            # A task thread that lost the engine cancels the schedule, so its
            # error is the cause to report.
            raise (self._fatal or error) from None
        except Exception:
            message = f"the coordinator failed outside any task:\n{traceback.format_exc()}"
            print(message, file=sys.stderr)
            self._report(script_error=self._messages.ScriptError(message=message))
            return EXIT_SCRIPT_ERROR

        if self._fatal is not None:
            raise self._fatal
        return EXIT_OK

    def _fail_load(self, message: str) -> int:
        print(message, file=sys.stderr)
        self._report(load_error=self._messages.LoadError(message=message))
        return EXIT_LOAD_ERROR

    def _plan_request(self, plan: Plan) -> Any:
        messages = self._messages
        return messages.DeclarePlanRequest(
            pipeline=plan.pipeline,
            tasks=[
                messages.TaskSpec(name=task.name, needs=list(task.needs), image=task.image)
                for task in plan.tasks
            ],
            max_duration_seconds=plan.max_duration_seconds,
            fail_fast=plan.fail_fast,
            egress_allowlist=list(plan.egress_allowlist),
        )

    def _run_schedule(self, plan: Plan) -> None:
        tasks = {task.name: task for task in plan.tasks}
        started: set[str] = set()
        threads: list[threading.Thread] = []

        self._schedule = self._client.resumable_stream(
            "WatchSchedule", self._messages.WatchScheduleRequest()
        )
        for event in self._schedule:
            name = event.start_task
            if name in started:
                # The stream repeats events after it reopens.
                log.debug("ignoring a repeated start of task %s", name)
                continue
            started.add(name)
            planned = tasks.get(name)
            if planned is None:
                self._report_finished(
                    name,
                    False,
                    f"the engine started task `{name}`, which pipeline `{plan.pipeline}` does not have",
                )
                continue
            thread = threading.Thread(
                target=self._run_task, args=(planned,), name=_TASK_THREAD_PREFIX + name, daemon=True
            )
            thread.start()
            threads.append(thread)

        for thread in threads:
            thread.join()

    def _run_task(self, task: PlannedTask) -> None:
        try:
            self._report(task_started=self._messages.TaskStarted(task=task.name))
            with _runtime.running_task(task.name):
                success, error = _call_task(task)
            self._report_finished(task.name, success, error)
        except EngineError as engine_error:
            # The engine no longer hears from this task, so it would never
            # end the schedule: stop watching it and exit with this error.
            with self._fatal_lock:
                if self._fatal is None:
                    self._fatal = engine_error
            if self._schedule is not None:
                self._schedule.cancel()

    def _report_finished(self, task: str, success: bool, error: str) -> None:
        finished = self._messages.TaskFinished(task=task, success=success, error=error)
        self._report(task_finished=finished)

    def _report(self, **status: Any) -> None:
        self._client.unary("ReportStatus", self._messages.ReportStatusRequest(**status))


def _call_task(task: PlannedTask) -> tuple[bool, str]:
    """Run the task's function and return (success, why it failed). What
    went wrong is also printed to stderr, which the job log keeps."""
    try:
        task.func()
        return True, ""
    except (StepFailed, JobCancelled) as error:
        # The step's own log shows why; a traceback would only add noise.
        message = f"{error}{_script_location(error)}"
    except SystemExit as error:
        if error.code in (None, 0):
            return True, ""
        message = f"the task called sys.exit({error.code!r})"
    except BaseException as error:
        # The first frame is this function's; the traceback starts at the task's.
        tb = error.__traceback__.tb_next if error.__traceback__ is not None else None
        message = "".join(traceback.format_exception(type(error), error, tb)).rstrip()
    print(f"task `{task.name}` failed: {message}", file=sys.stderr)
    return False, message


def _script_location(error: BaseException) -> str:
    """Return ` (at FILE:LINE in FUNCTION)` for the innermost frame outside
    the SDK, or an empty string."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not os.path.abspath(frame.filename).startswith(_SDK_DIR + os.sep)
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {os.path.relpath(frame.filename)}:{frame.lineno} in {frame.name})"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m danube._coordinator",
        description="Run a danubefile's pipeline for the Danube engine. "
        "The job token is read from the first line of stdin.",
    )
    parser.add_argument(
        "--file", required=True, help="the pipeline file to load, such as danubefile.py"
    )
    parser.add_argument(
        "--pipeline",
        help="the pipeline to run; defaults to $DANUBE_PIPELINE, then to the file's only pipeline",
    )
    parser.add_argument(
        "--project-dir",
        metavar="DIR",
        help="the project folder that the file's folder was copied from. Load errors then name "
        "the project's files instead of the copies (default: name the files as --file does)",
    )
    parser.add_argument(
        "--retry-window",
        type=_positive_seconds,
        default=_client.DEFAULT_RETRY_WINDOW_SECONDS,
        metavar="SECONDS",
        help="how long to retry an unreachable engine before giving up (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _read_token() -> str:
    """Read the token from stdin's first line, then point stdin at /dev/null
    so that the pipe the engine wrote it to is closed."""
    line = sys.stdin.readline() if sys.stdin is not None else ""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)
    return line.strip()


def main(argv: list[str] | None = None) -> int:
    """Run the coordinator and return its exit code (see the module docs)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.WARNING, format="danube: %(message)s")
    # gRPC's C core logs connection events (such as GOAWAY) at INFO to
    # stderr, which is the job log. Set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

    args = _parse_args(argv)
    address = os.environ.get("DANUBE_ENGINE_ADDR", "")
    if not address:
        print(
            "danube: DANUBE_ENGINE_ADDR is not set: the coordinator runs under the engine, "
            "start pipelines with `danube run`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    token = _read_token()
    if not token:
        print("danube: no job token on the first line of stdin", file=sys.stderr)
        return EXIT_USAGE

    client = _client.connect(address, token, args.retry_window)
    requested = args.pipeline or os.environ.get("DANUBE_PIPELINE") or None
    try:
        return Coordinator(client, args.file, requested, args.project_dir).run()
    except EngineUnavailable as error:
        print(f"danube: lost the connection to the engine at {address}: {error}", file=sys.stderr)
        return EXIT_ENGINE_UNAVAILABLE
    except EngineError as error:
        print(f"danube: the engine rejected the coordinator: {error}", file=sys.stderr)
        return EXIT_ENGINE_REJECTED


def _exit(code: int) -> None:
    """Exit with `code`. Task threads still blocked in a call to a lost
    engine would hang the interpreter's shutdown, so then exit at once."""
    if any(thread.name.startswith(_TASK_THREAD_PREFIX) for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
