"""`artifacts.upload`: keep a file or a directory of the workspace with the job.

A file is sent as it is, a directory as a gzip-compressed tar of its contents
(member names relative to the directory, symlinks kept as links). Both are
streamed in 1 MiB chunks. The engine enforces the size limit and stores the
artifact with its SHA-256 digest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import _client, _runtime
from ._artifact_source import (
    ArtifactSource,
    DirectoryStream,
    file_chunks,
    resolve_source,
    scan_directory,
)
from ._validate import check_name
from .context import ctx
from .errors import ArtifactError, DanubeError, EngineError

__all__ = ["MAX_NAME_BYTES", "Artifact", "upload"]

MAX_NAME_BYTES = 255
"""The maximum length of an artifact name in UTF-8 bytes, as for a file name."""


@dataclass(frozen=True)
class Artifact:
    """An uploaded artifact, as the engine stored it."""

    name: str
    size_bytes: int
    """The stored size: the file's, or the tar.gz's for a directory."""
    sha256: str
    """The hex SHA-256 digest of the stored bytes."""


def upload(path: str | os.PathLike[str], name: str | None = None) -> Artifact:
    """Upload a file or a directory of the workspace as an artifact of this job.

    Args:
        path: Relative to the workspace, or absolute inside it. Symlinks are
            resolved, and neither the path nor any symlink inside a
            directory may lead out of the workspace.
        name: The artifact's name, a plain file name (no `/`). Defaults to
            the path's last component.

    Raises:
        ArtifactError: the path is missing or escapes the workspace, or the
            engine rejected the upload (name taken, size limit exceeded).
        EngineError: the engine could not be reached or failed otherwise.
        TypeError, ValueError: an argument is invalid.
    """
    source = resolve_source(path, ctx.workspace)
    artifact_name = check_artifact_name(os.path.basename(source.resolved) if name is None else name)

    task = _runtime.current_task("artifacts.upload")
    client = _client.get_client()
    messages = client.messages
    header = messages.ArtifactHeader(
        name=artifact_name,
        kind=(
            messages.ArtifactHeader.KIND_DIRECTORY
            if source.is_directory
            else messages.ArtifactHeader.KIND_FILE
        ),
        source_path=source.relative,
        task=task.name,
    )

    # Scanned before the first byte is sent, so that an escaping symlink
    # stops the upload before the engine has seen anything.
    directory = DirectoryStream(source, scan_directory(source)) if source.is_directory else None
    chunks: Iterator[bytes] = iter(directory) if directory is not None else file_chunks(source)
    failures: list[Exception] = []

    def make_requests(abort: Callable[[], None]) -> Iterator[Any]:
        yield messages.UploadArtifactRequest(header=header)
        try:
            for chunk in chunks:
                yield messages.UploadArtifactRequest(chunk=chunk)
        except Exception as error:
            failures.append(error)
            abort()

    try:
        response = client.upload("UploadArtifact", make_requests)
    except EngineError as error:
        if failures:
            raise failures[0] from None
        raise _artifact_error(source, artifact_name, error) from None
    finally:
        if directory is not None:
            directory.close()

    return Artifact(artifact_name, int(response.size_bytes), str(response.sha256))


def check_artifact_name(name: object) -> str:
    """Return `name` if it is a valid artifact name: a non-empty file name
    without path separators, control characters, or the names `.` and `..`,
    at most `MAX_NAME_BYTES` long."""
    checked = check_name(name, "artifact name")
    if checked in (".", "..") or "/" in checked or "\\" in checked:
        raise ValueError(
            f"artifact name {checked!r} must be a plain file name: no `/` or `\\`, and not `.` or `..`"
        )
    if len(checked.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"artifact name {checked!r} is longer than {MAX_NAME_BYTES} bytes")
    return checked


def _artifact_error(source: ArtifactSource, name: str, error: EngineError) -> DanubeError:
    if error.code == "INVALID_ARGUMENT":
        return ArtifactError(source.path, f"the engine rejected artifact `{name}`: {error.details}")
    if error.code == "RESOURCE_EXHAUSTED":
        return ArtifactError(
            source.path, f"artifact `{name}` exceeds the engine's size limit: {error.details}"
        )
    if error.code == "ALREADY_EXISTS":
        return ArtifactError(
            source.path,
            f"this job already has an artifact named `{name}`: pass another name= ({error.details})",
        )
    return error
