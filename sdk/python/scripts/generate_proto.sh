#!/usr/bin/env bash
# Regenerate the gRPC code in danube/_proto from proto/danube/v1/job.proto.
#
# Usage: scripts/generate_proto.sh [OUT_DIR]
#
# OUT_DIR defaults to danube/_proto. The interpreter ($PYTHON, default
# python3) must have grpcio-tools at exactly the version below, because the
# generated files check the grpcio and protobuf versions they run with and
# danube/_requirements.txt pins those to match.
set -euo pipefail

readonly GRPCIO_TOOLS_VERSION="1.85.1"

sdk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto_root="$(cd "$sdk_dir/../../proto" && pwd)"
out_dir="${1:-$sdk_dir/danube/_proto}"
python="${PYTHON:-python3}"

installed="$("$python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$installed" != "$GRPCIO_TOOLS_VERSION" ]]; then
  echo "error: $python has grpcio-tools ${installed:-(not installed)}, expected $GRPCIO_TOOLS_VERSION:" \
    "run \`$python -m pip install grpcio-tools==$GRPCIO_TOOLS_VERSION\`" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m grpc_tools.protoc \
  --proto_path="$proto_root" \
  --python_out="$work" \
  --pyi_out="$work" \
  --grpc_python_out="$work" \
  "$proto_root/danube/v1/job.proto"

# protoc writes `from danube.v1 import job_pb2`, the proto package's path.
# The files ship as the package danube._proto, so the import becomes relative.
generated="$work/danube/v1"
sed -e 's/^from danube\.v1 import job_pb2 as /from . import job_pb2 as /' \
  "$generated/job_pb2_grpc.py" > "$work/job_pb2_grpc.py"
if ! grep -q '^from \. import job_pb2 as ' "$work/job_pb2_grpc.py"; then
  echo "error: the import in job_pb2_grpc.py was not rewritten: check the sed pattern against protoc's output" >&2
  exit 1
fi

mkdir -p "$out_dir"
cp "$generated/job_pb2.py" "$generated/job_pb2.pyi" "$work/job_pb2_grpc.py" "$out_dir/"
