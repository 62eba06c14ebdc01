"""The generated gRPC code is what scripts/gen_proto.sh makes from proto/ (never hand-edited)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

# The mypy protoc plugins live beside the interpreter.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    protos = sorted((REPO / "proto").rglob("*.proto"))
    assert protos
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
            *[str(p) for p in protos],
        ],
        check=True, capture_output=True,
        env={**os.environ, "PATH": PATH},

    )  # fmt: skip
    generated = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*")}
    assert generated
    for rel in generated:
        committed = REPO / "src" / rel
        assert committed.exists(), f"{rel} is generated but not committed"
        assert committed.read_text() == (tmp_path / rel).read_text(), (
            f"{rel} differs from what scripts/gen_proto.sh generates; run it"
        )
    shutil.rmtree(tmp_path / "stoker", ignore_errors=True)
