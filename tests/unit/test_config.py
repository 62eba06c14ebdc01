"""Settings, durations and the SQL registry: nonsense fails fast, with its name."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from stoker import Context, SleepCondition, Stoker
from stoker.config import ClientSettings, EngineSettings, parse_duration
from stoker.db.queries import QueryRegistry, parse_blocks, queries
from stoker.errors import ConfigError, DeclarationError
from tests.harness import REPO


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("250ms", 0.25), (3, 3), (1.5, 1.5)],
)
def test_durations(value: str | float, expected: float) -> None:
    assert parse_duration(value, "x") == timedelta(seconds=expected)


@pytest.mark.parametrize(
    "value", ["soon", "5 minutes", "-3s", "", True, 1e200, float("nan"), "9e15d"]
)
def test_bad_durations_name_the_option(value: object) -> None:
    # A DeclarationError, as the README promises for declarations; still a ConfigError.
    with pytest.raises(DeclarationError, match=r"^timeout: ") as raised:
        parse_duration(value, "timeout")  # type: ignore[arg-type]
    assert isinstance(raised.value, ConfigError)


def test_a_bad_duration_in_a_declaration_is_a_declaration_error() -> None:
    app = Stoker(address="127.0.0.1:1", token="x")
    with pytest.raises(DeclarationError, match=r"task 'late': execution_timeout: 'soon'"):

        @app.task(execution_timeout="soon")
        async def late(input: dict[str, int], ctx: Context) -> None:
            pass

    with pytest.raises(DeclarationError, match="SleepCondition: 'ten minutes'"):
        SleepCondition("ten minutes")


def test_engine_settings_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        EngineSettings.load()
    with pytest.raises(ConfigError, match="must be a postgresql:// URL"):
        EngineSettings.load(database_url="mysql://x")
    with pytest.raises(ConfigError, match="not a plain identifier"):
        EngineSettings.load(database_url="postgresql://x/y", schema_name="Drop Table")
    with pytest.raises(ConfigError, match="invalid engine settings"):
        EngineSettings.load(database_url="postgresql://x/y", no_such_setting=1)
    ok = EngineSettings.load(database_url="postgresql://x/y", grpc_port=9000)
    assert ok.grpc_port == 9000


def test_client_settings_need_an_address(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("STOKER_ADDRESS", raising=False)
    monkeypatch.setenv("STOKER_PROFILE", "/nonexistent/profile.json")
    with pytest.raises(ConfigError, match=r"no engine address.*stoker lite"):
        ClientSettings.load()
    assert ClientSettings.load(address="h:1", token="t").address == "h:1"


def test_client_settings_take_several_engine_addresses() -> None:
    several = ClientSettings.load(address="h1:7077, h2:7077", token="t")
    assert several.addresses == ["h1:7077", "h2:7077"]
    with pytest.raises(ConfigError, match=r"empty entry.*host1:7077,host2:7077"):
        ClientSettings.load(address="h1:7077,,h2:7077", token="t")


def test_every_sql_block_is_named_once_and_found() -> None:
    assert len(queries) > 30
    assert all(sql.strip() for sql in queries.values())
    with pytest.raises(KeyError, match="no SQL block named 'nope'"):
        queries["nope"]
    blocks = parse_blocks("-- name: a\nSELECT 1;\n\n-- name: b\n-- says why\nSELECT 2;\n")
    assert blocks == {"a": "SELECT 1;", "b": "-- says why\nSELECT 2;"}
    assert isinstance(QueryRegistry.load(), QueryRegistry)


def _readme_configuration() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Configuration")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_documents_every_setting_with_its_default() -> None:
    section = _readme_configuration()
    documented: dict[str, str] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")] if row.startswith("| `") else []
        if cells:
            names = re.findall(r"`([A-Z_]+)`", cells[0])
            defaults = [d.strip().strip("`") for d in cells[1].split(" / ")]
            if len(defaults) == 1:
                defaults *= len(names)
            documented.update(zip(names, defaults, strict=True))
    for name, field in EngineSettings.model_fields.items():
        var = str(field.validation_alias or f"STOKER_{name.upper()}")
        assert var in documented, f"{var} is missing from the README's configuration table"
        default, shown = field.default, documented[var].replace("—", "")
        if isinstance(default, bool):
            assert shown == str(default).lower(), var
        elif isinstance(default, int | float):
            assert float(shown) == default, f"{var}: README says {shown}, config.py {default}"
        else:
            assert shown == default, f"{var}: README says {shown!r}, config.py {default!r}"
    for name in ClientSettings.model_fields:
        assert f"`STOKER_{name.upper()}`" in section, f"STOKER_{name.upper()} is not documented"
