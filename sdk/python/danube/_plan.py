"""Pipelines, tasks and the plan declared to the engine.

`@task` and `pipeline` only record definitions while the danubefile is
imported. The graph is resolved later, by `Pipeline.plan()`, because a task
may name in `needs` a task defined further down the file. Resolving follows
`needs` from the pipeline's tasks (the closure), looks string names up among
every task the file defined, and rejects unknown names, cycles and two
different tasks with one name.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import overload

from ._validate import check_bool, check_egress_allowlist, check_name, check_optional_name, to_seconds
from .errors import PlanError

__all__ = ["Pipeline", "Plan", "PlannedTask", "Task", "pipeline", "task"]

TaskFunction = Callable[[], object]
"""A task's body: called with no arguments in the task's own thread."""

SEQUENTIAL_TASK_NAME = "main"
"""The name of the one task of a pipeline defined with `@pipeline`."""

_definition_order = itertools.count()


class Task:
    """A node of a pipeline's graph, made by `@task`.

    Calling a task object calls its function directly, in the calling task,
    so a sequential pipeline may reuse task functions as plain helpers.
    """

    name: str
    """The task's name, unique within a pipeline."""
    needs: tuple[Task | str, ...]
    """The tasks that must succeed before this one starts."""
    image: str | None
    """The container image for the task's steps; None runs them in the
    worker the engine chooses by default."""

    def __init__(
        self,
        func: TaskFunction,
        name: str | None = None,
        needs: Sequence[Task | str] = (),
        image: str | None = None,
    ) -> None:
        _check_no_required_parameters(func, "task")
        self.func = func
        self.name = check_name(func.__name__ if name is None else name, "task name")
        self.needs = _check_task_refs(needs, f"needs of task `{self.name}`")
        self.image = check_optional_name(image, f"image of task `{self.name}`")
        self._order = next(_definition_order)
        self.location = _location(func)
        _registry.add_task(self)

    def __call__(self) -> object:
        return self.func()

    def __repr__(self) -> str:
        return f"<danube task {self.name!r} at {self.location}>"


@dataclass(frozen=True)
class PlannedTask:
    """One task of a resolved plan, in the form the engine receives."""

    name: str
    needs: tuple[str, ...]
    image: str
    func: TaskFunction


@dataclass(frozen=True)
class Plan:
    """A pipeline's resolved graph, tasks in topological order."""

    pipeline: str
    tasks: tuple[PlannedTask, ...]
    max_duration_seconds: int
    """0 keeps the engine's default."""
    fail_fast: bool
    egress_allowlist: tuple[str, ...] = ()
    """Destinations the job's steps may reach on a kube target."""


class Pipeline:
    """A pipeline definition: either one function (sequential) or a set of
    tasks whose closure over `needs` forms the graph."""

    name: str
    max_duration: float | None
    """The job's maximum wall time in seconds; None keeps the engine's default."""
    fail_fast: bool
    egress_allowlist: tuple[str, ...]
    """Destinations the job's steps may reach on a kube target."""

    def __init__(
        self,
        name: str,
        *,
        func: TaskFunction | None = None,
        tasks: Sequence[Task | str] = (),
        image: str | None = None,
        max_duration: float | timedelta | None = None,
        fail_fast: bool = False,
        egress_allowlist: Sequence[str] = (),
    ) -> None:
        self.name = check_name(name, "pipeline name")
        self.max_duration = (
            None if max_duration is None else to_seconds(max_duration, "max_duration")
        )
        self.fail_fast = check_bool(fail_fast, "fail_fast")
        self.egress_allowlist = check_egress_allowlist(
            egress_allowlist, f"egress_allowlist of pipeline `{self.name}`"
        )
        self._func = func
        self._tasks = _check_task_refs(tasks, f"tasks of pipeline `{self.name}`")
        self._image = check_optional_name(image, f"image of pipeline `{self.name}`")
        _registry.add_pipeline(self)

    @property
    def is_sequential(self) -> bool:
        """Whether the pipeline is one function run as the task `main`."""
        return self._func is not None

    def plan(self) -> Plan:
        """Resolve the graph and order its tasks so that each comes after
        the tasks it needs; among ready tasks, the one defined first leads.

        Raises:
            PlanError: a name in `needs` matches no task or several, the
                needs form a cycle, or two different tasks share a name.
        """
        if self._func is not None:
            tasks: tuple[PlannedTask, ...] = (
                PlannedTask(SEQUENTIAL_TASK_NAME, (), self._image or "", self._func),
            )
        else:
            tasks = _order_tasks(_resolve_closure(self))
        max_duration = 0 if self.max_duration is None else math.ceil(self.max_duration)
        return Plan(self.name, tasks, max_duration, self.fail_fast, self.egress_allowlist)

    def __repr__(self) -> str:
        return f"<danube pipeline {self.name!r}>"


# --- Decorators ---------------------------------------------------------------


