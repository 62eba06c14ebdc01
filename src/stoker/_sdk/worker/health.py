"""A worker's health and metrics endpoint (``stoker worker --health-port``).

A small HTTP server on a thread of its own, so that it answers while the worker's event
loop is blocked — which is exactly what it reports:

* ``GET /healthz`` — liveness: 200 while the event loop keeps turning, 503 once it has not
  run for ``max_loop_block_s`` (a sync call inside an ``async def`` task, a CPU-bound
  step). Point a Kubernetes ``livenessProbe`` at it. (Heartbeats come from a thread of
  their own, so the engine keeps the worker alive while its loop is blocked; this endpoint
  is how the operator learns about it.)
* ``GET /readyz`` — 200 while the worker is connected to the engine, else 503.
* ``GET /metrics`` — the worker's own metrics in the Prometheus text format: attempts
  started and finished per task and outcome, slots, attempts running, sync tasks in
  threads, the event loop's current lag, and whether it is connected. Written by hand (no
  client library), since the SDK does not depend on ``prometheus-client``.

How the loop is watched: a task on the loop stamps the time every ``TICK_S``; a request
compares the stamp with the clock. A loop blocked for longer than the threshold has a stamp
older than that, whatever blocks it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("stoker.worker")

TICK_S = 0.05


@dataclass
class WorkerStats:
    """Counts the runtime keeps of the attempts it runs (read by the health endpoint)."""

    started: dict[str, int] = field(default_factory=dict)
    finished: dict[tuple[str, str], int] = field(default_factory=dict)

    def start(self, task_name: str) -> None:
        self.started[task_name] = self.started.get(task_name, 0) + 1

    def finish(self, task_name: str, outcome: str) -> None:
        key = (task_name, outcome)
        self.finished[key] = self.finished.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the worker is doing right now (read on the loop's thread-safe snapshot)."""

    slots: int
    running: int
    in_threads: int
    connected: bool


METRIC_NAMES = [
    "stoker_worker_attempts_started_total",
    "stoker_worker_attempts_finished_total",
    "stoker_worker_slots",
    "stoker_worker_attempts_running",
    "stoker_worker_sync_threads_busy",
    "stoker_worker_connected",
    "stoker_worker_event_loop_lag_seconds",
]
"""Every metric a worker's ``/metrics`` writes (the dashboard test checks names against it)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` for one worker."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        max_loop_block_s: float,
        worker: str,
        stats: WorkerStats,
        gauges: Callable[[], Gauges],
    ) -> None:
        self.max_loop_block_s = max_loop_block_s
        self._worker = worker
        self._stats = stats
        self._gauges = gauges
        self._tick = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one chosen for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Starts the loop ticker (on the running loop) and the HTTP thread."""
        self._tick = time.monotonic()
        self._ticker = asyncio.create_task(self._run_ticker(), name="stoker-health-ticker")
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stoker-health", daemon=True
        )
        self._thread.start()
        log.info("worker %s: health and metrics on port %d", self._worker, self.port)

    async def stop(self) -> None:
        """Stops both (safe to call twice)."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    async def _run_ticker(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    def loop_lag_s(self) -> float:
        """How long the event loop has gone without running the ticker."""
        return max(0.0, time.monotonic() - self._tick - TICK_S)

    def health(self) -> tuple[int, dict[str, Any]]:
        lag = self.loop_lag_s()
        blocked = lag > self.max_loop_block_s
        body = {
            "status": "blocked" if blocked else "ok",
            "worker": self._worker,
            "loop_lag_s": round(lag, 3),
            "max_loop_block_s": self.max_loop_block_s,
        }
        return (503 if blocked else 200), body

    def ready(self) -> tuple[int, dict[str, Any]]:
        connected = self._gauges().connected
        return (200 if connected else 503), {"connected": connected, "worker": self._worker}

    def metrics(self) -> str:
        g = self._gauges()
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

        family("stoker_worker_attempts_started_total", "counter", "Attempts this worker began.")
        for task, n in sorted(self._stats.started.items()):
            lines.append(f'stoker_worker_attempts_started_total{{task="{_escape(task)}"}} {n}\n')
        family(
            "stoker_worker_attempts_finished_total",
            "counter",
            "Attempts this worker reported, by outcome (completed, failed).",
        )
        for (task, outcome), n in sorted(self._stats.finished.items()):
            lines.append(
                f'stoker_worker_attempts_finished_total{{task="{_escape(task)}",'
                f'outcome="{outcome}"}} {n}\n'
            )
        for name, help_text, value in (
            ("stoker_worker_slots", "Slots of this worker.", g.slots),
            ("stoker_worker_attempts_running", "Attempts running now.", g.running),
            ("stoker_worker_sync_threads_busy", "Sync tasks running in threads.", g.in_threads),
            ("stoker_worker_connected", "1 while connected to the engine.", int(g.connected)),
            (
                "stoker_worker_event_loop_lag_seconds",
                "How long the event loop has not run (0 when it turns freely).",
                round(self.loop_lag_s(), 6),
            ),
        ):
            family(name, "gauge", help_text)
            lines.append(f"{name} {value}\n")
        return "".join(lines)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, server.metrics().encode(), "text/plain; version=0.0.4")
                elif path in ("/healthz", "/readyz"):
                    status, body = server.health() if path == "/healthz" else server.ready()
                    self._send(status, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the worker's log

        return Handler
