"""The bounds of logs and streams as settings: the worker's per-attempt bounds from the
environment, and the engine's per-attempt stream bound and retention."""

from __future__ import annotations

from typing import Any, cast

import pytest

from stoker import Context, Stoker
from stoker._proto import observe_pb2 as opb
from stoker.config import EngineSettings
from stoker.engine.observe.streams import Streams
from stoker.errors import ConfigError


def _app() -> Stoker:
    app = Stoker(address="127.0.0.1:1", token="t")

    @app.task()
    async def obs2_bounded(input: dict[str, Any], ctx: Context) -> int:
        return len(input)

    return app


def test_worker_bounds_come_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOKER_LOG_MAX_LINES", "7")
    monkeypatch.setenv("STOKER_LOG_MAX_BYTES", "5000")
    monkeypatch.setenv("STOKER_LOG_LINE_MAX_BYTES", "300")
    monkeypatch.setenv("STOKER_STREAM_MAX_BYTES", "9000")
    limits = _app().worker("w").log_limits
    assert (limits.max_lines, limits.max_bytes, limits.line_max_bytes) == (7, 5000, 300)
    assert limits.stream_max_bytes == 9000
    assert _app().worker("w", log_max_lines=3).log_limits.max_lines == 3
    monkeypatch.setenv("STOKER_LOG_MAX_LINES", "many")
    with pytest.raises(ConfigError, match="log_max_lines"):
        _app().worker("w")


def test_worker_bounds_default_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LOG_MAX_LINES", "LOG_MAX_BYTES", "LOG_LINE_MAX_BYTES", "STREAM_MAX_BYTES"):
        monkeypatch.delenv(f"STOKER_{var}", raising=False)
    limits = _app().worker("w").log_limits
    assert (limits.max_lines, limits.max_bytes, limits.line_max_bytes) == (1000, 2**20, 16384)
    assert limits.stream_max_bytes == 64 * 2**20


def test_the_engine_stores_at_most_its_bound_of_an_attempts_stream() -> None:
    streams = Streams(cast(Any, None), attempt_max_bytes=10)
    chunk = [opb.StreamPut(task_id=1, attempt=0, seq=s, data=b"abcd") for s in (1, 2, 3)]
    streams.take(1, chunk)  # 4 + 4 fit, the third would make 12
    other = opb.StreamPut(task_id=1, attempt=1, seq=1, data=b"abcd")  # another attempt
    end = opb.StreamPut(task_id=1, attempt=0, seq=4, end=True)
    streams.take(1, [other, end])
    kept = [(c.attempt, c.seq, c.end) for _, c in streams._pending]
    assert kept == [(0, 1, False), (0, 2, False), (1, 1, False), (0, 4, True)]
    assert streams.dropped == 1
    assert list(streams._stored) == [(1, 1)]  # the ended attempt is forgotten


def test_engine_stream_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@localhost/db")
    s = EngineSettings.load(stream_retention_s=60, stream_attempt_max_bytes=1000)
    assert (s.stream_retention_s, s.stream_attempt_max_bytes) == (60, 1000)
    with pytest.raises(ConfigError, match="STOKER_STREAM_RETENTION_S"):
        EngineSettings.load(stream_retention_s=0)
