"""`step.run`: run one shell command in the task's worker.

The coordinator never runs commands itself. Each call is a `RunStep` request
to the engine, which runs `/bin/sh -c COMMAND` in a fresh shell in the
worker, so nothing (current directory, exported variables) carries over
from one step to the next. The step's output goes to the job log, not to the
coordinator's stdout.

Calls from several task threads may run at the same time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal, overload

from . import _client, _runtime
from ._validate import check_bool, check_optional_name, to_seconds
from .errors import (
    TIMEOUT_EXIT_CODE,
    EngineError,
    JobCancelled,
    StepFailed,
    StepTimedOut,
)

__all__ = ["MAX_DERIVED_NAME_LENGTH", "derive_step_name", "run"]

MAX_DERIVED_NAME_LENGTH = 40
"""The maximum length of a step name derived from its command."""


@overload
def run(
    command: str,
    name: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: Literal[False] = False,
    timeout: float | timedelta | None = None,
) -> int: ...


@overload
def run(
    command: str,
    name: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    *,
    capture: Literal[True],
    timeout: float | timedelta | None = None,
) -> str: ...


@overload
def run(
    command: str,
    name: str | None,
    image: str | None,
    env: Mapping[str, str] | None,
    check: bool,
    capture: Literal[True],
    timeout: float | timedelta | None = None,
) -> str: ...


@overload
def run(
    command: str,
    name: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
    timeout: float | timedelta | None = None,
) -> int | str: ...


def run(
    command: str,
    name: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
    timeout: float | timedelta | None = None,
) -> int | str:
    """Run `command` with `/bin/sh -c` in the task's worker and wait for it.

    Args:
        command: The shell command; it may span several lines.
        name: The step's name in logs and views. Defaults to the command's
            first line, cut to 40 characters. A name the task already used
            gets a suffix: `test (2)`, `test (3)`.
        image: Runs this step in a container of that image instead of the
            task's worker.
        env: Variables added to the worker's environment for this step.
        check: Raise `StepFailed` when the command exits with a non-zero code.
        capture: Return the command's stdout, decoded as UTF-8 (invalid
            bytes become U+FFFD), instead of the exit code. Stdout is then
            kept in memory in full.
        timeout: Seconds (or a `timedelta`) after which the engine kills the
            command's whole process tree. None means no step timeout. The
            job's maximum duration applies either way.

    Returns:
        The exit code, or the captured stdout with `capture=True`. With
        `check=False` a timed-out step returns exit code 124, as GNU
        `timeout` does, or the stdout captured until it was killed.

    Raises:
        StepFailed: the command exited non-zero and `check` is True, or the
            engine could not start it at all (even with `check=False`).
        StepTimedOut: the command timed out and `check` is True.
        JobCancelled: the job was cancelled or timed out during the step.
        EngineError: the engine could not be reached or rejected the call.
        TypeError, ValueError: an argument is invalid.
    """
    command = _check_command(command)
    name = check_optional_name(name, "step name")
    image = check_optional_name(image, "image")
    checked_env = _check_env(env)
    check = check_bool(check, "check")
    capture = check_bool(capture, "capture")
    timeout_seconds = None if timeout is None else to_seconds(timeout, "timeout")

    task = _runtime.current_task("step.run")
    client = _client.get_client()
    step_name = task.claim_step_name(name if name is not None else derive_step_name(command))
    messages = client.messages
    request = messages.RunStepRequest(
        task=task.name,
        name=step_name,
        command=command,
        image=image or "",
        env=checked_env,
        timeout_seconds=timeout_seconds or 0.0,
        capture=capture,
    )

    stdout = bytearray()
    step_exit = None
    try:
        for event in client.stream_once("RunStep", request):
            kind = event.WhichOneof("event")
            if kind == "output" and event.output.stream == messages.STREAM_STDOUT:
                stdout += event.output.data
            elif kind == "exit":
                step_exit = event.exit
    except EngineError as error:
        if error.code == "CANCELLED":
            raise JobCancelled(
                f"the job was cancelled while step `{step_name}` of task `{task.name}` ran"
            ) from None
        raise

    if step_exit is None:
        raise EngineError(
            "RunStep", "UNKNOWN", f"the engine ended step `{step_name}` without an exit status"
        )
    output = stdout.decode("utf-8", errors="replace") if capture else None

    outcome = step_exit.outcome
    if outcome == messages.STEP_OUTCOME_EXITED:
        exit_code = int(step_exit.exit_code)
        if check and exit_code != 0:
            raise StepFailed(step_name, exit_code, task.name, output=output)
    elif outcome == messages.STEP_OUTCOME_TIMED_OUT:
        if check:
            raise StepTimedOut(step_name, task.name, timeout_seconds or 0.0, output=output)
        exit_code = TIMEOUT_EXIT_CODE
    elif outcome == messages.STEP_OUTCOME_CANCELLED:
        reason = f": {step_exit.message}" if step_exit.message else ""
        raise JobCancelled(
            f"the job was cancelled while step `{step_name}` of task `{task.name}` ran{reason}"
        )
    elif outcome == messages.STEP_OUTCOME_ERROR:
        raise StepFailed(
            step_name,
            int(step_exit.exit_code),
            task.name,
            message=step_exit.message or "the engine gave no reason",
        )
    else:
        raise EngineError(
            "RunStep", "UNKNOWN", f"the engine ended step `{step_name}` with outcome {outcome}"
        )

    return output if output is not None else exit_code


def derive_step_name(command: str) -> str:
    """Return a step name made from the command's first non-blank line,
    whitespace collapsed, cut to `MAX_DERIVED_NAME_LENGTH` characters.
    An ellipsis marks a cut line or further lines."""
    lines = [" ".join(line.split()) for line in command.splitlines()]
    lines = [line for line in lines if line]
    first = lines[0] if lines else "step"
    if len(first) > MAX_DERIVED_NAME_LENGTH:
        return first[: MAX_DERIVED_NAME_LENGTH - 1].rstrip() + "…"
    if len(lines) > 1:
        return first[: MAX_DERIVED_NAME_LENGTH - 2].rstrip() + " …"
    return first


def _check_command(command: object) -> str:
    if isinstance(command, (list, tuple)):
        raise TypeError(
            "command must be a string run by /bin/sh -c: join a list with shlex.join(...)"
        )
    if not isinstance(command, str):
        raise TypeError(f"command must be a string, not {type(command).__name__}")
    if not command.strip():
        raise ValueError("command must not be empty")
    if "\0" in command:
        raise ValueError("command must not contain a NUL character")
    return command


def _check_env(env: object) -> dict[str, str]:
    """Return the variables as a dict; the messages name keys, never values,
    because values often hold secrets."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a dict of strings, not {type(env).__name__}")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str):
            raise TypeError(f"env keys must be strings, not {type(key).__name__}: {key!r}")
        if not key or "=" in key or "\0" in key:
            raise ValueError(
                f"env key {key!r} is not a valid variable name: it must be non-empty "
                "and contain no `=` or NUL character"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"env value of `{key}` must be a string, not {type(value).__name__}: "
                "convert it with str()"
            )
        if "\0" in value:
            raise ValueError(f"env value of `{key}` must not contain a NUL character")
        checked[key] = value
    return checked
