"""Argument checks shared by the public functions.

They raise TypeError for a value of the wrong type and ValueError for a value
of the right type that is out of range, each naming the argument.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Sequence
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


_EGRESS_FORMS = (
    "use a host name (`pypi.org`), a wildcard domain (`*.github.com`), an address or a CIDR "
    "(`10.0.0.0/8`), optionally followed by `:PORT` (an IPv6 address with a port in "
    "brackets: `[fd00::1]:443`)"
)
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_egress_allowlist(value: object, argument: str) -> tuple[str, ...]:
    """Return the entries of an egress allowlist, each checked as the engine
    checks it: a host name, a `*.` wildcard domain or a CIDR, each with an
    optional `:PORT` (for a CIDR, after the prefix length)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(
            f'{argument} must be a list of strings, as in ["pypi.org", "10.0.0.0/8"], '
            f"not {type(value).__name__}"
        )
    entries = []
    for entry in value:
        if not isinstance(entry, str):
            raise TypeError(f"{argument} entries must be strings, not {type(entry).__name__}")
        if not _valid_egress_entry(entry.strip()):
            raise ValueError(f"{argument} entry {entry!r} is invalid: {_EGRESS_FORMS}")
        entries.append(entry.strip())
    return tuple(entries)


def _valid_egress_entry(entry: str) -> bool:
    if "/" in entry:
        address, rest = entry.split("/", 1)
        prefix, _, port = rest.partition(":")
        if port and not _valid_port(port):
            return False
        try:
            ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        except ValueError:
            return False
        return prefix.isdigit()
    if entry.startswith("["):
        address, bracket, port = entry[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and _valid_port(port[1:]))):
            return False
        return _is_address(address, version=6)
    if _is_address(entry):
        return True
    host, colon, port = entry.rpartition(":")
    if not colon:
        host = entry
    elif not _valid_port(port):
        return False
    host = host.removeprefix("*.")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.match(label) for label in host.split("."))


def _is_address(text: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def _valid_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) <= 65535
