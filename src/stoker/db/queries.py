"""The registry of Stoker's SQL statements.

Every statement lives in a named block of a ``.sql`` file under ``stoker/db/sql`` (one file
per aggregate: ``tasks.sql``, ``queue.sql``, ``dags.sql``, ...)::

    -- name: claim_queue_items
    -- Locks the oldest ready items of each queue ...
    SELECT ...

Code never writes SQL inline and never names a block by its string: it calls the block's
statement object in the store module of the same name
(``queue_store.claim_queue_items(tx, ClaimQueueItems(...))``, see :mod:`stoker.db.store`),
which looks its text up here. Parameters use psycopg's named style (``%(name)s``), filled
from the statement's frozen params dataclass (see :mod:`stoker.db.executor`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources

_BLOCK = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class QueryRegistry(Mapping[str, str]):
    """Named SQL blocks, loaded once from the package's ``sql`` folder."""

    def __init__(self, blocks: dict[str, str]) -> None:
        self._blocks = blocks

    @classmethod
    def load(cls) -> QueryRegistry:
        blocks: dict[str, str] = {}
        folder = resources.files("stoker.db") / "sql"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            for name, sql in parse_blocks(entry.read_text(encoding="utf-8")).items():
                if name in blocks:
                    raise ValueError(f"SQL block {name!r} is defined twice ({entry.name})")
                blocks[name] = sql
        return cls(blocks)

    def __getitem__(self, name: str) -> str:
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no SQL block named {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)


def parse_blocks(text: str) -> dict[str, str]:
    """Splits a ``.sql`` file into its ``-- name: x`` blocks (comment lines are kept)."""
    matches = list(_BLOCK.finditer(text))
    blocks: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end].strip()
        blocks[m.group("name")] = body
    return blocks


queries = QueryRegistry.load()
