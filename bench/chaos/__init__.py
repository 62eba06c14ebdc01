"""Fault injection for Stoker: kill -9 of workers, engines and Postgres, partitions, SIGTERM.

Shared by the benchmark scenario ``chaos`` (``python -m bench --only chaos``) and the
test module ``tests/e2e/test_chaos.py``. See :mod:`bench.chaos.driver` and docs/reliability.md.
"""

from bench.chaos.driver import FAULTS, ChaosConfig, format_report, run_chaos, write_report

__all__ = ["FAULTS", "ChaosConfig", "format_report", "run_chaos", "write_report"]
