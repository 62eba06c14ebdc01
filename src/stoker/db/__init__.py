"""Stoker's storage: connections, the SQL registry, the executor, the typed statement layer
(:mod:`stoker.db.store`, one module per aggregate beside its ``.sql`` file) and migrations."""

from stoker.db.connect import connect, open_pool
from stoker.db.executor import Batch, Executor, NoParams, Row, int_array, json_array
from stoker.db.migrate import apply_migrations, pending_migrations
from stoker.db.queries import queries

__all__ = [
    "Batch",
    "Executor",
    "NoParams",
    "Row",
    "apply_migrations",
    "connect",
    "int_array",
    "json_array",
    "open_pool",
    "pending_migrations",
    "queries",
]
