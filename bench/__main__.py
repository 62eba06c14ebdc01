"""``python -m bench``: run the benchmark suite against Stoker and its peers.

Each system gets its own fresh database on one Postgres server and runs every selected
scenario in turn; then each scenario prints one table across systems and writes its JSON
(and charts) to the results directory, and a summary compares Stoker with each peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

# This process starts engines, workers and Postgres (fork, then exec) while gRPC calls are
# in flight; gRPC's fork handlers have been seen to crash such a child before its exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from rich.console import Console

from bench.config import PROFILES, Context
from bench.pg import Server, find_server
from bench.report import fmt, machine, meta, table
from bench.scenarios import Result, Scenario
from bench.scenarios import registry as scenario_registry
from bench.systems import Env, System
from bench.systems import registry as system_registry

SIZE_FLAGS = {
    "drain_tasks": int,
    "steady_seconds": float,
    "cost_tasks": int,
    "backlog_base": int,
    "backlog_depth": int,
    "dag_runs": int,
    "dag_in_flight": int,
    "soak_seconds": float,
    "soak_rate": int,
    "idle_seconds": float,
    "chaos_rate": float,
    "chaos_phase_s": float,
    "latency_txs": int,
    "throughput_txs": int,
    "schedule_runs": int,
    "durable_sleepers": int,
    "durable_tasks": int,
    "event_pushes": int,
    "bulk_events": int,
    "dashboard_runs": int,
    "scrape_tasks": int,
    "results_runs": int,
    "push_runs": int,
    "push_burst": int,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    systems = list(system_registry())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks Stoker and its peers (pgqueuer, procrastinate, Celery) "
        "on the same Postgres with the same no-op workload.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--only", help="comma-separated scenarios (default: the profile's own set)")
    parser.add_argument(
        "--systems", default=",".join(systems), help=f"comma-separated, from {systems}"
    )
    parser.add_argument(
        "--database-url", help="a Postgres server URL (default: DATABASE_URL, local, embedded)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--allow-fast",
        action="store_true",
        help="run even with synchronous_commit=off or fsync=off (labelled 'fast')",
    )
    parser.add_argument("--worker-procs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--concurrency",
        action="append",
        default=[],
        metavar="SYSTEM=N",
        help="tasks in flight per worker process (pgqueuer: batch size; Celery: prefetch)",
    )
    for key, kind in SIZE_FLAGS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, help="override the profile")
    parser.add_argument("--keep-work", action="store_true", help="keep worker logs and records")
    args = parser.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(systems)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {systems}")
    return args


def print_server(console: Console, server: Server, label: str) -> None:
    s = server.settings
    console.print(f"[bold]Postgres[/bold] {s.get('server_version')} ({server.source})")
    console.print(
        "  "
        + ", ".join(
            f"{k}={s.get(k)}"
            for k in (
                "synchronous_commit",
                "fsync",
                "full_page_writes",
                "shared_buffers",
                "autovacuum",
            )
        )
    )
    if s.get("autovacuum") == "off":
        console.print(
            "  [yellow]autovacuum is off on this server (Postgres's default is on): "
            "tables keep their dead rows and planner statistics go stale during the run, "
            "for every system; Stoker vacuums and analyzes its own hot tables[/yellow]"
        )
    if server.durable:
        console.print(
            "  durable defaults are used: synchronous_commit=on, fsync=on "
            "(every commit waits for its WAL flush)"
        )
    else:
        console.print(f"  [yellow]NOT durable: profile labelled {label!r}[/yellow]")
    m = machine()
    console.print(f"[bold]Machine[/bold] {m['cpus']} CPUs, {m['memory_gb']} GB, {m['platform']}")


async def run_system(
    cls: type[System], scenarios: list[Scenario], ctx: Context
) -> dict[str, Result]:
    """Runs the scenarios for one system; a failure becomes that scenario's error."""
    system = cls(ctx.env)
    results: dict[str, Result] = {}
    try:
        await system.setup()
    except Exception as exc:
        ctx.console.print(f"[red]{cls.name}: setup failed[/red]\n{traceback.format_exc()}")
        return {s.name: {"error": f"setup failed: {exc}"} for s in scenarios}
    try:
        for scenario in scenarios:
            ctx.console.print(f"[cyan]{cls.name}[/cyan]: {scenario.name} …")
            try:
                results[scenario.name] = await scenario.run(system, ctx)
            except Exception as exc:
                ctx.console.print(f"[red]{cls.name} {scenario.name} failed[/red]")
                ctx.console.print(traceback.format_exc())
                results[scenario.name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                # Whatever the failed scenario left queued must not leak into the next one.
                await system.reset()
    finally:
        await system.teardown()
    return results


def summary(all_results: dict[str, dict[str, Result]], ctx: Context) -> dict[str, Any]:
    """Drain rate and start latency at 100/s per system, and Stoker's ratio to each."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in all_results.items():
        drain = results.get("drain", {})
        steady = results.get("steady", {})
        at100 = next((p for p in steady.get("phases", []) if p["rate"] == 100), None)
        rows[name] = {
            "drain_per_s": drain.get("drain_per_s"),
            "enqueue_per_s": drain.get("enqueue_per_s"),
            "start_p50_ms": at100["start_latency_ms"]["p50"] if at100 else None,
            "start_p99_ms": at100["start_latency_ms"]["p99"] if at100 else None,
        }
    ref = rows.get("stoker", {})
    for name, row in rows.items():
        if name == "stoker":
            continue
        row["stoker_drain_ratio"] = (
            ref["drain_per_s"] / row["drain_per_s"]
            if ref.get("drain_per_s") and row["drain_per_s"]
            else None
        )
        row["stoker_start_p50_ratio"] = (
            ref["start_p50_ms"] / row["start_p50_ms"]
            if ref.get("start_p50_ms") and row["start_p50_ms"]
            else None
        )
    columns = [
        "system",
        "drain tasks/s",
        "enqueue/s",
        "start p50 ms @100/s",
        "start p99 ms @100/s",
        "stoker drain ÷ this",
        "stoker start p50 ÷ this",
    ]
    ctx.console.print(
        table(
            f"summary ({ctx.label})",
            columns,
            [
                [
                    name,
                    fmt(r["drain_per_s"]),
                    fmt(r["enqueue_per_s"]),
                    fmt(r["start_p50_ms"], 2),
                    fmt(r["start_p99_ms"], 2),
                    fmt(r.get("stoker_drain_ratio"), 2),
                    fmt(r.get("stoker_start_p50_ratio"), 2),
                ]
                for name, r in rows.items()
            ],
        )
    )
    return rows


async def main_async(args: argparse.Namespace) -> int:
    console = Console(width=160)
    profile = PROFILES[args.profile]
    server = find_server(args.database_url)
    label = profile.name if server.durable else "fast"
    print_server(console, server, label)
    if not server.durable and not args.allow_fast:
        console.print(
            "[red]refusing to run: Postgres is not durable (synchronous_commit or fsync is "
            "off). Pass --allow-fast to run anyway; results are labelled 'fast'.[/red]"
        )
        server.close()
        return 2

    scenarios = scenario_registry()
    wanted = args.only.split(",") if args.only else list(profile.default_scenarios)
    unknown = [w for w in wanted if w not in scenarios]
    if unknown:
        console.print(f"[red]unknown scenarios {unknown}; known: {list(scenarios)}[/red]")
        return 2
    chosen = [s for s in scenarios.values() if s.name in wanted]

    classes = system_registry()
    selected: list[type[System]] = []
    skipped: dict[str, str] = {}
    for name in args.systems.split(","):
        reason = classes[name].unavailable()
        if reason:
            skipped[name] = reason
            console.print(f"[yellow]skipping {name}: {reason}[/yellow]")
        else:
            selected.append(classes[name])

    concurrency = {}
    for item in args.concurrency:
        key, _, value = item.partition("=")
        concurrency[key] = int(value)
    work_dir = Path(tempfile.mkdtemp(prefix="stoker-bench-"))
    overrides = {k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}
    ctx = Context(
        profile=profile,
        label=label,
        server=server,
        env=Env(server, work_dir, args.worker_procs, concurrency),
        out_dir=args.out,
        console=console,
        overrides=overrides,
    )
    console.print(
        f"profile [bold]{label}[/bold]; scenarios {[s.name for s in chosen]}; "
        f"systems {[c.name for c in selected]}; {args.worker_procs} worker processes each"
    )
    all_results: dict[str, dict[str, Result]] = {}
    try:
        for cls in selected:
            mine = [s for s in chosen if not s.stoker_only or cls.name == "stoker"]
            all_results[cls.name] = await run_system(cls, mine, ctx)
        for scenario in chosen:
            per_system = {
                name: res[scenario.name]
                for name, res in all_results.items()
                if scenario.name in res
            }
            if per_system:
                scenario.report(per_system, ctx)
        rows = summary(all_results, ctx)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(
            json.dumps({**meta(ctx), "skipped": skipped, "systems": rows}, indent=2) + "\n"
        )
        console.print(f"results in {args.out}/")
    finally:
        server.close()
        if args.keep_work:
            console.print(f"worker logs and records kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    failed = any("error" in r for res in all_results.values() for r in res.values())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
