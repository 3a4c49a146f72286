"""The generated gRPC code, the runtime pins, and importing without gRPC."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SDK_ROOT

PROTO_DIR = SDK_ROOT / "danube" / "_proto"
GENERATED = ["job_pb2.py", "job_pb2.pyi", "job_pb2_grpc.py"]


def pins() -> dict[str, str]:
    lines = (SDK_ROOT / "danube" / "_requirements.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): version.strip() for name, version in pairs}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpcio-tools is not installed (pip install -r requirements-test.txt)",
)
def test_committed_proto_code_matches_generator(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SDK_ROOT / "scripts" / "generate_proto.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (PROTO_DIR / name).read_bytes(), (
            f"danube/_proto/{name} is stale: run sdk/python/scripts/generate_proto.sh"
        )


def test_grpcio_pin_satisfies_generated_code() -> None:
    source = (PROTO_DIR / "job_pb2_grpc.py").read_text()
    generated = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", source)
    assert generated is not None

    assert version_tuple(pins()["grpcio"]) >= version_tuple(generated.group(1))


def test_protobuf_pin_satisfies_generated_code() -> None:
    source = (PROTO_DIR / "job_pb2.py").read_text()
    check = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        source,
    )
    assert check is not None
    gencode = tuple(int(part) for part in check.groups())
    pinned = version_tuple(pins()["protobuf"])

    # protobuf accepts a runtime of the same major version, not older.
    assert pinned[0] == gencode[0]
    assert pinned >= gencode


def test_installed_runtime_matches_pins() -> None:
    from importlib.metadata import version

    for package, pinned in pins().items():
        assert version(package) == pinned, (
            f"{package} {version(package)} is installed, {pinned} is pinned"
        )


def test_sdk_imports_without_grpc_or_protobuf() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('grpc', 'google'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from danube import pipeline, task, step, ctx, secrets, artifacts, StepFailed\n"
        "import danube.errors, danube.context\n"
        "@pipeline\n"
        "def build(): pass\n"
        "print(build.plan().tasks[0].name, ctx.job_id)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", blocker],
        env={**os.environ, "PYTHONPATH": str(SDK_ROOT), "DANUBE_JOB_ID": "j1"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "main j1\n"


def test_package_ships_type_marker() -> None:
    assert (SDK_ROOT / "danube" / "py.typed").is_file()
