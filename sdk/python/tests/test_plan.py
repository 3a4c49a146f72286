from __future__ import annotations

from datetime import timedelta

import pytest

from danube import PlanError, pipeline, task
from danube._plan import defined_pipelines


def names(plan) -> list[str]:
    return [planned.name for planned in plan.tasks]


def test_sequential_pipeline_is_one_task_named_main() -> None:
    calls = []

    @pipeline(name="build", image="node:20", max_duration=90.5, fail_fast=True)
    def build() -> None:
        calls.append("ran")

    plan = build.plan()

    assert plan.pipeline == "build"
    assert names(plan) == ["main"]
    assert plan.tasks[0].needs == ()
    assert plan.tasks[0].image == "node:20"
    assert plan.max_duration_seconds == 91
    assert plan.fail_fast is True
    plan.tasks[0].func()
    assert calls == ["ran"]


def test_bare_pipeline_decorator_takes_function_name() -> None:
    @pipeline
    def release() -> None:
        pass

    plan = release.plan()

    assert plan.pipeline == "release"
    assert names(plan) == ["main"]
    assert plan.max_duration_seconds == 0
    assert plan.fail_fast is False


def test_graph_is_closure_over_needs() -> None:
    @task(image="node:20")
    def install() -> None: ...

    @task(needs=[install])
    def lint() -> None: ...

    @task(needs=[install])
    def test() -> None: ...

    @task(needs=[lint, test], image="python:3.12")
    def package() -> None: ...

    @task
    def unrelated() -> None: ...

    plan = pipeline(name="web", tasks=[package]).plan()

    assert names(plan) == ["install", "lint", "test", "package"]
    by_name = {planned.name: planned for planned in plan.tasks}
    assert by_name["package"].needs == ("lint", "test")
    assert by_name["package"].image == "python:3.12"
    assert by_name["install"].image == "node:20"
    assert by_name["lint"].image == ""


def test_topological_order_breaks_ties_by_definition_order() -> None:
    @task
    def zeta() -> None: ...

    @task(needs=["alpha"])
    def mid() -> None: ...

    @task
    def alpha() -> None: ...

    @task(needs=[zeta, mid])
    def last() -> None: ...

    plan = pipeline(name="p", tasks=[last]).plan()

    # zeta and alpha are both ready first; zeta was defined earlier.
    assert names(plan) == ["zeta", "alpha", "mid", "last"]


def test_order_is_the_same_for_every_call() -> None:
    tasks = [task(name=f"t{index}")(lambda: None) for index in range(20)]
    final = task(name="final", needs=tasks)(lambda: None)
    plan = pipeline(name="p", tasks=[final])

    assert names(plan.plan()) == names(plan.plan()) == [f"t{i}" for i in range(20)] + ["final"]


def test_string_needs_resolve_tasks_defined_later() -> None:
    @task(needs=["install"])
    def build() -> None: ...

    @task
    def install() -> None: ...

    plan = pipeline(name="p", tasks=["build"]).plan()

    assert names(plan) == ["install", "build"]
    assert plan.tasks[1].needs == ("install",)


def test_repeated_needs_are_listed_once() -> None:
    @task
    def install() -> None: ...

    @task(needs=[install, "install"])
    def build() -> None: ...

    plan = pipeline(name="p", tasks=[build]).plan()

    assert plan.tasks[1].needs == ("install",)


def test_unknown_need_names_task_and_missing_name() -> None:
    @task
    def install() -> None: ...

    @task(needs=["instal"])
    def lint() -> None: ...

    with pytest.raises(PlanError) as raised:
        pipeline(name="p", tasks=[lint]).plan()

    message = str(raised.value)
    assert "task `lint` needs `instal`" in message
    assert "no task has that name" in message
    assert "install, lint" in message


def test_unknown_pipeline_task_is_reported() -> None:
    with pytest.raises(PlanError, match="pipeline `p` needs `ghost`"):
        pipeline(name="p", tasks=["ghost"]).plan()


def test_cycle_names_every_task_in_it() -> None:
    @task(needs=["c"])
    def a() -> None: ...

    @task(needs=[a])
    def b() -> None: ...

    @task(needs=[b])
    def c() -> None: ...

    with pytest.raises(PlanError) as raised:
        pipeline(name="p", tasks=[c]).plan()

    message = str(raised.value)
    assert "cycle" in message
    assert "`a` -> `c` -> `b` -> `a`" in message


def test_task_needing_itself_is_a_cycle() -> None:
    @task(needs=["loop"])
    def loop() -> None: ...

    with pytest.raises(PlanError, match="cycle: `loop` -> `loop`"):
        pipeline(name="p", tasks=[loop]).plan()


def test_cycle_behind_valid_tasks_is_found() -> None:
    @task
    def root() -> None: ...

    @task(needs=[root, "y"])
    def x() -> None: ...

    @task(needs=[x])
    def y() -> None: ...

    @task(needs=[y])
    def top() -> None: ...

    with pytest.raises(PlanError, match=r"`x` -> `y` -> `x`"):
        pipeline(name="p", tasks=[top]).plan()


def test_two_tasks_with_one_name_are_rejected() -> None:
    first = task(name="build")(lambda: None)
    second = task(name="build")(lambda: None)
    both = task(name="both", needs=[first, second])(lambda: None)

    with pytest.raises(PlanError) as raised:
        pipeline(name="p", tasks=[both]).plan()

    message = str(raised.value)
    assert "two different tasks are named `build`" in message
    assert "test_plan.py:" in message


