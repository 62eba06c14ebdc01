"""Replaying a run from a chosen step, and with a new input, over REST with a real engine
and worker (the operation the dashboard's run page uses, ``RunOps.replay_from``)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.apps import dashboard
from tests.apps.dashboard import Work
from tests.harness import EngineProcess, Tenant, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)


def _status(api: httpx.Client, run: str, kind: str = "runs") -> str:
    return str(api.get(f"/{kind}/{run}").json()["status"])


def test_a_run_replays_from_a_step_and_with_a_new_input(
    engine: EngineProcess, tenant: Tenant, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory("tests.apps.dashboard:app")
    app = dashboard.declare(tenant.client())
    api = httpx.Client(
        base_url=f"{engine.http_url}/api/v1",
        headers={"authorization": f"Bearer {tenant.token}"},
        timeout=15,
    )
    try:
        ok = app.workflows["dash_diamond"].run_no_wait(Work())
        ok.result(timeout=30)
        run = str(ok.run_id)

        def attempts() -> dict[str, int]:
            steps = api.get(f"/workflow-runs/{run}").json()["steps"]
            return {s["step"]: max(a["number"] for a in s["attempts"]) for s in steps}

        before = attempts()
        # A completed workflow run, from step b: b and d run again, a and c do not.
        answer = api.post(f"/runs/{run}/replay", json={"from_step": "b"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "replayed"
        wait_until(
            lambda: _status(api, run, "workflow-runs") == "COMPLETED", 30, "the replay to end"
        )
        assert attempts() == {**before, "b": before["b"] + 1, "d": before["d"] + 1}
        unknown = api.post(f"/runs/{run}/replay", json={"from_step": "zz"})
        assert unknown.status_code == 422, unknown.text
        assert "has no step 'zz'" in unknown.text

        # A failed single-task run with a new input completes.
        bad = app.tasks["dash_work"].run_no_wait(Work(fail=True))
        wait_until(lambda: _status(api, str(bad.run_id)) == "FAILED", 30, "the run to fail")
        answer = api.post(f"/runs/{bad.run_id}/replay", json={"input": {"hold_s": 0.2}})
        assert answer.status_code == 200, answer.text
        wait_until(lambda: _status(api, str(bad.run_id)) == "COMPLETED", 30, "a completion")
        detail = api.get(f"/runs/{bad.run_id}").json()
        assert detail["input"] == {"hold_s": 0.2}
        assert detail["output"] == {"held": 0.2}
        # A run still going is refused, and stays as it is.
        slow = app.tasks["dash_work"].run_no_wait(Work(hold_s=30))
        refused = api.post(f"/runs/{slow.run_id}/replay", json={"input": {}})
        assert refused.status_code == 422 and "still" in refused.text
        api.post(f"/runs/{slow.run_id}/cancel")
    finally:
        api.close()
        app.close()
