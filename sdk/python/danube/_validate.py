"""Argument checks shared by the public functions.

They raise TypeError for a value of the wrong type and ValueError for a value
of the right type that is out of range, each naming the argument.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import timedelta


def check_name(value: object, argument: str) -> str:
    """Return `value` if it is a non-blank string without control characters."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{argument} must not be empty")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError(
            f"{argument} {value!r} must not contain control characters such as newlines"
        )
    return value


def check_optional_name(value: object, argument: str) -> str | None:
    """Return None for None, else `check_name(value, argument)`."""
    if value is None:
        return None
    return check_name(value, argument)


def check_bool(value: object, argument: str) -> bool:
    """Return `value` if it is a bool; truthy stand-ins are rejected because
    `check="no"` would otherwise mean True."""
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be True or False, not {value!r}")
    return value


def to_seconds(value: object, argument: str) -> float:
    """Return a positive, finite duration in seconds from a number or a
    `datetime.timedelta`."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{argument} must be a number of seconds or a datetime.timedelta, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{argument} must be a positive number of seconds, not {value!r}")
    return seconds