def test_string_need_matching_two_tasks_is_ambiguous() -> None:
    task(name="build")(lambda: None)
    task(name="build")(lambda: None)
    user = task(name="user", needs=["build"])(lambda: None)

    with pytest.raises(PlanError, match="several tasks have that name"):
        pipeline(name="p", tasks=[user]).plan()


def test_same_task_shared_by_two_pipelines() -> None:
    @task
    def install() -> None: ...

    @task(needs=[install])
    def test() -> None: ...

    @task(needs=[install])
    def docs() -> None: ...

    assert names(pipeline(name="ci", tasks=[test]).plan()) == ["install", "test"]
    assert names(pipeline(name="docs", tasks=[docs]).plan()) == ["install", "docs"]
    assert [p.name for p in defined_pipelines()] == ["ci", "docs"]


def test_pipeline_name_defined_twice_is_rejected() -> None:
    @pipeline(name="build")
    def first() -> None: ...

    with pytest.raises(PlanError, match="pipeline `build` is defined twice"):

        @pipeline(name="build")
        def second() -> None: ...


def test_max_duration_accepts_timedelta_and_rounds_up() -> None:
    @task
    def only() -> None: ...

    plan = pipeline(
        name="p", tasks=[only], max_duration=timedelta(minutes=1, milliseconds=1)
    ).plan()

    assert plan.max_duration_seconds == 61


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), timedelta(0)])
def test_max_duration_must_be_positive(value: object) -> None:
    with pytest.raises(ValueError, match="max_duration must be a positive number of seconds"):
        pipeline(name="p", max_duration=value)(lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["60", True, [60]])
def test_max_duration_must_be_a_number(value: object) -> None:
    with pytest.raises(TypeError, match="max_duration must be a number of seconds"):
        pipeline(name="p", max_duration=value)(lambda: None)  # type: ignore[arg-type]


def test_fail_fast_must_be_bool() -> None:
    with pytest.raises(TypeError, match="fail_fast must be True or False"):
        pipeline(name="p", fail_fast="yes")(lambda: None)  # type: ignore[arg-type]


def test_graph_pipeline_needs_a_name() -> None:
    @task
    def only() -> None: ...

    with pytest.raises(TypeError, match="needs a name"):
        pipeline(tasks=[only])  # type: ignore[call-overload]


def test_graph_pipeline_needs_tasks() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        pipeline(name="p", tasks=[])


def test_graph_pipeline_takes_a_list_of_tasks() -> None:
    @task
    def only() -> None: ...

    with pytest.raises(TypeError, match="must be a list"):
        pipeline(name="p", tasks=only)  # type: ignore[call-overload]


def test_graph_pipeline_rejects_image() -> None:
    @task
    def only() -> None: ...

    with pytest.raises(TypeError, match="set image= on each @task"):
        pipeline(name="p", tasks=[only], image="node:20")  # type: ignore[call-overload]


def test_needs_rejects_a_single_task() -> None:
    @task
    def install() -> None: ...

    with pytest.raises(TypeError, match=r"needs=\[install\]"):
        task(needs=install)(lambda: None)  # type: ignore[arg-type]


def test_needs_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="must hold tasks"):
        task(needs=[42])(lambda: None)  # type: ignore[list-item]


def test_needs_rejects_empty_names() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        task(needs=[" "])(lambda: None)


def test_task_function_must_take_no_arguments() -> None:
    with pytest.raises(TypeError, match="must take no arguments, but it requires: target"):

        @task
        def deploy(target: str) -> None: ...


def test_task_function_may_have_optional_arguments() -> None:
    @task
    def deploy(target: str = "staging", *extra: str) -> str:
        return target

    assert deploy() == "staging"


@pytest.mark.parametrize("bad_name", ["", "  ", "a\nb", 7])
def test_task_name_is_validated(bad_name: object) -> None:
    with pytest.raises((TypeError, ValueError), match="task name"):
        task(name=bad_name)(lambda: None)  # type: ignore[arg-type]


def test_task_object_calls_its_function() -> None:
    @task
    def compute() -> int:
        return 41 + 1

    assert compute() == 42
    assert compute.name == "compute"
    assert "test_plan.py" in repr(compute)


def test_egress_allowlist_reaches_the_plan() -> None:
    @task
    def fetch() -> None:
        pass

    web = pipeline(
        name="web",
        tasks=[fetch],
        egress_allowlist=[
            "pypi.org",
            "*.github.com:443",
            " 10.0.0.0/8 ",
            "fd00::/8:5000",
            "fd00::1",
            "[fd00::2]:443",
        ],
    )

    plan = web.plan()

    assert plan.egress_allowlist == (
        "pypi.org",
        "*.github.com:443",
        "10.0.0.0/8",
        "fd00::/8:5000",
        "fd00::1",
        "[fd00::2]:443",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "http://pypi.org",
        "*.",
        "10.0.0.0/33",
        "pypi.org:0",
        "pypi.org:70000",
        "a b",
        "",
        "[fd00::1",
        "[10.0.0.1]:443",
        "[fd00::1]443",
    ],
)
def test_invalid_egress_entry_is_named_with_the_accepted_forms(entry: str) -> None:
    with pytest.raises(ValueError) as raised:
        pipeline(name="p", egress_allowlist=[entry])(lambda: None)

    message = str(raised.value)
    assert f"entry {entry!r} is invalid" in message
    assert "a wildcard domain (`*.github.com`)" in message


def test_egress_allowlist_must_be_a_list_of_strings() -> None:
    with pytest.raises(TypeError, match="must be a list of strings"):
        pipeline(name="p", egress_allowlist="pypi.org")(lambda: None)  # type: ignore[arg-type]
