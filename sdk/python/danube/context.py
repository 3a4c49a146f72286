"""`ctx`: what this job is running, read from the environment the engine sets.

The engine starts the coordinator with `DANUBE_JOB_ID`, `DANUBE_PIPELINE`,
`DANUBE_REPO`, `DANUBE_BRANCH`, `DANUBE_COMMIT_SHA`, `DANUBE_TRIGGER_TYPE`,
`DANUBE_TRIGGER_REF` and `DANUBE_WORKSPACE`. Each attribute reads its
variable when accessed, so a value missing from the environment reads as an
empty string (and `workspace` as the current directory).
"""

from __future__ import annotations

import os

__all__ = ["Context", "ctx"]


class Context:
    """The job's identity and source. Use the shared instance `ctx`."""

    __slots__ = ()

    @property
    def job_id(self) -> str:
        """The job's id, as the engine, the CLI and the UI show it."""
        return os.environ.get("DANUBE_JOB_ID", "")

    @property
    def pipeline(self) -> str:
        """The name of the pipeline this job runs."""
        return os.environ.get("DANUBE_PIPELINE", "")

    @property
    def repo(self) -> str:
        """The source repository's URL, or the project folder for local runs."""
        return os.environ.get("DANUBE_REPO", "")

    @property
    def branch(self) -> str:
        """The branch the job was triggered for; empty when there is none."""
        return os.environ.get("DANUBE_BRANCH", "")

    @property
    def commit_sha(self) -> str:
        """The commit the workspace holds; empty for a folder without Git."""
        return os.environ.get("DANUBE_COMMIT_SHA", "")

    @property
    def trigger_type(self) -> str:
        """What started the job: `webhook`, `cron`, `manual`, `local` or
        `watch` (a rerun after a file of the project changed)."""
        return os.environ.get("DANUBE_TRIGGER_TYPE", "")

    @property
    def trigger_ref(self) -> str:
        """The trigger's detail, such as the webhook event, the cron
        schedule's name or, for `watch`, the changed file relative to the
        project; its form depends on `trigger_type`."""
        return os.environ.get("DANUBE_TRIGGER_REF", "")

    @property
    def workspace(self) -> str:
        """The absolute path of the job's workspace, shared by all its tasks."""
        return os.environ.get("DANUBE_WORKSPACE") or os.getcwd()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (
                "job_id",
                "pipeline",
                "repo",
                "branch",
                "commit_sha",
                "trigger_type",
                "trigger_ref",
                "workspace",
            )
        )
        return f"Context({fields})"


ctx = Context()
"""The running job's context."""
