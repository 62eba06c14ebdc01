"""Stoker's benchmark suite: ``python -m bench`` (see docs/benchmarks.md).

Runs the same no-op workload through Stoker and its peers (pgqueuer, procrastinate,
Celery with Redis) on one Postgres server and reports throughput, latency and cost.
"""
