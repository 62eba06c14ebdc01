"""Task logs, live streams and run events end to end: through the SDK, REST (JSON and
Server-Sent Events) and the CLI, with the per-attempt bounds, tenant isolation and unknown
runs. One tenant and one worker serve the module; the bounds get a worker of their own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stoker import InvalidRequestError, LogLine, NotFoundError, RunEvent, Stoker
from tests.apps import observe as tasks
from tests.conftest import make_tenant
from tests.harness import EngineProcess, Tenant, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tenant_m(engine: EngineProcess) -> Tenant:
    return make_tenant(engine)


@pytest.fixture(scope="module")
def worker_m(
    engine: EngineProcess, tenant_m: Tenant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(
        "tests.apps.observe:app", tenant_m, engine.db_url, tmp_path_factory.mktemp("w"), "obs",
        slots=20,
    ).start()  # fmt: skip
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def app(engine: EngineProcess, tenant_m: Tenant, worker_m: WorkerProcess) -> Stoker:
    return tasks.declare(
        Stoker(address=engine.grpc_address, token=tenant_m.token, connect_timeout=5)
    )


def _http(engine: EngineProcess, tenant: Tenant) -> httpx.Client:
    return httpx.Client(
        base_url=engine.http_url,
        headers={"authorization": f"Bearer {tenant.token}"},
        timeout=30,
    )


def _logs_of(app: Stoker, run_id: str, at_least: int) -> list[LogLine]:
    """The run's lines once ``at_least`` of them are stored (lines trail the result)."""
    found: list[LogLine] = []

    def enough() -> bool:
        found[:] = app.runs.logs(run_id)
        return len(found) >= at_least

    wait_until(enough, 20, f"{at_least} log lines of run {run_id}")
    return found


