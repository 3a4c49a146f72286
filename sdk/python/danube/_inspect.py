"""List the pipelines a danubefile defines, for the engine's project view.

The engine runs it in the project folder:

    python -m danube._inspect --file PATH

with the SDK on PYTHONPATH. Importing the file runs its top-level code, as
loading it for a job does, but runs no task. It prints one JSON object on
stdout and exits 0:

    {"pipelines": [{"name": "build", "tasks": ["install", "test"], "error": null}]}

`tasks` is the resolved graph in plan order; a pipeline whose graph is
invalid has no tasks and its `error` says why. When the file cannot be
loaded at all, it prints `{"error": "..."}` and exits 3.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._loader import LoadFailure, load_pipelines
from .errors import PlanError

EXIT_OK = 0
EXIT_LOAD_ERROR = 3


def describe(file: str) -> dict[str, object]:
    """Return the JSON-ready description of the pipelines in `file`.

    Raises:
        LoadFailure: the file is missing or raised while it was imported.
    """
    _, pipelines = load_pipelines(file)
    described = []
    for pipeline in pipelines:
        try:
            tasks = [task.name for task in pipeline.plan().tasks]
            error = None
        except PlanError as failure:
            tasks, error = [], str(failure)
        described.append({"name": pipeline.name, "tasks": tasks, "error": error})
    return {"pipelines": described}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m danube._inspect")
    parser.add_argument("--file", required=True, help="the danubefile to inspect")
    args = parser.parse_args(argv)

    # The file's own print() calls must not corrupt the JSON on stdout.
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        result = describe(args.file)
        code = EXIT_OK
    except LoadFailure as failure:
        result = {"error": str(failure)}
        code = EXIT_LOAD_ERROR
    finally:
        sys.stdout = stdout
    json.dump(result, stdout)
    stdout.write("\n")
    stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
