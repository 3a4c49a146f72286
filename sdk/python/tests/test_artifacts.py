"""artifacts.upload: path confinement, names, and what reaches the engine."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import grpc
import pytest
from fake_engine import RunningEngine
from helpers import in_task

from danube import ArtifactError, artifacts
from danube import _artifact_source as source_module
from danube._artifact_source import CHUNK_SIZE, DirectoryStream, resolve_source, scan_directory
from danube._proto import job_pb2


def write(path: Path, data: bytes | str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


# --- Path confinement ---------------------------------------------------------


def test_relative_path_resolves_inside_workspace(workspace: Path) -> None:
    write(workspace / "dist" / "app.whl")

    source = resolve_source("dist/../dist/app.whl", str(workspace))

    assert source.resolved == str((workspace / "dist" / "app.whl").resolve())
    assert source.relative == "dist/app.whl"
    assert source.is_directory is False


def test_absolute_path_inside_workspace_is_accepted(workspace: Path) -> None:
    write(workspace / "report.html")

    source = resolve_source(str(workspace / "report.html"), str(workspace))

    assert source.relative == "report.html"


def test_parent_path_outside_workspace_is_rejected(workspace: Path) -> None:
    write(workspace.parent / "secret.txt")

    with pytest.raises(ArtifactError) as raised:
        resolve_source("../secret.txt", str(workspace))

    assert raised.value.path == "../secret.txt"
    assert "artifact path `../secret.txt` resolves to" in str(raised.value)
    assert "outside the workspace" in str(raised.value)


def test_absolute_path_outside_workspace_is_rejected(workspace: Path) -> None:
    with pytest.raises(
        ArtifactError, match="artifact path `/etc/passwd` resolves to `/etc/passwd`, outside"
    ):
        resolve_source("/etc/passwd", str(workspace))


def test_missing_path_outside_workspace_reports_escape(workspace: Path) -> None:
    with pytest.raises(ArtifactError, match="outside the workspace"):
        resolve_source("../../no/such/file", str(workspace))


def test_symlink_to_file_outside_is_rejected(workspace: Path) -> None:
    outside = write(workspace.parent / "id_rsa")
    (workspace / "key").symlink_to(outside)

    with pytest.raises(ArtifactError, match="artifact path `key` resolves to .*id_rsa`, outside"):
        resolve_source("key", str(workspace))


def test_symlinked_workspace_path_is_accepted(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write(real / "out.txt")
    (tmp_path / "alias").symlink_to(real)

    source = resolve_source(str(tmp_path / "alias" / "out.txt"), str(tmp_path / "alias"))

    assert source.relative == "out.txt"


def test_missing_path_is_reported(workspace: Path) -> None:
    with pytest.raises(ArtifactError, match="artifact path `coverage/` does not exist"):
        resolve_source("coverage/", str(workspace))


def test_special_file_is_rejected(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")

    with pytest.raises(ArtifactError, match="neither a regular file nor a directory"):
        resolve_source("pipe", str(workspace))


def test_symlink_inside_directory_escaping_workspace_is_rejected(workspace: Path) -> None:
    write(workspace / "site" / "index.html")
    (workspace / "site" / "assets").mkdir()
    (workspace / "site" / "assets" / "passwd").symlink_to("/etc/passwd")

    with pytest.raises(ArtifactError) as raised:
        scan_directory(resolve_source("site", str(workspace)))

    message = str(raised.value)
    assert raised.value.path == "site"
    assert "contains `site/assets/passwd`, a symlink to `/etc/passwd`" in message


def test_relative_symlink_climbing_out_is_rejected(workspace: Path) -> None:
    write(workspace.parent / "outside.txt")
    (workspace / "out").mkdir()
    (workspace / "out" / "link").symlink_to("../../outside.txt")

    with pytest.raises(ArtifactError, match="`out/link`, a symlink to `../../outside.txt`"):
        scan_directory(resolve_source("out", str(workspace)))


def test_dangling_symlink_outside_is_rejected(workspace: Path) -> None:
    (workspace / "out").mkdir()
    (workspace / "out" / "link").symlink_to("/nonexistent/place")

    with pytest.raises(ArtifactError, match="resolves outside the workspace"):
        scan_directory(resolve_source("out", str(workspace)))


def test_scan_lists_parents_first_in_name_order(workspace: Path) -> None:
    write(workspace / "out" / "b.txt")
    write(workspace / "out" / "a" / "z.txt")
    write(workspace / "out" / "a" / "y" / "deep.txt")
    write(workspace / "shared.txt")
    (workspace / "out" / "link").symlink_to("../shared.txt")
    os.mkfifo(workspace / "out" / "fifo")

    entries = scan_directory(resolve_source("out", str(workspace)))

    assert [arcname for _, arcname in entries] == [
        "a",
        "b.txt",
        "link",
        "a/y",
        "a/z.txt",
        "a/y/deep.txt",
    ]


# --- Names --------------------------------------------------------------------


@pytest.mark.parametrize("bad_name", ["a/b", "..", ".", "a\\b", "", "x\n", "é" * 200])
def test_invalid_artifact_names_are_rejected(bad_name: str) -> None:
    with pytest.raises(ValueError, match="artifact name"):
        artifacts.check_artifact_name(bad_name)


def test_artifact_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="artifact name must be a string"):
        artifacts.check_artifact_name(5)


# --- Uploads ------------------------------------------------------------------


def test_file_is_streamed_in_one_mib_chunks(
    engine: RunningEngine, connected, workspace: Path
) -> None:
    data = os.urandom(2 * CHUNK_SIZE + CHUNK_SIZE // 2)
    write(workspace / "dist" / "app.bin", data)

    with in_task("package"):
        artifact = artifacts.upload("dist/app.bin")

    [upload] = engine.engine.uploads
    assert upload.completed
    assert upload.header.name == "app.bin"
    assert upload.header.kind == job_pb2.ArtifactHeader.KIND_FILE
    assert upload.header.source_path == "dist/app.bin"
    assert upload.header.task == "package"
    assert [len(chunk) for chunk in upload.chunks] == [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE // 2]
    assert upload.data == data
    assert artifact == artifacts.Artifact("app.bin", len(data), hashlib.sha256(data).hexdigest())


def test_empty_file_uploads_header_only(engine: RunningEngine, connected, workspace: Path) -> None:
    write(workspace / "empty.log", b"")

    with in_task():
        artifact = artifacts.upload(workspace / "empty.log", name="log")

    [upload] = engine.engine.uploads
    assert upload.chunks == []
    assert artifact.name == "log"
    assert artifact.size_bytes == 0


def test_directory_is_streamed_as_tar_gz(engine: RunningEngine, connected, workspace: Path) -> None:
    big = os.urandom(3 * CHUNK_SIZE)
    write(workspace / "coverage" / "index.html", "<html>")
    write(workspace / "coverage" / "data" / "big.bin", big)
    (workspace / "coverage" / "empty").mkdir()
    (workspace / "coverage" / "latest").symlink_to("index.html")
    os.link(workspace / "coverage" / "index.html", workspace / "coverage" / "hardlink.html")

    with in_task("test"):
        artifact = artifacts.upload("coverage/")

    [upload] = engine.engine.uploads
    assert upload.completed
    assert upload.header.name == "coverage"
    assert upload.header.kind == job_pb2.ArtifactHeader.KIND_DIRECTORY
    assert upload.header.source_path == "coverage"
    assert all(len(chunk) == CHUNK_SIZE for chunk in upload.chunks[:-1])
    assert 0 < len(upload.chunks[-1]) <= CHUNK_SIZE
    assert artifact.size_bytes == len(upload.data)

    with tarfile.open(fileobj=io.BytesIO(upload.data), mode="r:gz") as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert sorted(members) == [
            "data",
            "data/big.bin",
            "empty",
            "hardlink.html",
            "index.html",
            "latest",
        ]
        assert members["empty"].isdir()
        assert members["latest"].issym()
        assert members["latest"].linkname == "index.html"
        assert members["index.html"].islnk() or members["hardlink.html"].islnk()
        assert tar.extractfile("data/big.bin").read() == big
        regular = "index.html" if members["index.html"].isreg() else "hardlink.html"
        assert tar.extractfile(regular).read() == b"<html>"


def test_directory_stream_holds_few_chunks_in_memory(workspace: Path) -> None:
    write(workspace / "out" / "big.bin", os.urandom(20 * CHUNK_SIZE))
    source = resolve_source("out", str(workspace))
    stream = DirectoryStream(source, scan_directory(source))
    chunks = iter(stream)
    try:
        first = next(chunks)
        time.sleep(0.3)

        # The producer is blocked on the full queue, not done with 20 MiB.
        assert len(first) == CHUNK_SIZE
        assert stream._thread.is_alive()
        assert stream._chunks.qsize() <= 4
    finally:
        stream.close()

    assert not stream._thread.is_alive()


def test_escaping_symlink_stops_upload_before_sending(
    engine: RunningEngine, connected, workspace: Path
) -> None:
    write(workspace / "site" / "index.html")
    (workspace / "site" / "hosts").symlink_to("/etc/hosts")

    with in_task(), pytest.raises(ArtifactError, match="symlink to `/etc/hosts`"):
        artifacts.upload("site")

    assert engine.engine.uploads == []


def test_file_swapped_for_symlink_mid_upload_aborts_it(
    engine: RunningEngine, connected, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(workspace / "site" / "a.bin", os.urandom(2 * CHUNK_SIZE))
    write(workspace / "site" / "b.txt")
    real_scan = source_module.scan_directory

    def scan_then_swap(source):
        entries = real_scan(source)
        # After the check, as a step running in parallel could do it.
        (workspace / "site" / "b.txt").unlink()
        (workspace / "site" / "b.txt").symlink_to("/etc/hostname")
        return entries

    monkeypatch.setattr(artifacts, "scan_directory", scan_then_swap)

    with (
        in_task(),
        pytest.raises(ArtifactError, match="`site/b.txt`, a symlink to `/etc/hostname`"),
    ):
        artifacts.upload("site")

    assert [upload.completed for upload in engine.engine.uploads] in ([], [False])


def test_engine_size_limit_is_an_artifact_error(
    engine: RunningEngine, connected, workspace: Path
) -> None:
    write(workspace / "huge.iso", b"0" * 100)
    engine.engine.upload_rejection = (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "artifact exceeds 10 bytes",
    )

    with in_task(), pytest.raises(ArtifactError) as raised:
        artifacts.upload("huge.iso")

    assert (
        str(raised.value)
        == "artifact `huge.iso` exceeds the engine's size limit: artifact exceeds 10 bytes"
    )


def test_taken_name_is_an_artifact_error(engine: RunningEngine, connected, workspace: Path) -> None:
    write(workspace / "report.txt")
    engine.engine.upload_rejection = (grpc.StatusCode.ALREADY_EXISTS, "report.txt exists")

    with (
        in_task(),
        pytest.raises(
            ArtifactError, match="already has an artifact named `report.txt`: pass another name="
        ),
    ):
        artifacts.upload("report.txt")


def test_upload_outside_task_is_rejected(workspace: Path) -> None:
    write(workspace / "report.txt")

    with pytest.raises(Exception, match="artifacts.upload was called outside a task"):
        artifacts.upload("report.txt")
