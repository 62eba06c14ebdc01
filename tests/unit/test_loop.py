"""The event loop a worker or engine process runs on (stoker._core.loop)."""

from __future__ import annotations

import pytest

from stoker._core.loop import run, uvloop_running


async def _which() -> bool:
    return uvloop_running()


def test_uvloop_runs_the_loop_unless_turned_off() -> None:
    pytest.importorskip("uvloop")
    assert run(_which(), uvloop=True) is True
    assert run(_which(), uvloop=False) is False


def test_the_setting_reads_stoker_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    from stoker.config import ClientSettings, EngineSettings

    monkeypatch.setenv("STOKER_UVLOOP", "0")
    assert ClientSettings().uvloop is False
    assert EngineSettings(database_url="postgresql://x").uvloop is False
    monkeypatch.delenv("STOKER_UVLOOP")
    assert ClientSettings().uvloop is True
