"""An in-process JobService that replaces the engine in the SDK's tests.

It records every call and schedules tasks as the engine does: a task starts
once every task it needs has finished successfully, and the dependents of a
failed task never start. Tests choose step outcomes per command.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from danube._proto import job_pb2, job_pb2_grpc

TOKEN = "test-token-0123456789"

StepHandler = Callable[[job_pb2.RunStepRequest], list[job_pb2.RunStepEvent]]


def exited(code: int, stdout: bytes = b"", stderr: bytes = b"") -> list[job_pb2.RunStepEvent]:
    """Events of a step that wrote the given output and exited with `code`."""
    events = []
    if stdout:
        events.append(
            job_pb2.RunStepEvent(
                output=job_pb2.OutputChunk(stream=job_pb2.STREAM_STDOUT, data=stdout)
            )
        )
    if stderr:
        events.append(
            job_pb2.RunStepEvent(
                output=job_pb2.OutputChunk(stream=job_pb2.STREAM_STDERR, data=stderr)
            )
        )
    events.append(
        job_pb2.RunStepEvent(
            exit=job_pb2.StepExit(outcome=job_pb2.STEP_OUTCOME_EXITED, exit_code=code)
        )
    )
    return events


def ended(outcome: int, message: str = "", exit_code: int = 0) -> list[job_pb2.RunStepEvent]:
    """Events of a step that ended with `outcome` (timed out, cancelled, error)."""
    return [
        job_pb2.RunStepEvent(
            exit=job_pb2.StepExit(outcome=outcome, exit_code=exit_code, message=message)
        )
    ]


@dataclass
class Upload:
    header: job_pb2.ArtifactHeader
    chunks: list[bytes] = field(default_factory=list)
    completed: bool = False

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class FakeEngine(job_pb2_grpc.JobServiceServicer):
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.changed = threading.Condition()
        self.authorizations: list[tuple[str, str | None]] = []
        self.plans: list[job_pb2.DeclarePlanRequest] = []
        self.reports: list[job_pb2.ReportStatusRequest] = []
        self.steps: list[job_pb2.RunStepRequest] = []
        self.uploads: list[Upload] = []
        self.secrets: dict[str, str] = {}
        self.denied_secrets: set[str] = set()
        self.step_results: dict[str, list[job_pb2.RunStepEvent]] = {}
        self.step_handler: StepHandler | None = None
        self.plan_rejection: str | None = None
        self.upload_rejection: tuple[grpc.StatusCode, str] | None = None
        # ReportStatus kinds (such as "task_finished") rejected as if the
        # job's token had been revoked.
        self.rejected_reports: set[str] = set()
        # None starts every ready task at once. A function instead picks one
        # task from the ready names (in plan order), and the next task starts
        # only once that one has finished.
        self.pick_next: Callable[[list[str]], str] | None = None

    # --- JobService -----------------------------------------------------------

    def DeclarePlan(self, request, context):
        self._authorize("DeclarePlan", context)
        if self.plan_rejection is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.plan_rejection)
        with self.changed:
            self.plans.append(request)
            self.changed.notify_all()
        return job_pb2.DeclarePlanResponse()

    def WatchSchedule(self, request, context):
        self._authorize("WatchSchedule", context)
        with self.changed:
            if not self.plans:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no plan declared")
            plan = self.plans[-1]
        needs = {task.name: list(task.needs) for task in plan.tasks}
        order = [task.name for task in plan.tasks]
        started: list[str] = []
        deadline = time.monotonic() + 30

        while context.is_active() and time.monotonic() < deadline:
            with self.changed:
                results = self.task_results()
                running = [name for name in started if name not in results]
                ready = [
                    name
                    for name in order
                    if name not in started
                    and all(results.get(need) is True for need in needs[name])
                ]
                if self.pick_next is not None:
                    to_start = [self.pick_next(ready)] if ready and not running else []
                else:
                    to_start = ready
                if not to_start and not running:
                    return
                if not to_start:
                    self.changed.wait(timeout=0.1)
                    continue
            for name in to_start:
                started.append(name)
                yield job_pb2.ScheduleEvent(start_task=name)

    def RunStep(self, request, context):
        self._authorize("RunStep", context)
        with self.changed:
            self.steps.append(request)
            self.changed.notify_all()
        if self.step_handler is not None:
            events = self.step_handler(request)
        elif request.command in self.step_results:
            events = self.step_results[request.command]
        else:
            events = exited(0, f"ran {request.command}\n".encode() if request.capture else b"")
        yield from events

    def GetSecret(self, request, context):
        self._authorize("GetSecret", context)
        if request.key in self.denied_secrets:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"pipeline may not read secret {request.key}",
            )
        if request.key not in self.secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no secret named {request.key}")
        return job_pb2.GetSecretResponse(value=self.secrets[request.key])

    def UploadArtifact(self, request_iterator, context):
        self._authorize("UploadArtifact", context)
        upload: Upload | None = None
        for request in request_iterator:
            if request.WhichOneof("part") == "header":
                upload = Upload(request.header)
                with self.changed:
                    self.uploads.append(upload)
            else:
                assert upload is not None, "the header comes first"
                upload.chunks.append(request.chunk)
        if upload is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing header")
        if self.upload_rejection is not None:
            context.abort(*self.upload_rejection)
        upload.completed = True
        return job_pb2.UploadArtifactResponse(
            size_bytes=len(upload.data), sha256=hashlib.sha256(upload.data).hexdigest()
        )

    def ReportStatus(self, request, context):
        self._authorize("ReportStatus", context)
        if request.WhichOneof("status") in self.rejected_reports:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "job token revoked")
        with self.changed:
            self.reports.append(request)
            self.changed.notify_all()
        return job_pb2.ReportStatusResponse()

    # --- Queries for tests ----------------------------------------------------

    def task_results(self) -> dict[str, bool]:
        return {
            report.task_finished.task: report.task_finished.success
            for report in self.reports
            if report.WhichOneof("status") == "task_finished"
        }

    def reports_of(self, kind: str) -> list:
        return [
            getattr(report, kind) for report in self.reports if report.WhichOneof("status") == kind
        ]

    def started_tasks(self) -> list[str]:
        return [started.task for started in self.reports_of("task_started")]

    def finished(self, task: str) -> job_pb2.TaskFinished:
        matches = [
            finished for finished in self.reports_of("task_finished") if finished.task == task
        ]
        assert len(matches) == 1, f"expected one task_finished report for {task}, got {matches}"
        return matches[0]

    def steps_of(self, task: str) -> list[job_pb2.RunStepRequest]:
        return [step for step in self.steps if step.task == task]

    def _authorize(self, method: str, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        authorization = metadata.get("authorization")
        with self.changed:
            self.authorizations.append((method, authorization))
        if authorization != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "invalid job token")


class RunningEngine:
    """A FakeEngine served on a loopback port."""

    def __init__(self, engine: FakeEngine, port: int = 0) -> None:
        self.engine = engine
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        job_pb2_grpc.add_JobServiceServicer_to_server(engine, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()