@overload
def task(func: TaskFunction, /) -> Task: ...


@overload
def task(
    *,
    name: str | None = None,
    needs: Sequence[Task | str] = (),
    image: str | None = None,
) -> Callable[[TaskFunction], Task]: ...


def task(
    func: TaskFunction | None = None,
    /,
    *,
    name: str | None = None,
    needs: Sequence[Task | str] = (),
    image: str | None = None,
) -> Task | Callable[[TaskFunction], Task]:
    """Define a task: `@task` or `@task(name=..., needs=[...], image=...)`.

    `name` defaults to the function's name. `needs` lists the tasks that
    must succeed first, as task objects or as names (a name may refer to a
    task defined later in the file). `image` is the container image for the
    task's steps.
    """
    if func is not None:
        return Task(func)

    def decorate(func: TaskFunction) -> Task:
        return Task(func, name=name, needs=needs, image=image)

    return decorate


@overload
def pipeline(func: TaskFunction, /) -> Pipeline: ...


@overload
def pipeline(
    *,
    name: str,
    tasks: Sequence[Task | str],
    max_duration: float | timedelta | None = None,
    fail_fast: bool = False,
    egress_allowlist: Sequence[str] = (),
) -> Pipeline: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    max_duration: float | timedelta | None = None,
    fail_fast: bool = False,
    image: str | None = None,
    egress_allowlist: Sequence[str] = (),
) -> Callable[[TaskFunction], Pipeline]: ...


def pipeline(
    func: TaskFunction | None = None,
    /,
    *,
    name: str | None = None,
    tasks: Sequence[Task | str] | None = None,
    max_duration: float | timedelta | None = None,
    fail_fast: bool = False,
    image: str | None = None,
    egress_allowlist: Sequence[str] = (),
) -> Pipeline | Callable[[TaskFunction], Pipeline]:
    """Define a pipeline, in one of two forms.

    Sequential: `@pipeline` or `@pipeline(name=..., ...)` on a function runs
    that function as the pipeline's one task, named `main`. `name` defaults
    to the function's name, and `image` sets that task's image.

    Graph: `pipeline(name="web", tasks=[package])` runs the given tasks and,
    transitively, every task they need.

    `max_duration` (seconds or a `timedelta`) bounds the job's wall time.
    With `fail_fast=True` the engine starts no new task after a failure;
    by default, tasks that do not depend on the failed one still run.

    `egress_allowlist` lists what the job's steps may reach on a kube
    target: host names (`"pypi.org"`), wildcard domains (`"*.github.com"`)
    and CIDRs (`"10.0.0.0/8"`), each optionally followed by `:PORT`. Host
    names need Cilium in the cluster; the local backend enforces nothing.
    """
    if func is not None:
        return Pipeline(func.__name__, func=_sequential_body(func))

    if tasks is not None:
        if image is not None:
            raise TypeError("pipeline(tasks=...) takes no image: set image= on each @task instead")
        if name is None:
            raise TypeError(
                'pipeline(tasks=...) needs a name, as in pipeline(name="web", tasks=[...])'
            )
        refs = _check_task_refs(tasks, f"tasks of pipeline `{name}`")
        if not refs:
            raise ValueError(
                f"tasks of pipeline `{name}` must not be empty: list the tasks to run, as in tasks=[package]"
            )
        return Pipeline(
            name,
            tasks=refs,
            max_duration=max_duration,
            fail_fast=fail_fast,
            egress_allowlist=egress_allowlist,
        )

    def decorate(func: TaskFunction) -> Pipeline:
        return Pipeline(
            func.__name__ if name is None else name,
            func=_sequential_body(func),
            image=image,
            max_duration=max_duration,
            fail_fast=fail_fast,
            egress_allowlist=egress_allowlist,
        )

    return decorate


def _sequential_body(func: TaskFunction) -> TaskFunction:
    _check_no_required_parameters(func, "pipeline")
    return func


# --- Registry -----------------------------------------------------------------


