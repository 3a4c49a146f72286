"""Import a danubefile and resolve the plan of the pipeline to run."""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback

from ._plan import Pipeline, Plan, defined_pipelines, reset_registry
from .errors import PlanError

_FALLBACK_MODULE_NAME = "__danubefile__"


class LoadFailure(Exception):
    """The file could not be loaded or names no runnable pipeline. The
    message is meant for the user: it is what the job shows as its error."""


def load_plan(file: str, requested: str | None, project_dir: str | None = None) -> Plan:
    """Import `file`, select the pipeline named `requested` (or the only one),
    and return its resolved plan.

    The file's directory goes first on `sys.path`, so the file can import
    modules that sit next to it.

    When the file is a copy of a project (the engine runs a job in a copy of
    the project folder), `project_dir` is the project folder. Messages then
    name the project's files instead of their copies, including the file
    paths in tracebacks, because the project's files are the ones the user
    edits.

    Raises:
        LoadFailure: the file is missing, raised while it was imported (the
            message contains the traceback), defines no pipeline, not the one
            requested, several without `requested`, or an invalid graph.
    """
    display_path, pipelines = load_pipelines(file, project_dir)
    pipeline = _select_pipeline(display_path, pipelines, requested)
    try:
        return pipeline.plan()
    except PlanError as error:
        raise LoadFailure(
            f"pipeline `{pipeline.name}` in `{display_path}` is invalid: {error}"
        ) from None


def load_pipelines(file: str, project_dir: str | None = None) -> tuple[str, list[Pipeline]]:
    """Import `file` and return the path to show for it and the pipelines
    it defines, in definition order. `project_dir` is as in `load_plan`.

    Raises:
        LoadFailure: the file is missing or raised while it was imported.
    """
    path = os.path.abspath(file)
    display_path = os.path.join(project_dir, os.path.basename(path)) if project_dir else file
    if not os.path.isfile(path):
        where = "the job's workspace" if project_dir else f"`{os.getcwd()}`"
        raise LoadFailure(f"pipeline file `{display_path}` not found in {where}")

    reset_registry()
    sys.path.insert(0, os.path.dirname(path))
    try:
        _import_file(path)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        traceback_text = _name_project_files(
            format_traceback_from(error, path), os.path.dirname(path), project_dir
        )
        raise LoadFailure(f"failed to load `{display_path}`:\n{traceback_text}") from None
    return display_path, defined_pipelines()


def _name_project_files(traceback_text: str, copy_dir: str, project_dir: str | None) -> str:
    """Rename the files under `copy_dir` to the same paths under
    `project_dir` in the `File "..."` lines of a formatted traceback."""
    if project_dir is None:
        return traceback_text
    return traceback_text.replace(
        f'File "{os.path.join(copy_dir, "")}', f'File "{os.path.join(project_dir, "")}'
    )


def _import_file(path: str) -> None:
    stem = os.path.splitext(os.path.basename(path))[0]
    # The file's own name lets its neighbours import it without running it a
    # second time, as long as that name is free.
    name = stem if stem.isidentifier() and stem not in sys.modules else _FALLBACK_MODULE_NAME
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import `{path}` as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _select_pipeline(file: str, pipelines: list[Pipeline], requested: str | None) -> Pipeline:
    names = ", ".join(f"`{pipeline.name}`" for pipeline in pipelines)
    if not pipelines:
        raise LoadFailure(
            f"`{file}` defines no pipeline: decorate a function with @pipeline, "
            'or call pipeline(name="...", tasks=[...]) with the tasks to run'
        )
    if requested:
        for pipeline in pipelines:
            if pipeline.name == requested:
                return pipeline
        raise LoadFailure(f"`{file}` has no pipeline named `{requested}` (defined: {names})")
    if len(pipelines) > 1:
        raise LoadFailure(
            f"`{file}` defines several pipelines ({names}), so name the one to run: "
            "pass `--pipeline NAME` to `danube run`, the Pipeline field of the web UI's Run form, "
            "or `pipeline` in `POST /api/v1/jobs`"
        )
    return pipelines[0]


def format_traceback_from(error: BaseException, path: str) -> str:
    """Format `error`'s traceback from the first frame in the file `path`
    on, leaving out the coordinator's and importlib's frames. A SyntaxError
    in the file itself has no such frame and shows only its location."""
    tb = error.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != path:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))
