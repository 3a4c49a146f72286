from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SDK_ROOT = Path(__file__).resolve().parents[1]

TWO_PIPELINES = """
from danube import pipeline, step, task

print("top-level output goes to stderr")

@task()
def build():
    step.run("make")

@task(needs=[build])
def test():
    step.run("make test")

pipeline(name="ci", tasks=[test])

@pipeline(name="release")
def release():
    step.run("./publish.sh")

pipeline(name="broken", tasks=["missing"])
"""


def inspect_file(tmp_path: Path, text: str) -> tuple[int, dict]:
    file = tmp_path / "danubefile.py"
    file.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "danube._inspect", "--file", str(file)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(SDK_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def test_pipelines_listed_in_plan_order(tmp_path: Path) -> None:
    code, described = inspect_file(tmp_path, TWO_PIPELINES)

    assert code == 0
    pipelines = described["pipelines"]
    assert [(p["name"], p["tasks"]) for p in pipelines[:2]] == [
        ("ci", ["build", "test"]),
        ("release", ["main"]),
    ]
    assert pipelines[0]["error"] is None


def test_invalid_graph_listed_with_error(tmp_path: Path) -> None:
    _, described = inspect_file(tmp_path, TWO_PIPELINES)

    broken = described["pipelines"][2]
    assert broken["name"] == "broken"
    assert broken["tasks"] == []
    assert "missing" in broken["error"]


def test_raising_file_reports_traceback(tmp_path: Path) -> None:
    code, described = inspect_file(tmp_path, "raise RuntimeError('no config')\n")

    assert code == 3
    assert "RuntimeError: no config" in described["error"]
    assert "pipelines" not in described
