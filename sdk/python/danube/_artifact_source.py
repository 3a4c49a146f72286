"""Path confinement and chunked reading of the files an artifact is made of.

A path must stay inside the workspace after every symlink in it is resolved.
For a directory, every symlink inside it must resolve inside the workspace
too. Symlinks are stored in the tar as links (their text unchanged), and the
check keeps them from pointing an extracted artifact at the host's files.

A directory is streamed as a gzip-compressed tar built on the fly: a thread
writes the tar into a bounded queue of 1 MiB chunks, so memory stays at a
few chunks whatever the directory's size.
"""

from __future__ import annotations

import gzip
import io
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ArtifactError

CHUNK_SIZE = 1024 * 1024
"""The size of each uploaded chunk but the last, in bytes."""

_QUEUED_CHUNKS = 4
_GZIP_LEVEL = 6
"""zlib's default level: most of level 9's ratio at a fraction of its time."""


@dataclass(frozen=True)
class ArtifactSource:
    """A path to upload, checked to lie inside the workspace."""

    path: str
    """The path as the script passed it."""
    resolved: str
    """The absolute path with every symlink resolved."""
    relative: str
    """`resolved` relative to the workspace, `.` for the workspace itself."""
    workspace: str
    """The workspace's absolute path with every symlink resolved."""
    is_directory: bool


def resolve_source(path: str | os.PathLike[str], workspace: str) -> ArtifactSource:
    """Resolve `path` (relative to `workspace`, or absolute) and check that
    it exists and lies inside the workspace.

    Raises:
        ArtifactError: the path escapes the workspace, does not exist, or is
            neither a regular file nor a directory.
        TypeError, ValueError: `path` is not a non-empty string or path.
    """
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(
            f"artifact path must be a str or os.PathLike[str], not {type(raw).__name__}"
        )
    if not raw:
        raise ValueError("artifact path must not be empty")

    root = os.path.realpath(workspace)
    resolved = os.path.realpath(os.path.join(root, raw))
    if not is_inside(resolved, root):
        raise ArtifactError(
            raw,
            f"artifact path `{raw}` resolves to `{resolved}`, outside the workspace `{root}`: "
            "upload only files inside the workspace",
        )

    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise ArtifactError(
            raw, f"artifact path `{raw}` does not exist in the workspace `{root}`"
        ) from None
    except OSError as error:
        raise ArtifactError(raw, f"failed to read artifact path `{raw}`: {error}") from error
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ArtifactError(raw, f"artifact path `{raw}` is neither a regular file nor a directory")

    return ArtifactSource(
        path=raw,
        resolved=resolved,
        relative=os.path.relpath(resolved, root),
        workspace=root,
        is_directory=stat.S_ISDIR(mode),
    )


def is_inside(path: str, root: str) -> bool:
    """Return whether the absolute `path` is `root` or lies below it."""
    return os.path.commonpath([path, root]) == root


def file_chunks(source: ArtifactSource) -> Iterator[bytes]:
    """Yield the file's bytes in chunks of `CHUNK_SIZE`."""
    with _open_no_follow(source, source.resolved) as file:
        while True:
            try:
                chunk = file.read(CHUNK_SIZE)
            except OSError as error:
                raise ArtifactError(
                    source.path, f"failed to read artifact `{source.path}`: {error}"
                ) from error
            if not chunk:
                return
            yield chunk


@dataclass(frozen=True)
class _Entry:
    path: str
    arcname: str