class _Registry:
    """Every pipeline and task defined since the last reset, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pipelines: list[Pipeline] = []
        self.tasks: list[Task] = []

    def add_task(self, task: Task) -> None:
        with self._lock:
            self.tasks.append(task)

    def add_pipeline(self, pipeline: Pipeline) -> None:
        with self._lock:
            if any(existing.name == pipeline.name for existing in self.pipelines):
                raise PlanError(
                    f"pipeline `{pipeline.name}` is defined twice: give each pipeline its own name"
                )
            self.pipelines.append(pipeline)


_registry = _Registry()


def defined_pipelines() -> list[Pipeline]:
    """Return the pipelines defined since the last `reset_registry()`."""
    return list(_registry.pipelines)


def reset_registry() -> None:
    """Forget every pipeline and task defined so far."""
    global _registry
    _registry = _Registry()


# --- Graph resolution ---------------------------------------------------------


def _resolve_closure(pipeline: Pipeline) -> list[Task]:
    """Return the pipeline's tasks and every task they need, transitively."""
    by_name: dict[str, list[Task]] = {}
    for defined in _registry.tasks:
        by_name.setdefault(defined.name, []).append(defined)

    def resolve(ref: Task | str, wanted_by: str) -> Task:
        if isinstance(ref, Task):
            return ref
        candidates = by_name.get(ref, [])
        if not candidates:
            known = ", ".join(sorted(by_name)) or "none"
            raise PlanError(
                f"{wanted_by} needs `{ref}`, but no task has that name (defined tasks: {known})"
            )
        if len(candidates) > 1:
            places = " and ".join(candidate.location for candidate in candidates)
            raise PlanError(
                f"{wanted_by} needs `{ref}`, but several tasks have that name ({places}): rename one"
            )
        return candidates[0]

    found: dict[str, Task] = {}
    pending = [resolve(ref, f"pipeline `{pipeline.name}`") for ref in pipeline._tasks]
    while pending:
        current = pending.pop()
        known = found.get(current.name)
        if known is current:
            continue
        if known is not None:
            raise PlanError(
                f"two different tasks are named `{current.name}` "
                f"({known.location} and {current.location}): rename one"
            )
        found[current.name] = current
        pending.extend(resolve(ref, f"task `{current.name}`") for ref in current.needs)
    return list(found.values())


def _needed_names(task: Task) -> tuple[str, ...]:
    names = (ref.name if isinstance(ref, Task) else ref for ref in task.needs)
    return tuple(dict.fromkeys(names))


def _order_tasks(tasks: list[Task]) -> tuple[PlannedTask, ...]:
    """Sort the closure topologically (Kahn's algorithm), breaking ties by
    definition order so that the same file always gives the same plan."""
    needs = {task.name: _needed_names(task) for task in tasks}
    by_name = {task.name: task for task in tasks}
    dependents: dict[str, list[str]] = {name: [] for name in by_name}
    waiting_on = {name: len(needed) for name, needed in needs.items()}
    for name, needed in needs.items():
        for dependency in needed:
            dependents[dependency].append(name)

    ready = [(by_name[name]._order, name) for name, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[PlannedTask] = []
    while ready:
        _, name = heapq.heappop(ready)
        task = by_name[name]
        ordered.append(PlannedTask(name, needs[name], task.image or "", task.func))
        for dependent in dependents[name]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, (by_name[dependent]._order, dependent))

    if len(ordered) < len(tasks):
        stuck = sorted(
            (name for name, count in waiting_on.items() if count > 0),
            key=lambda name: by_name[name]._order,
        )
        cycle = _find_cycle(stuck, needs)
        chain = " -> ".join(f"`{name}`" for name in cycle)
        raise PlanError(f"the tasks' needs form a cycle: {chain} (each task needs the next)")
    return tuple(ordered)


def _find_cycle(stuck: list[str], needs: dict[str, tuple[str, ...]]) -> list[str]:
    """Return one cycle among tasks that Kahn's algorithm could not order,
    first task repeated at the end.

    Every stuck task needs at least one stuck task, so walking from any of
    them along stuck needs must revisit a task.
    """
    stuck_set = set(stuck)
    path: list[str] = []
    position: dict[str, int] = {}
    current = stuck[0]
    while current not in position:
        position[current] = len(path)
        path.append(current)
        current = next(name for name in needs[current] if name in stuck_set)
    return path[position[current] :] + [current]


# --- Helpers ------------------------------------------------------------------


def _check_task_refs(refs: object, argument: str) -> tuple[Task | str, ...]:
    if isinstance(refs, (Task, str)):
        raise TypeError(
            f"{argument} must be a list, as in needs=[install], not a single {type(refs).__name__}"
        )
    if not isinstance(refs, Sequence):
        raise TypeError(
            f"{argument} must be a list of tasks or task names, not {type(refs).__name__}"
        )
    checked: list[Task | str] = []
    for ref in refs:
        if isinstance(ref, Task):
            checked.append(ref)
        elif isinstance(ref, str):
            checked.append(check_name(ref, f"task name in {argument}"))
        else:
            raise TypeError(
                f"{argument} must hold tasks (made with @task) or task names, not {type(ref).__name__}: {ref!r}"
            )
    return tuple(checked)


def _check_no_required_parameters(func: object, kind: str) -> None:
    if not callable(func):
        raise TypeError(f"@{kind} must decorate a function, not {type(func).__name__}")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    required = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        name = getattr(func, "__name__", repr(func))
        raise TypeError(
            f"@{kind} function `{name}` must take no arguments, but it requires: {', '.join(required)}"
        )


def _location(func: object) -> str:
    code = getattr(func, "__code__", None)
    if code is None:
        return "<unknown location>"
    filename = code.co_filename
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        relative = filename
    if not relative.startswith(".."):
        filename = relative
    return f"{filename}:{code.co_firstlineno}"
