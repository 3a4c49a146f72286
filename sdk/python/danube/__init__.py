"""Danube's Python SDK: define pipelines whose steps the Danube engine runs.

    from danube import pipeline, step

    @pipeline(name="build")
    def build():
        step.run("make test")

Run the file with `danube run`. Importing the package needs no gRPC
libraries, so `pip install` of the SDK alone gives editors its types.
"""

from . import artifacts, secrets, step
from ._plan import Pipeline, Task, pipeline, task
from .artifacts import Artifact
from .context import Context, ctx
from .errors import (
    ArtifactError,
    DanubeError,
    EngineError,
    EngineUnavailable,
    JobCancelled,
    PlanError,
    SecretError,
    StepFailed,
    StepTimedOut,
)

__all__ = [
    "Artifact",
    "ArtifactError",
    "Context",
    "DanubeError",
    "EngineError",
    "EngineUnavailable",
    "JobCancelled",
    "Pipeline",
    "PlanError",
    "SecretError",
    "StepFailed",
    "StepTimedOut",
    "Task",
    "artifacts",
    "ctx",
    "pipeline",
    "secrets",
    "step",
    "task",
]

__version__ = "0.1.0"