def _sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a Server-Sent Events response, as they arrive."""
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])
            event = "message"


# -- logs ----------------------------------------------------------------------------------


def test_logs_of_async_and_sync_tasks_and_of_a_thread_a_task_starts(app: Stoker) -> None:
    a = app.tasks["log_async"].run_no_wait({"n": 3, "tag": "A"})
    s = app.tasks["log_sync"].run_no_wait({"tag": "S"})
    assert a.result(timeout=30) == 3 and s.result(timeout=30) == 1

    lines = _logs_of(app, a.run_id, 6)
    assert [(x.level, x.logger, x.message) for x in lines] == [
        ("INFO", "", "A ctx line 0"), ("WARNING", "app.async", "A logging line 0"),
        ("INFO", "", "A ctx line 1"), ("WARNING", "app.async", "A logging line 1"),
        ("INFO", "", "A ctx line 2"), ("WARNING", "app.async", "A logging line 2"),
    ]  # fmt: skip
    assert {(x.run_id, x.task_run_id, x.task_name, x.attempt) for x in lines} == {
        (a.run_id, a.run_id, "log_async", 0)
    }

    # A sync task's lines, and the line of the thread it started, are the run's alone.
    lines = _logs_of(app, s.run_id, 3)
    assert [(x.level, x.logger, x.message) for x in lines] == [
        ("ERROR", "", "S sync ctx line"),
        ("INFO", "app.sync", "S sync logging line"),
        ("INFO", "app.thread", "S from a thread"),
    ]
    assert asyncio.run(app.runs.aio_logs(s.run_id)) == lines


def test_logs_are_bounded_per_attempt_and_long_lines_truncated(
    engine: EngineProcess, tmp_path: Any
) -> None:
    tenant = make_tenant(engine)
    proc = WorkerProcess(
        "tests.apps.observe:app", tenant, engine.db_url, tmp_path, "bounded",
        extra_args=["--log-max-lines", "5", "--log-line-max-bytes", "100"],
    ).start()  # fmt: skip
    try:
        app = tasks.declare(
            Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5)
        )
        chatty = app.tasks["log_async"].run_no_wait({"n": 10, "tag": "B"})
        long = app.tasks["log_long"].run_no_wait({"n": 500})
        chatty.result(timeout=30)
        long.result(timeout=30)
        lines = _logs_of(app, chatty.run_id, 6)
        assert len(lines) == 6
        assert [x.message for x in lines[:5]] == [
            "B ctx line 0", "B logging line 0", "B ctx line 1", "B logging line 1",
            "B ctx line 2",
        ]  # fmt: skip
        marker = lines[5]
        assert marker.level == "WARNING" and marker.logger == "stoker"
        assert "15 more log line(s)" in marker.message and "bound of 5 lines" in marker.message

        (line,) = _logs_of(app, long.run_id, 1)
        assert line.message.startswith("x" * 100 + "... [line truncated: 400 more bytes")
        assert "limit of 100 bytes a line" in line.message
    finally:
        proc.kill()


def test_rest_logs_per_run_per_task_and_search_with_tenant_isolation(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant
) -> None:
    tag = uuid.uuid4().hex[:8]
    refs = [app.tasks["log_async"].run_no_wait({"n": 2, "tag": tag}) for _ in range(3)]
    for r in refs:
        r.result(timeout=30)
    for r in refs:
        _logs_of(app, r.run_id, 4)
    with _http(engine, tenant_m) as http:
        body = http.get(f"/api/v1/runs/{refs[0].run_id}/logs").json()
        assert [x["message"] for x in body["items"]] == [
            f"{tag} ctx line 0", f"{tag} logging line 0", f"{tag} ctx line 1",
            f"{tag} logging line 1",
        ]  # fmt: skip
        assert body["finished"] is True and body["next_cursor"]
        # Following: nothing after the last line.
        more = http.get(
            f"/api/v1/runs/{refs[0].run_id}/logs", params={"cursor": body["next_cursor"]}
        ).json()
        assert more["items"] == []

        # Search: text and level, newest first, two lines a page.
        seen: list[dict[str, Any]] = []
        params: dict[str, Any] = {"text": f"{tag} logging", "level": "warning", "limit": 2}
        while True:
            page = http.get("/api/v1/logs", params=params).json()
            seen += page["items"]
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
        assert len(seen) == 6 and all(x["level"] == "WARNING" for x in seen)
        assert [x["at"] for x in seen] == sorted((x["at"] for x in seen), reverse=True)
        assert {x["run_id"] for x in seen} == {r.run_id for r in refs}
        by_task = http.get(
            "/api/v1/tasks/log_async/logs", params={"text": tag, "level": "ERROR"}
        ).json()
        assert by_task["items"] == []
        by_task = http.get("/api/v1/tasks/log_async/logs", params={"text": tag}).json()
        assert len(by_task["items"]) == 12
        assert http.get("/api/v1/tasks/log_sync/logs", params={"text": tag}).json()["items"] == []
        # The search's wildcards are literal.
        assert http.get("/api/v1/logs", params={"text": f"{tag}%line"}).json()["items"] == []

        # Bad input.
        assert http.get("/api/v1/logs", params={"level": "LOUD"}).status_code == 422
        assert http.get("/api/v1/logs", params={"cursor": "nonsense"}).status_code == 422
        assert http.get(f"/api/v1/runs/{uuid.uuid4()}/logs").status_code == 404

    # Another tenant sees none of it.
    other = make_tenant(engine)
    with _http(engine, other) as http:
        assert http.get(f"/api/v1/runs/{refs[0].run_id}/logs").status_code == 404
        assert http.get("/api/v1/logs", params={"text": tag}).json()["items"] == []
        assert http.get(f"/api/v1/runs/{refs[0].run_id}/events").status_code == 404
        assert http.get(f"/api/v1/runs/{refs[0].run_id}/stream").status_code == 404
    stranger = Stoker(address=engine.grpc_address, token=other.token, connect_timeout=5)
    with pytest.raises(NotFoundError):
        stranger.runs.logs(refs[0].run_id)


def test_cli_prints_a_runs_logs_and_follows_until_it_ends(app: Stoker, tenant_m: Tenant) -> None:
    ref = app.tasks["stream_chunks"].run_no_wait({"n": 1})
    ref.result(timeout=30)
    done = app.tasks["log_async"].run_no_wait({"n": 2, "tag": "cli"})
    done.result(timeout=30)
    _logs_of(app, done.run_id, 4)
    env = {**tenant_m.env}
    cmd = [sys.executable, "-m", "stoker", "logs"]
    out = subprocess.run([*cmd, done.run_id], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cli ctx line 0" in out.stdout and "cli logging line 1" in out.stdout
    assert out.stdout.index("cli ctx line 0") < out.stdout.index("cli logging line 1")

    # --follow prints lines as they come and exits once the run ended.
    slow = app.tasks["stream_chunks"].run_no_wait({"n": 15, "delay": 0.1})
    follow = subprocess.run(
        [*cmd, slow.run_id, "--follow", "--json"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert follow.returncode == 0, follow.stderr
    assert slow.result(timeout=1) == 15  # it ended before the follower did

    missing = subprocess.run(
        [*cmd, str(uuid.uuid4())], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no run with id" in missing.stderr


# -- streams -------------------------------------------------------------------------------


def test_a_stream_read_live_and_by_a_late_subscriber(app: Stoker) -> None:
    async def live() -> tuple[list[str | bytes], float]:
        ref = await app.tasks["stream_chunks"].aio_run_no_wait({"n": 20, "delay": 0.05})
        got: list[str | bytes] = []
        first_at = 0.0
        async for chunk in ref.stream():
            first_at = first_at or time.monotonic()
            got.append(chunk)
        assert await ref.aio_result(timeout=10) == 20
        return got, time.monotonic() - first_at

    got, spread = asyncio.run(live())
    assert got == [f"token-{i} " for i in range(20)]
    assert spread > 0.5  # chunks came while the task ran (19 more, 50 ms apart)

    # A late subscriber, after the run finished, reads the whole stream.
    ref = app.tasks["stream_sync"].run_no_wait({"n": 5})
    ref.result(timeout=30)

    async def late() -> list[str | bytes]:
        return [c async for c in ref.stream()]

    assert asyncio.run(late()) == ["s0", "s1", "s2", "s3", "s4"]

    binary = app.tasks["stream_chunks"].run_no_wait({"n": 3, "binary": True})
    binary.result(timeout=30)

    async def raw() -> list[str | bytes]:
        return [c async for c in app.runs.stream(binary.run_id)]

    assert asyncio.run(raw()) == [b"\x00\x00\x00", b"\x01\x01\x01", b"\x02\x02\x02"]


def test_stream_over_sse_a_too_large_chunk_and_a_client_that_leaves(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant
) -> None:
    ref = app.tasks["stream_chunks"].run_no_wait({"n": 6, "delay": 0.02})
    with _http(engine, tenant_m) as http:
        with http.stream("GET", f"/api/v1/runs/{ref.run_id}/stream") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            messages = list(_sse(resp))
        assert messages == [
            *[("chunk", {"seq": i + 1, "text": f"token-{i} "}) for i in range(6)],
            ("end", {}),
        ]

        # A chunk over the payload limit is refused in the task, naming the limit.
        assert app.tasks["stream_too_big"].run({"n": 4 * 1024 * 1024 + 1}) == (
            "PayloadTooLargeError: the stream chunk is 4194305 bytes, over the payload "
            "limit of 4194304 bytes"
        )

        # A subscriber that disconnects is let go of.
        slow = app.tasks["stream_chunks"].run_no_wait({"n": 200, "delay": 0.05})
        with http.stream("GET", f"/api/v1/runs/{slow.run_id}/stream") as resp:
            messages_in = _sse(resp)  # kept: dropping it would close the response
            first = next(messages_in)
            assert first == ("chunk", {"seq": 1, "text": "token-0 "})
            assert _open(http, "stream") >= 1
        wait_until(lambda: _open(http, "stream") == 0, 10, "the stream subscription to end")

        bad = http.get(f"/api/v1/runs/{ref.run_id}/stream", params={"attempt": 9})
        assert bad.status_code == 422 and "no attempt 9" in bad.json()["error"]["message"]
        assert http.get(f"/api/v1/runs/{uuid.uuid4()}/stream").status_code == 404
    with pytest.raises(NotFoundError):
        asyncio.run(_drain(app.runs.stream(str(uuid.uuid4()))))
    with pytest.raises(InvalidRequestError):
        asyncio.run(_drain(app.runs.stream("not-a-uuid")))


def _open(http: httpx.Client, kind: str) -> float:
    text = http.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(f'stoker_open_subscriptions{{kind="{kind}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no stoker_open_subscriptions for {kind}")


async def _drain(it: Any) -> list[Any]:
    return [x async for x in it]


# -- run events ----------------------------------------------------------------------------


def test_run_events_in_order_across_a_retry(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant
) -> None:
    async def watch() -> list[RunEvent]:
        ref = await app.tasks["fail_then_pass"].aio_run_no_wait({"times": 1})
        return [e async for e in ref.events()]

    events = asyncio.run(watch())
    assert [(e.kind, e.attempt) for e in events] == [
        ("queued", 0), ("assigned", 0), ("started", 0), ("retrying", 0),
        ("queued", 1), ("assigned", 1), ("started", 1), ("finished", 1),
    ]  # fmt: skip
    assert events[-1].status == "COMPLETED"
    assert events[3].error == "RuntimeError: failing attempt 0"
    assert events[1].worker_name == "obs" and events[1].worker_id
    assert [e.at for e in events] == sorted(e.at for e in events)

    # The same over SSE, for a run that failed for good.
    ref = app.tasks["fail_then_pass"].run_no_wait({"times": 5})
    with _http(engine, tenant_m) as http:
        with http.stream("GET", f"/api/v1/runs/{ref.run_id}/events") as resp:
            messages = list(_sse(resp))
        assert messages[-1] == ("end", {})
        named = [(n, d.get("attempt")) for n, d in messages if n != "end"]
        assert named == [
            ("queued", 0), ("assigned", 0), ("started", 0), ("retrying", 0),
            ("queued", 1), ("assigned", 1), ("started", 1), ("retrying", 1),
            ("queued", 2), ("assigned", 2), ("started", 2), ("finished", 2),
        ]  # fmt: skip
        final = messages[-2][1]
        assert final["status"] == "FAILED" and final["error"] == "RuntimeError: failing attempt 2"
        assert http.get(f"/api/v1/runs/{uuid.uuid4()}/events").status_code == 404
    with pytest.raises(NotFoundError):
        asyncio.run(_drain(app.runs.events(str(uuid.uuid4()))))


def test_run_events_of_every_run_matching_a_filter(app: Stoker) -> None:
    batch = uuid.uuid4().hex

    async def watch() -> list[RunEvent]:
        seen: list[RunEvent] = []
        stream = app.runs.events(task_name="log_async", additional_metadata={"batch": batch})
        started = time.monotonic()
        task = app.tasks["log_async"]

        async def trigger() -> None:
            await asyncio.sleep(0.3)  # the watch is open by then
            await task.aio_run_no_wait({"n": 1}, additional_metadata={"batch": batch})
            await task.aio_run_no_wait({"n": 1}, additional_metadata={"batch": "other"})
            await task.aio_run_no_wait({"n": 1}, additional_metadata={"batch": batch})

        trig = asyncio.create_task(trigger())
        async for event in stream:
            seen.append(event)
            if sum(e.kind == "finished" for e in seen) == 2 or time.monotonic() - started > 30:
                break
        await trig
        return seen

    events = asyncio.run(watch())
    runs: dict[str, list[str]] = {}
    for e in events:
        runs.setdefault(e.run_id, []).append(e.kind)
    assert len(runs) == 2
    for kinds in runs.values():
        assert kinds == ["queued", "assigned", "started", "finished"]


def test_a_stream_read_through_another_replica(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant, engine_factory: Any
) -> None:
    """The worker sends its chunks to the session engine; a reader on a second replica of
    the same database gets them live (stoker_stream) and in order."""
    replica = engine_factory(engine.db_url)
    there = tasks.declare(
        Stoker(address=replica.grpc_address, token=tenant_m.token, connect_timeout=5)
    )

    async def read() -> list[str | bytes]:
        ref = await app.tasks["stream_chunks"].aio_run_no_wait({"n": 10, "delay": 0.05})
        return [c async for c in there.runs.stream(ref.run_id)]

    assert asyncio.run(read()) == [f"token-{i} " for i in range(10)]


# -- resuming SSE with Last-Event-ID -------------------------------------------------------


def _sse_with_ids(response: httpx.Response) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of a Server-Sent Events response, as they arrive."""
    ident, event = "", "message"
    for line in response.iter_lines():
        if line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield ident, event, json.loads(line[6:])
            ident, event = "", "message"


