#!/usr/bin/env bash
# Generates src/stoker/_proto from proto/ (the one source of the wire protocol).
# The proto tree mirrors the package layout, so the generated imports are right as made.
# tests/unit/test_proto.py checks that what is committed is what this makes.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto \
  --python_out=src --grpc_python_out=src --mypy_out=src --mypy_grpc_out=src \
  proto/stoker/_proto/*.proto
