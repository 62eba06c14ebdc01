"""The example test suite in examples/testing runs with the stoker.testing plugin: its
mock runs in-process, its end-to-end tests on the plugin's engine and worker."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import REPO

SUITE = REPO / "examples" / "testing"


def run_suite(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    base.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "stoker.testing", "-q", "-p", "no:cacheprovider"],
        cwd=SUITE, env={**base, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_the_example_suite_passes_against_a_given_engine(engine: Any, tenant: Any) -> None:
    done = run_suite(
        {"STOKER_TEST_ADDRESS": engine.grpc_address, "STOKER_TEST_TOKEN": tenant.token}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_example_suite_passes_on_its_own_embedded_engine() -> None:
    done = run_suite({})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