def _read_some(http: httpx.Client, path: str, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The first ``n`` messages of an SSE endpoint; then the client disconnects."""
    got: list[tuple[str, str, dict[str, Any]]] = []
    with http.stream("GET", path) as resp:
        for message in _sse_with_ids(resp):
            got.append(message)
            if len(got) == n:
                break
    return got


def _resume(http: httpx.Client, path: str, last_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    with http.stream("GET", path, headers={"last-event-id": last_id}) as resp:
        assert resp.status_code == 200, resp.read()
        return list(_sse_with_ids(resp))


def test_a_stream_client_that_reconnects_gets_what_it_missed_once(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant
) -> None:
    ref = app.tasks["stream_chunks"].run_no_wait({"n": 12, "delay": 0.05})
    path = f"/api/v1/runs/{ref.run_id}/stream"
    with _http(engine, tenant_m) as http:
        first = _read_some(http, path, 3)  # live, while the task still streams
        assert [(i, d["text"]) for i, _, d in first] == [
            ("0.1", "token-0 "), ("0.2", "token-1 "), ("0.3", "token-2 "),
        ]  # fmt: skip
        rest = _resume(http, path, first[-1][0])
        assert [d.get("text") for _, e, d in rest if e == "chunk"] == [
            f"token-{i} " for i in range(3, 12)
        ]
        assert [i for i, e, _ in rest if e == "chunk"] == [f"0.{s}" for s in range(4, 13)]
        assert rest[-1][1] == "end"
        # After the last chunk: only the end.
        assert _resume(http, path, rest[-2][0]) == [("", "end", {})]
        bad = http.get(path, headers={"last-event-id": "nonsense"})
        assert bad.status_code == 422 and "not a stream event id" in bad.text


def test_run_events_and_logs_clients_that_reconnect_get_what_they_missed_once(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant
) -> None:
    ref = app.tasks["fail_then_pass"].run_no_wait({"times": 1})
    path = f"/api/v1/runs/{ref.run_id}/events"
    with _http(engine, tenant_m) as http:
        first = _read_some(http, path, 2)
        rest = _resume(http, path, first[-1][0])
        assert rest[-1][1] == "end"
        kinds = [(e, d["attempt"]) for _, e, d in first + rest[:-1]]
        assert kinds == [
            ("queued", 0), ("assigned", 0), ("started", 0), ("retrying", 0),
            ("queued", 1), ("assigned", 1), ("started", 1), ("finished", 1),
        ]  # fmt: skip
        # Every id resumes right after its event, the run being over or not.
        everything = first + rest[:-1]
        for k in (0, 3, 6):
            again = _resume(http, path, everything[k][0])
            assert [(i, e) for i, e, _ in again[:-1]] == [(i, e) for i, e, _ in everything[k + 1 :]]
        bad = http.get(path, headers={"last-event-id": "x.y"})
        assert bad.status_code == 422 and "not a run-event id" in bad.text

        # Logs: 10 lines; a follower that leaves after 4 and comes back gets the other 6.
        tag = uuid.uuid4().hex[:8]
        logged = app.tasks["log_async"].run_no_wait({"n": 5, "tag": tag})
        logged.result(timeout=30)
        _logs_of(app, logged.run_id, 10)
        lpath = f"/api/v1/runs/{logged.run_id}/logs/follow"
        head = _read_some(http, lpath, 4)
        tail = _resume(http, lpath, head[-1][0])
        assert tail[-1][1] == "end"
        messages = [d["message"] for _, e, d in head + tail if e == "line"]
        expected = [f"{tag} ctx line {i}" for i in range(5)]
        expected += [f"{tag} logging line {i}" for i in range(5)]
        assert sorted(messages) == sorted(expected)
        assert len(messages) == 10
        assert http.get(f"/api/v1/runs/{uuid.uuid4()}/logs/follow").status_code == 404
        bad = http.get(lpath, headers={"last-event-id": "nonsense"})
        assert bad.status_code == 422


def test_the_engines_stream_bound_and_retention(
    engine_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """STOKER_STREAM_ATTEMPT_MAX_BYTES=20: of 8-byte chunks the engine stores two, and the
    stream still ends; STOKER_STREAM_RETENTION_S=3: a few seconds later nothing is left to read."""
    bounded = engine_factory(
        env={"STOKER_STREAM_ATTEMPT_MAX_BYTES": "20", "STOKER_STREAM_RETENTION_S": "3"}
    )
    tenant = make_tenant(bounded)
    worker = WorkerProcess(
        "tests.apps.observe:app", tenant, bounded.db_url, tmp_path_factory.mktemp("wb"), "obs-b",
        slots=4,
    ).start()  # fmt: skip
    app = tasks.declare(Stoker(address=bounded.grpc_address, token=tenant.token))
    try:

        async def read(run_id: str) -> list[str | bytes]:
            return [c async for c in app.runs.stream(run_id)]

        ref = app.tasks["stream_chunks"].run_no_wait({"n": 6, "delay": 0.01})
        assert ref.result(timeout=30) == 6
        assert asyncio.run(read(ref.run_id)) == ["token-0 ", "token-1 "]
        wait_until(lambda: asyncio.run(read(ref.run_id)) == [], 15, "the chunks to be pruned")
    finally:
        app.close()
        worker.kill()


def test_a_stream_and_a_watch_resume_on_the_next_engine_when_theirs_dies(
    app: Stoker, engine: EngineProcess, tenant_m: Tenant, engine_factory: Any
) -> None:
    """A client with two engine addresses reads through the first; killed mid-read, it
    resumes on the second after the last chunk (or event) it gave: nothing missed, nothing
    twice."""

    def through(replica: EngineProcess) -> Stoker:
        return tasks.declare(
            Stoker(
                address=f"{replica.grpc_address},{engine.grpc_address}",
                token=tenant_m.token,
                connect_timeout=5,
            )
        )

    async def read(there: Stoker, replica: EngineProcess, run_id: str) -> list[str | bytes]:
        got: list[str | bytes] = []
        async for chunk in there.runs.stream(run_id):
            got.append(chunk)
            if len(got) == 5:
                replica.kill()
        return got

    async def watch(there: Stoker, replica: EngineProcess, run_id: str) -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        async for event in there.runs.events(run_id):
            got.append((event.kind, event.attempt))
            if len(got) == 2:
                replica.kill()
        return got

    replica = engine_factory(engine.db_url)
    there = through(replica)
    try:
        ref = app.tasks["stream_chunks"].run_no_wait({"n": 30, "delay": 0.05})
        got = asyncio.run(read(there, replica, ref.run_id))
        assert got == [f"token-{i} " for i in range(30)]
    finally:
        there.close()

    replica = engine_factory(engine.db_url)
    there = through(replica)
    try:
        run = app.tasks["fail_then_pass"].run_no_wait({"times": 1})
        assert asyncio.run(watch(there, replica, run.run_id)) == [
            ("queued", 0), ("assigned", 0), ("started", 0), ("retrying", 0),
            ("queued", 1), ("assigned", 1), ("started", 1), ("finished", 1),
        ]  # fmt: skip
    finally:
        there.close()