def scan_directory(source: ArtifactSource) -> list[tuple[str, str]]:
    """Return `(path, name in the tar)` for everything below the directory,
    parents before children and siblings sorted by name.

    Sockets, FIFOs and device files are left out: a tar of them means
    nothing on another machine.

    Raises:
        ArtifactError: a symlink resolves outside the workspace, or a
            directory cannot be read.
    """
    entries: list[tuple[str, str]] = []
    pending = [(source.resolved, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as error:
            raise ArtifactError(
                source.path,
                f"failed to read directory `{directory}` of artifact `{source.path}`: {error}",
            ) from error

        subdirectories = []
        for child in children:
            arcname = prefix + child.name
            if child.is_symlink():
                _check_symlink(source, child.path)
                entries.append((child.path, arcname))
            elif child.is_dir(follow_symlinks=False):
                entries.append((child.path, arcname))
                subdirectories.append((child.path, arcname + "/"))
            elif child.is_file(follow_symlinks=False):
                entries.append((child.path, arcname))
        # Reversed so that the stack pops them in name order.
        pending.extend(reversed(subdirectories))
    return entries


def _check_symlink(source: ArtifactSource, link: str) -> None:
    target = os.path.realpath(link)
    if not is_inside(target, source.workspace):
        link_path = os.path.relpath(link, source.workspace)
        raise ArtifactError(
            source.path,
            f"artifact `{source.path}` contains `{link_path}`, a symlink to `{os.readlink(link)}` "
            f"that resolves outside the workspace `{source.workspace}`: remove the link "
            "or upload a directory without it",
        )


class _Stopped(Exception):
    """The consumer went away; the producer thread must end."""


_END = object()


class _ChunkWriter:
    """A write-only file that cuts what it receives into `CHUNK_SIZE` chunks
    and puts them on a bounded queue, blocking while the queue is full."""

    def __init__(self, chunks: queue.Queue[object], stop: threading.Event) -> None:
        self._chunks = chunks
        self._stop = stop
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK_SIZE:
            self._put(bytes(self._buffer[:CHUNK_SIZE]))
            del self._buffer[:CHUNK_SIZE]
        return len(data)

    def flush(self) -> None:
        """Keep the partial chunk: only `finish` sends it."""

    def finish(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._put(_END)

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped()
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class DirectoryStream:
    """The tar.gz of a directory, as an iterator of chunks.

    Iterating starts the producer thread. `close()` stops it and must be
    called once the consumer is done, even after an error.
    """

    def __init__(self, source: ArtifactSource, entries: list[tuple[str, str]]) -> None:
        self._source = source
        self._entries = [_Entry(path, arcname) for path, arcname in entries]
        self._chunks: queue.Queue[object] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, name=f"danube-artifact-{source.relative}", daemon=True
        )

    def __iter__(self) -> Iterator[bytes]:
        self._thread.start()
        while True:
            try:
                item = self._chunks.get(timeout=1)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                raise ArtifactError(
                    self._source.path,
                    f"archiving artifact `{self._source.path}` stopped without finishing",
                ) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes), "the producer queues only bytes, errors and _END"
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _produce(self) -> None:
        writer = _ChunkWriter(self._chunks, self._stop)
        try:
            with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=_GZIP_LEVEL) as compressed:
                with tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for entry in self._entries:
                        self._add(tar, entry)
            writer.finish()
        except _Stopped:
            return
        except OSError as error:
            self._report(
                ArtifactError(
                    self._source.path, f"failed to archive artifact `{self._source.path}`: {error}"
                )
            )
        except Exception as error:
            self._report(error)

    def _report(self, error: Exception) -> None:
        try:
            _ChunkWriter(self._chunks, self._stop)._put(error)
        except _Stopped:
            pass

    def _add(self, tar: tarfile.TarFile, entry: _Entry) -> None:
        try:
            info = tar.gettarinfo(entry.path, arcname=entry.arcname)
        except FileNotFoundError:
            raise ArtifactError(
                self._source.path,
                f"`{entry.arcname}` in artifact `{self._source.path}` disappeared while it was archived",
            ) from None
        if info.issym():
            # Checked again: the file may have been replaced since the scan.
            _check_symlink(self._source, entry.path)
            tar.addfile(info)
        elif info.isreg():
            with _open_no_follow(self._source, entry.path) as file:
                tar.addfile(info, file)
        elif info.isdir() or info.islnk():
            # A hard link's target is a member stored earlier in this tar.
            tar.addfile(info)


def _open_no_follow(source: ArtifactSource, path: str) -> io.FileIO:
    """Open a regular file for reading, refusing a symlink put in its place
    after the path was checked."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise ArtifactError(
            source.path, f"failed to open `{path}` of artifact `{source.path}`: {error}"
        ) from error
    return io.FileIO(descriptor, "r")
