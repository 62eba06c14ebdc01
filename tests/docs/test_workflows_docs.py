"""Every example in docs/workflows.md runs, as written, against a real engine and workers.

As in tests/docs/test_readme.py: :mod:`tests.snippets` writes out each code block whose
first line is ``# file: NAME.py``, serves the modules that declare an app with worker
processes and runs every ``run_*.py`` as a user would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO
from tests.snippets import examples, run_examples

DOC = REPO / "docs" / "workflows.md"

pytestmark = pytest.mark.timeout(120)


def test_every_workflows_doc_example_runs(engine: Any, tenant: Any, tmp_path: Path) -> None:
    files = examples(DOC)
    assert {"checkout.py", "run_checkout.py", "run_fanout.py", "run_cancel_replay.py"} <= set(files)
    run_examples(files, engine, tenant, tmp_path, timeout=90)
