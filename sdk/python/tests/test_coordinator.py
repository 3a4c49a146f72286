"""`python -m danube._coordinator` as a child process against the fake engine."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fake_engine import TOKEN, RunningEngine, exited
from helpers import run_coordinator

from danube._proto import job_pb2

DAG = textwrap.dedent(
    """
    from danube import pipeline, step, task

    @task(image="node:20")
    def install():
        step.run("npm ci")

    @task(needs=[install])
    def lint():
        step.run("npm run lint")

    @task(needs=[install])
    def test():
        step.run("npm test")

    @task(needs=[lint, "test"], image="python:3.12")
    def package():
        step.run("python -m build")

    pipeline(
        name="web",
        tasks=[package],
        max_duration=600,
        fail_fast=True,
        egress_allowlist=["pypi.org", "10.0.0.0/8:5000"],
    )
    """
)


TWO_PIPELINES = textwrap.dedent(
    """
    from danube import pipeline

    @pipeline
    def one():
        print("one")

    @pipeline
    def two():
        print("two")
    """
)


def plan_of(engine: RunningEngine) -> list[tuple[str, list[str], str]]:
    [plan] = engine.engine.plans
    return [(spec.name, list(spec.needs), spec.image) for spec in plan.tasks]


def load_error(engine: RunningEngine) -> str:
    [error] = engine.engine.reports_of("load_error")
    return error.message


def test_sequential_pipeline_runs_as_task_main(engine: RunningEngine, workspace: Path) -> None:
    source = textwrap.dedent(
        """
        from danube import ctx, pipeline, step

        print("loading")

        @pipeline(name="build")
        def build():
            print("pipeline", ctx.pipeline, "job", ctx.job_id, "branch", ctx.branch)
            step.run("npm ci", name="install")
            code = step.run("npm test", check=False)
            print("test exited with", code)
        """
    )
    engine.engine.step_results["npm test"] = exited(1)

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    [plan] = engine.engine.plans
    assert plan.pipeline == "build"
    assert plan_of(engine) == [("main", [], "")]
    assert plan.max_duration_seconds == 0
    assert plan.fail_fast is False
    assert [(step.task, step.name, step.command) for step in engine.engine.steps] == [
        ("main", "install", "npm ci"),
        ("main", "npm test", "npm test"),
    ]
    assert engine.engine.started_tasks() == ["main"]
    assert engine.engine.finished("main").success is True
    assert result.stdout.splitlines() == [
        "loading",
        "pipeline build job job-42 branch main",
        "test exited with 1",
    ]


def test_every_call_carries_the_token(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 0, result.stderr
    methods = {method for method, _ in engine.engine.authorizations}
    assert methods == {"DeclarePlan", "WatchSchedule", "ReportStatus", "RunStep"}
    assert {token for _, token in engine.engine.authorizations} == {f"Bearer {TOKEN}"}
    assert TOKEN not in result.stdout + result.stderr


def test_graph_plan_is_declared_in_topological_order(
    engine: RunningEngine, workspace: Path
) -> None:
    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 0, result.stderr
    [plan] = engine.engine.plans
    assert plan.pipeline == "web"
    assert plan.max_duration_seconds == 600
    assert plan.fail_fast is True
    assert list(plan.egress_allowlist) == ["pypi.org", "10.0.0.0/8:5000"]
    assert plan_of(engine) == [
        ("install", [], "node:20"),
        ("lint", ["install"], ""),
        ("test", ["install"], ""),
        ("package", ["lint", "test"], "python:3.12"),
    ]
    for task, command in [
        ("install", "npm ci"),
        ("lint", "npm run lint"),
        ("test", "npm test"),
        ("package", "python -m build"),
    ]:
        assert [step.command for step in engine.engine.steps_of(task)] == [command]
        assert engine.engine.finished(task).success is True


def test_tasks_run_in_the_order_the_engine_schedules(
    engine: RunningEngine, workspace: Path
) -> None:
    # Among ready tasks, start the one declared last: test before lint.
    engine.engine.pick_next = lambda ready: ready[-1]

    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 0, result.stderr
    assert engine.engine.started_tasks() == ["install", "test", "lint", "package"]
    assert [step.task for step in engine.engine.steps] == ["install", "test", "lint", "package"]


def test_independent_tasks_run_at_the_same_time(engine: RunningEngine, workspace: Path) -> None:
    barrier = threading.Barrier(2, timeout=20)

    def handler(request: job_pb2.RunStepRequest) -> list[job_pb2.RunStepEvent]:
        if request.command == "npm run lint" or request.command == "npm test":
            # Both steps must be in flight together for either to finish.
            barrier.wait()
        return exited(0)

    engine.engine.step_handler = handler

    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 0, result.stderr
    assert engine.engine.finished("lint").success is True
    assert engine.engine.finished("test").success is True


def test_failed_step_fails_task_and_skips_dependents(
    engine: RunningEngine, workspace: Path
) -> None:
    engine.engine.step_results["npm test"] = exited(2)

    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 0, result.stderr
    failed = engine.engine.finished("test")
    assert failed.success is False
    assert (
        failed.error
        == "step `npm test` in task `test` failed with exit code 2 (at danubefile.py:14 in test)"
    )
    assert engine.engine.finished("lint").success is True
    assert "package" not in engine.engine.started_tasks()
    assert f"task `test` failed: {failed.error}" in result.stderr


def test_exception_in_task_reports_traceback(engine: RunningEngine, workspace: Path) -> None:
    source = textwrap.dedent(
        """
        from danube import pipeline

        def helper():
            return 1 / 0

        @pipeline
        def build():
            helper()
        """
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    error = engine.engine.finished("main").error
    assert error.startswith("Traceback (most recent call last):")
    assert 'danubefile.py", line 9, in build' in error
    assert 'danubefile.py", line 5, in helper' in error
    assert error.endswith("ZeroDivisionError: division by zero")
    assert "_coordinator.py" not in error
    assert "task `main` failed: Traceback" in result.stderr
    assert "ZeroDivisionError" in result.stderr


def test_sys_exit_zero_in_task_is_success(engine: RunningEngine, workspace: Path) -> None:
    source = "import sys\nfrom danube import pipeline\n\n@pipeline\ndef build():\n    sys.exit(0)\n"

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    assert engine.engine.finished("main").success is True


def test_script_cannot_read_the_token_from_stdin(engine: RunningEngine, workspace: Path) -> None:
    source = "import sys\nfrom danube import pipeline\n\n@pipeline\ndef build():\n    print(repr(sys.stdin.read()))\n"

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "''\n"


def test_ctx_names_the_pipeline_chosen_by_the_file(engine: RunningEngine, workspace: Path) -> None:
    source = textwrap.dedent(
        """
        from danube import ctx, pipeline

        @pipeline(name="only")
        def only():
            print(ctx.pipeline, ctx.trigger_type, ctx.commit_sha, ctx.workspace)
        """
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"only local 0123abcd {workspace}\n"


def test_pipeline_option_selects_one_of_several(engine: RunningEngine, workspace: Path) -> None:
    source = TWO_PIPELINES

    result = run_coordinator(engine.address, workspace, source, "--pipeline", "two")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "two\n"
    assert engine.engine.plans[0].pipeline == "two"


def test_pipeline_env_selects_one_of_several(engine: RunningEngine, workspace: Path) -> None:
    source = TWO_PIPELINES

    result = run_coordinator(engine.address, workspace, source, env={"DANUBE_PIPELINE": "one"})

    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\n"


def test_file_imports_modules_next_to_it(engine: RunningEngine, workspace: Path) -> None:
    (workspace / "ci_helpers.py").write_text("GREETING = 'hello from a helper'\n")
    source = textwrap.dedent(
        """
        from danube import pipeline
        from ci_helpers import GREETING

        @pipeline
        def build():
            print(GREETING)
        """
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from a helper\n"


# --- Load errors (exit 3) -----------------------------------------------------


def test_syntax_error_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    source = "from danube import pipeline\n\n@pipeline\ndef build(:\n    pass\n"

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    message = load_error(engine)
    assert message.startswith("failed to load `danubefile.py`:")
    assert 'danubefile.py", line 4' in message
    assert "SyntaxError" in message
    assert engine.engine.plans == []
    assert "SyntaxError" in result.stderr


def test_import_exception_reports_traceback(engine: RunningEngine, workspace: Path) -> None:
    source = "import os\n\nvalue = os.environ['NOT_SET_ANYWHERE']\n"

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    message = load_error(engine)
    assert "Traceback (most recent call last):" in message
    assert 'danubefile.py", line 3, in <module>' in message
    assert "KeyError: 'NOT_SET_ANYWHERE'" in message
    assert "importlib" not in message


def test_step_at_import_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(
        engine.address, workspace, "from danube import step\n\nstep.run('make')\n"
    )

    assert result.returncode == 3
    assert "step.run was called outside a task" in load_error(engine)
    assert engine.engine.steps == []


def test_unknown_pipeline_lists_defined_ones(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, DAG, "--pipeline", "deploy")

    assert result.returncode == 3
    assert load_error(engine) == "`danubefile.py` has no pipeline named `deploy` (defined: `web`)"


def test_several_pipelines_without_choice_is_a_load_error(
    engine: RunningEngine, workspace: Path
) -> None:
    source = (
        "from danube import pipeline\n\n@pipeline\ndef one(): pass\n\n@pipeline\ndef two(): pass\n"
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    assert load_error(engine) == (
        "`danubefile.py` defines several pipelines (`one`, `two`), so name the one to run: "
        "pass `--pipeline NAME` to `danube run`, the Pipeline field of the web UI's Run form, or `pipeline` in `POST /api/v1/jobs`"
    )


def test_file_without_pipeline_says_how_to_define_one(
    engine: RunningEngine, workspace: Path
) -> None:
    result = run_coordinator(engine.address, workspace, "print('nothing here')\n")

    assert result.returncode == 3
    assert "defines no pipeline: decorate a function with @pipeline" in load_error(engine)


def test_cycle_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    source = textwrap.dedent(
        """
        from danube import pipeline, task

        @task(needs=["b"])
        def a(): pass

        @task(needs=[a])
        def b(): pass

        pipeline(name="loop", tasks=[b])
        """
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    assert load_error(engine) == (
        "pipeline `loop` in `danubefile.py` is invalid: "
        "the tasks' needs form a cycle: `a` -> `b` -> `a` (each task needs the next)"
    )
    assert engine.engine.plans == []


def test_unknown_need_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    source = textwrap.dedent(
        """
        from danube import pipeline, task

        @task(needs=["setup"])
        def build(): pass

        pipeline(name="p", tasks=[build])
        """
    )

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    assert "task `build` needs `setup`, but no task has that name" in load_error(engine)


def test_plan_rejected_by_engine_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    engine.engine.plan_rejection = "task name `main` is reserved"
    source = "from danube import pipeline\n\n@pipeline\ndef build(): pass\n"

    result = run_coordinator(engine.address, workspace, source)

    assert result.returncode == 3
    assert (
        load_error(engine)
        == "the engine rejected the plan of pipeline `build`: task name `main` is reserved"
    )


def test_missing_file_is_a_load_error(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, "", "--file", "nope.py")

    assert result.returncode == 3
    assert load_error(engine).startswith("pipeline file `nope.py` not found")


# --- Load errors name the project's files, not the workspace's copies -----------


def test_load_error_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"

    result = run_coordinator(
        engine.address, workspace, TWO_PIPELINES, "--project-dir", str(project)
    )

    assert result.returncode == 3
    expected = (
        f"`{project}/danubefile.py` defines several pipelines (`one`, `two`), "
        "so name the one to run: "
        "pass `--pipeline NAME` to `danube run`, the Pipeline field of the web UI's Run form, or `pipeline` in `POST /api/v1/jobs`"
    )
    assert load_error(engine) == expected
    assert result.stderr == expected + "\n"


def test_unknown_pipeline_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"

    result = run_coordinator(
        engine.address, workspace, DAG, "--pipeline", "deploy", "--project-dir", str(project)
    )

    assert result.returncode == 3
    assert load_error(engine) == (
        f"`{project}/danubefile.py` has no pipeline named `deploy` (defined: `web`)"
    )


def test_invalid_graph_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    source = textwrap.dedent(
        """
        from danube import pipeline, task

        @task(needs=["b"])
        def a(): pass

        @task(needs=[a])
        def b(): pass

        pipeline(name="loop", tasks=[b])
        """
    )

    result = run_coordinator(engine.address, workspace, source, "--project-dir", str(project))

    assert result.returncode == 3
    assert load_error(engine).startswith(
        f"pipeline `loop` in `{project}/danubefile.py` is invalid: the tasks' needs form a cycle"
    )


def test_file_without_pipeline_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"

    result = run_coordinator(
        engine.address, workspace, "print('nothing here')\n", "--project-dir", str(project)
    )

    assert result.returncode == 3
    assert load_error(engine).startswith(f"`{project}/danubefile.py` defines no pipeline:")


def test_syntax_error_traceback_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    source = "from danube import pipeline\n\n@pipeline\ndef build(:\n    pass\n"

    result = run_coordinator(engine.address, workspace, source, "--project-dir", str(project))

    assert result.returncode == 3
    message = load_error(engine)
    assert message.startswith(f"failed to load `{project}/danubefile.py`:\n")
    assert f'File "{project}/danubefile.py", line 4' in message
    assert str(workspace) not in message
    assert str(workspace) not in result.stderr


def test_import_traceback_names_project_modules(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (workspace / "settings.py").write_text("import os\n\nREGION = os.environ['NOT_SET_ANYWHERE']\n")
    source = "import settings\n"

    result = run_coordinator(engine.address, workspace, source, "--project-dir", str(project))

    assert result.returncode == 3
    message = load_error(engine)
    assert f'File "{project}/danubefile.py", line 1, in <module>' in message
    assert f'File "{project}/settings.py", line 3, in <module>' in message
    assert "KeyError: 'NOT_SET_ANYWHERE'" in message
    assert str(workspace) not in message


def test_missing_file_names_project_file(
    engine: RunningEngine, workspace: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"

    result = run_coordinator(
        engine.address, workspace, "", "--file", "nope.py", "--project-dir", str(project)
    )

    assert result.returncode == 3
    assert load_error(engine) == (
        f"pipeline file `{project}/nope.py` not found in the job's workspace"
    )


def test_project_dir_of_workspace_keeps_paths(engine: RunningEngine, workspace: Path) -> None:
    """A job run in place has the project folder as its workspace."""
    source = "import os\n\nvalue = os.environ['NOT_SET_ANYWHERE']\n"

    result = run_coordinator(engine.address, workspace, source, "--project-dir", str(workspace))

    assert result.returncode == 3
    message = load_error(engine)
    assert message.startswith(f"failed to load `{workspace}/danubefile.py`:\n")
    assert f'File "{workspace}/danubefile.py", line 3, in <module>' in message


# --- Invocation and connection (exit 2, 4, 5) ---------------------------------


def test_missing_token_exits_2(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, DAG, token="")

    assert result.returncode == 2
    assert "no job token" in result.stderr
    assert engine.engine.authorizations == []


def test_missing_engine_address_exits_2(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, DAG, env={"DANUBE_ENGINE_ADDR": ""})

    assert result.returncode == 2
    assert "DANUBE_ENGINE_ADDR is not set" in result.stderr


def test_unreachable_engine_exits_4(workspace: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"

    result = run_coordinator(address, workspace, DAG, "--retry-window", "1")

    assert result.returncode == 4
    assert f"lost the connection to the engine at {address}" in result.stderr
    assert "unreachable for 1 s" in result.stderr


def test_rejected_token_exits_5(engine: RunningEngine, workspace: Path) -> None:
    result = run_coordinator(engine.address, workspace, DAG, token="revoked")

    assert result.returncode == 5
    assert "PERMISSION_DENIED" in result.stderr
    assert "revoked" not in result.stderr


def test_rejected_task_report_stops_the_coordinator(engine: RunningEngine, workspace: Path) -> None:
    # The fake engine keeps the schedule open while it waits for the report.
    engine.engine.rejected_reports.add("task_finished")
    started = time.monotonic()

    result = run_coordinator(engine.address, workspace, DAG)

    assert result.returncode == 5
    assert "job token revoked" in result.stderr
    assert time.monotonic() - started < 20
    assert engine.engine.started_tasks() == ["install"]


@pytest.mark.parametrize("window", ["0", "-1", "soon"])
def test_invalid_retry_window_exits_2(engine: RunningEngine, workspace: Path, window: str) -> None:
    result = run_coordinator(engine.address, workspace, DAG, "--retry-window", window)

    assert result.returncode == 2
    assert "--retry-window" in result.stderr
