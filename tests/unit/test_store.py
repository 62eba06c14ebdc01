"""The typed statement layer agrees with the SQL: every block has exactly one statement
object named like it, whose params fields are exactly the block's placeholders."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from importlib import resources

import stoker.db.store as store
from stoker.db.queries import parse_blocks, queries
from stoker.db.store import Statement, params_type

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_COMMENT = re.compile(r"--[^\n]*")


def _statements() -> dict[str, tuple[str, Statement[object]]]:
    found: dict[str, tuple[str, Statement[object]]] = {}
    for info in pkgutil.iter_modules(store.__path__):
        module = importlib.import_module(f"stoker.db.store.{info.name}")
        for attr, value in vars(module).items():
            if isinstance(value, Statement):
                assert attr == value.name, f"{module.__name__}.{attr} binds block {value.name!r}"
                assert value.name not in found, f"block {value.name!r} bound twice"
                found[value.name] = (info.name, value)
    return found


def test_every_block_has_one_statement_in_the_module_of_its_file() -> None:
    statements = _statements()
    assert set(statements) == set(queries), (
        f"blocks without a statement: {sorted(set(queries) - set(statements))}"
    )
    folder = resources.files("stoker.db") / "sql"
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            for name in parse_blocks(entry.read_text(encoding="utf-8")):
                module = statements[name][0]
                where = f"{name} is in {entry.name}, bound in {module}"
                assert f"{module}.sql" == entry.name, where


def test_params_fields_are_the_placeholders() -> None:
    for name, (_, statement) in _statements().items():
        sql = _COMMENT.sub("", queries[name])
        placeholders = set(_PLACEHOLDER.findall(sql))
        fields = {f.name for f in dataclasses.fields(params_type(statement))}
        assert fields == placeholders, (
            f"{name}: params {sorted(fields)} vs placeholders {sorted(placeholders)}"
        )
