"""Worker-side timing records, shared by every system's no-op task.

A task body calls :func:`record` with its sequence number and the wall-clock nanoseconds at
which it started and finished. Rows are kept in memory and a daemon thread appends them to
``<BENCH_RECORDER_DIR>/rec-<pid>.csv`` every few tens of milliseconds, then rewrites
``cnt-<pid>`` with the number of rows written so far. The harness learns progress by summing
the count files (a handful of tiny reads), so detecting completion never polls the queue's
own tables, and the task body pays one locked ``list.append``.

Only the standard library is used: this module is imported by every worker process.
Timestamps are ``time.time_ns()``, the wall clock shared by all processes on the machine.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

ENV_DIR = "BENCH_RECORDER_DIR"
FLUSH_INTERVAL_S = 0.05

_lock = threading.Lock()
_rows: list[tuple[int, int, int]] = []
_state: dict[str, object] = {}


def _directory() -> Path | None:
    raw = os.environ.get(ENV_DIR)
    return Path(raw) if raw else None


def _flush() -> None:
    """Appends buffered rows to this process's CSV and publishes the running count."""
    directory = _directory()
    if directory is None:
        return
    with _lock:
        rows = _rows[:]
        _rows.clear()
    pid = os.getpid()
    if rows:
        with open(directory / f"rec-{pid}.csv", "a", encoding="ascii") as out:
            out.write("".join(f"{s},{a},{b}\n" for s, a, b in rows))
        _state["written"] = int(_state.get("written", 0)) + len(rows)  # type: ignore[call-overload]
        tmp = directory / f".cnt-{pid}.tmp"
        tmp.write_text(str(_state["written"]), encoding="ascii")
        tmp.replace(directory / f"cnt-{pid}")


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        try:
            _flush()
        except OSError:
            # The harness may have removed the directory after the run; nothing to keep.
            pass


def _ensure_started() -> None:
    # Prefork pools (Celery) fork after import: each process starts its own flusher.
    pid = os.getpid()
    if _state.get("pid") == pid:
        return
    with _lock:
        if _state.get("pid") == pid:
            return
        _rows.clear()
        _state.clear()
        _state["pid"] = pid
        threading.Thread(target=_flusher, name="bench-recorder", daemon=True).start()
        atexit.register(_flush)


def record(seq: int, start_ns: int, end_ns: int) -> None:
    """Records one finished task (called from inside the task body)."""
    if _state.get("pid") != os.getpid():
        _ensure_started()
    with _lock:
        _rows.append((seq, start_ns, end_ns))


def noop(seq: int) -> None:
    """The benchmark's task body: does nothing but note when it ran."""
    start = time.time_ns()
    record(seq, start, time.time_ns())
