"""Exceptions raised by the danube SDK.

Every exception derives from `DanubeError`. `StepFailed` and its subclass
`StepTimedOut` describe a command that ran and did not succeed, so a script
may catch them and carry on. `JobCancelled` is deliberately not a
`StepFailed`: once the job is cancelled every later step fails the same way,
so catching it as a step failure would only delay the end of the task.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "DanubeError",
    "EngineError",
    "EngineUnavailable",
    "JobCancelled",
    "PlanError",
    "SecretError",
    "StepFailed",
    "StepTimedOut",
]


class DanubeError(Exception):
    """Base class of every exception the danube SDK raises."""


class PlanError(DanubeError):
    """The pipeline's task graph is invalid: an unknown task name in `needs`,
    a cycle, or two different tasks with one name."""


class StepFailed(DanubeError):
    """A step ran and did not succeed.

    Raised by `step.run` when `check=True` and the command exits with a
    non-zero code. Raised even with `check=False` when the engine could not
    start the command at all, and then `message` explains why.
    """

    step: str
    """The step's name, unique within its task."""
    exit_code: int
    """The shell's exit code, or 128 + the signal number when a signal ended
    the command. 124 when the step timed out."""
    task: str
    """The task the step ran in."""
    message: str
    """The engine's explanation when the command could not start; else empty."""
    output: str | None
    """The captured stdout when the step ran with `capture=True`; else None."""

    def __init__(
        self,
        step: str,
        exit_code: int,
        task: str,
        message: str = "",
        output: str | None = None,
    ) -> None:
        super().__init__(step, exit_code, task)
        self.step = step
        self.exit_code = exit_code
        self.task = task
        self.message = message
        self.output = output

    def __str__(self) -> str:
        if self.message:
            return f"step `{self.step}` in task `{self.task}` could not run: {self.message}"
        return f"step `{self.step}` in task `{self.task}` failed with exit code {self.exit_code}"


class StepTimedOut(StepFailed):
    """A step ran past its `timeout` and the engine killed its process tree.

    `exit_code` is 124, the code GNU `timeout` uses, so that code written for
    `check=False` can test for it.
    """

    timeout: float
    """The timeout the step ran with, in seconds."""

    def __init__(self, step: str, task: str, timeout: float, output: str | None = None) -> None:
        super().__init__(step, TIMEOUT_EXIT_CODE, task, output=output)
        self.timeout = timeout

    def __str__(self) -> str:
        return f"step `{self.step}` in task `{self.task}` timed out after {self.timeout:g} s"


TIMEOUT_EXIT_CODE = 124
"""The exit code `step.run` reports for a timed-out step."""


class JobCancelled(DanubeError):
    """The job was cancelled, or ran past its maximum duration, while a step
    ran. Every later step of the job raises it too."""


class SecretError(DanubeError):
    """A secret could not be read: it does not exist, or this job's pipeline
    may not read it. The message is the engine's and never contains the value."""

    key: str
    """The secret's key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class ArtifactError(DanubeError):
    """An artifact could not be uploaded: the path is missing or escapes the
    workspace, the name is invalid, or the engine rejected the upload."""

    path: str
    """The path as the script passed it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class EngineError(DanubeError):
    """A call to the engine failed for a reason the SDK has no better
    exception for, such as a revoked job token."""

    method: str
    """The gRPC method, for example `RunStep`."""
    code: str
    """The gRPC status code's name, for example `PERMISSION_DENIED`."""
    details: str
    """The engine's message."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"engine call {method} failed with {code}: {details}")
        self.method = method
        self.code = code
        self.details = details


class EngineUnavailable(EngineError):
    """The engine could not be reached, even after retrying for the retry
    window (30 s by default), or the connection broke during a step."""
