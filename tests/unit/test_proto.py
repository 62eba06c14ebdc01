"""The generated gRPC code is what scripts/gen_proto.sh makes from proto/ (never hand-edited)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    # Run the script itself on a copy of proto/, so the test also covers what it lists.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "src").mkdir()
    shutil.copy(REPO / "scripts" / "gen_proto.sh", tmp_path / "scripts")
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    # `python` and the mypy protoc plugins are the ones beside this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gen_proto.sh")],
        env={**os.environ, "PATH": path}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out, ours = tmp_path / "src" / "stoker" / "_proto", REPO / "src" / "stoker" / "_proto"
    generated = {p.name for p in out.glob("*_pb2*.py*")}
    committed = {p.name for p in ours.glob("*_pb2*.py*")}
    assert generated, "gen_proto.sh generated nothing"
    assert committed == generated, "stale or missing generated files; run scripts/gen_proto.sh"
    for name in sorted(generated):
        assert (ours / name).read_text() == (out / name).read_text(), (
            f"{name} differs from what scripts/gen_proto.sh generates; run it"
        )
