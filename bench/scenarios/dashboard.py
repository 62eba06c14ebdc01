"""dashboard (Stoker only): the dashboard's runs page on a large history.

A tenant of its own gets ``dashboard_runs`` finished runs (quick: 100,000; full:
1,000,000) written straight into the history table, spread over the last seven days, with
every tenth failed and a ``customer`` key in their metadata among 50 values; a second
tenant gets as many, so that every read must stay within its tenant. A dashboard user
signs in over HTTP and each page below is fetched ``REQUESTS`` times in a row, timing the
whole HTTP answer (server-side rendering included) as a browser would wait for it:

* ``/ui/runs?window=7d``: the first page of every run, and ``/ui/runs/count?window=7d``,
  the count (capped at 10,000) the page loads after itself;
* the same filtered by status FAILED, by ``customer=c7``, and by a task name;
* the fourth page (keyset cursor) of the unfiltered list;
* ``/ui/runs/histogram?window=1d`` and the overview ``/ui/?window=1h``;
* as a baseline taken in the same run: the REST API's ``/api/v1/runs?limit=50`` (the same
  first page, as JSON, without the count).

The target: the runs page answers within 300 ms at 1,000,000 runs.
``--dashboard-runs N`` sets the size.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import psycopg

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import System

RUNS = {"quick": 100_000, "full": 1_000_000}
REQUESTS = 20
EMAIL = "bench@example.test"
PASSWORD = "bench password"
TARGET_MS = 300.0

_SEED = """
INSERT INTO {schema}.task_history (id, tenant_id, external_id, task_name, status, attempt,
    retry_count, priority, input, additional_metadata, output, error, max_retries,
    backoff_max_ms, execution_timeout_ms, schedule_timeout_ms, created_at, started_at,
    finished_at, skipped)
SELECT -(%(base)s + i), %(tenant)s, gen_random_uuid(), 'bench_task_' || (i %% 20),
       CASE WHEN i %% 10 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 0, 0, 1, '{{}}',
       jsonb_build_object('customer', 'c' || (i %% 50)), NULL,
       CASE WHEN i %% 10 = 0 THEN '{{"type": "ValueError", "message": "bench"}}'::jsonb END,
       0, 3600000, 0, 0,
       now() - make_interval(secs => i * %(spacing)s),
       now() - make_interval(secs => i * %(spacing)s) + interval '10 ms',
       now() - make_interval(secs => i * %(spacing)s) + interval '60 ms',
       false
FROM generate_series(1, %(n)s) AS i
"""


async def _token(system: System, tenant_id: int) -> str:
    from stoker.db import Executor, connect
    from stoker.engine.auth import create_token

    conn = await connect(system.db_url, "stoker")
    try:
        return await create_token(Executor(conn), tenant_id, name="bench-dashboard")
    finally:
        await conn.close()


async def _seed(system: System, n: int) -> int:
    """Writes the two tenants' histories and the dashboard user; the bench tenant's id."""
    from argon2 import PasswordHasher

    schema = "stoker"
    spacing = 7 * 86400 / n
    async with await psycopg.AsyncConnection.connect(system.db_url, autocommit=True) as conn:
        ids = []
        for name in ("bench-dashboard", "bench-dashboard-other"):
            cur = await conn.execute(
                f"INSERT INTO {schema}.tenant (name) VALUES (%s) RETURNING id", (name,)
            )
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))
        for k, tenant in enumerate(ids):
            await conn.execute(
                _SEED.format(schema=schema),
                {"base": k * n, "tenant": tenant, "spacing": spacing, "n": n},
            )
        await conn.execute(f"ANALYZE {schema}.task_history")
        await conn.execute(
            f"INSERT INTO {schema}.dashboard_user (tenant_id, email, role, password_hash)"
            " VALUES (%s, %s, 'viewer', %s)",
            (ids[0], EMAIL, PasswordHasher().hash(PASSWORD)),
        )
    return ids[0]


async def _time(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    ms: list[float] = []
    body = ""
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        r = await client.get(url)
        ms.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        body = r.text
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "_body": body}


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.overrides.get("dashboard_runs", RUNS.get(ctx.profile.name, RUNS["quick"])))
    t0 = time.perf_counter()
    tenant_id = await _seed(system, n)
    token = await _token(system, tenant_id)
    seeded_s = time.perf_counter() - t0
    base = f"http://127.0.0.1:{system.http_port}"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/ui/login", data={"email": EMAIL, "password": PASSWORD, "next": "/ui/"}
        )
        if r.status_code != 303:
            raise RuntimeError(f"cannot sign in to the dashboard: {r.status_code}")
        pages: dict[str, str] = {
            "runs": "/ui/runs?window=7d",
            "failed": "/ui/runs?window=7d&status=FAILED",
            "metadata": "/ui/runs?window=7d&meta=customer%3Dc7",
            "task": "/ui/runs?window=7d&name=bench_task_3",
        }
        timings = {name: await _time(client, url) for name, url in pages.items()}
        timings["count"] = await _time(client, "/ui/runs/count?window=7d")
        timings["meta_count"] = await _time(client, "/ui/runs/count?window=7d&meta=customer%3Dc7")
        url = pages["runs"]
        for _ in range(3):
            found = re.search(r'<a href="([^"]+)" data-testid="older">', timings["runs"]["_body"])
            if found is None:
                break
            url = found.group(1).replace("&amp;", "&")
            timings["runs"]["_body"] = (await client.get(url)).text
        timings["page4"] = await _time(client, url)
        timings["histogram"] = await _time(client, "/ui/runs/histogram?window=1d")
        timings["overview"] = await _time(client, "/ui/?window=1h")
        client.headers["authorization"] = f"Bearer {token}"
        timings["rest"] = await _time(client, "/api/v1/runs?limit=50")
    count = re.search(r'data-testid="run-count">([^<]+)<', timings["count"]["_body"] or "")
    await system.reset()
    return {
        "config": system.describe(),
        "runs": n,
        "seed_s": seeded_s,
        "shown_count": count.group(1) if count else None,
        "pages": {k: {"p50_ms": v["p50_ms"], "p95_ms": v["p95_ms"]} for k, v in timings.items()},
        "target_ms": TARGET_MS,
        "runs_page_within_target": timings["runs"]["p95_ms"] <= TARGET_MS,
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    names = ("runs", "failed", "metadata", "task", "page4", "count", "meta_count",
             "histogram", "overview", "rest")  # fmt: skip
    columns = ["system", "runs in history", *[f"{n} p50 / p95 ms" for n in names]]
    rows: list[list[Any]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        p = r["pages"]
        rows.append(
            [name, f"{r['runs']:,}"]
            + [f"{fmt(p[k]['p50_ms'])} / {fmt(p[k]['p95_ms'])}" for k in names]
        )
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"dashboard ({ctx.label}): page answer times", columns, rows))
    write_json(ctx, "dashboard", results)


SCENARIO = register(
    Scenario(
        name="dashboard",
        description="the dashboard's runs page on a large history (target: 300 ms at 1M runs)",
        run=run,
        report=report,
        stoker_only=True,
        order=95,
    )
)
