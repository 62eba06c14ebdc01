"""The SQL rule that decides whether a durable wait holds (``durable_wait_holds``, used
when an event push settles waits in its last round trip) agrees with the Python one
(``stoker._core.durable.wait_holds``, used by registration and the timers) on every
subset of satisfied conditions of a set of requests, malformed ones included."""

from __future__ import annotations

import itertools
import json
from typing import Any

import psycopg

from stoker._core.durable import wait_holds

REQUESTS: list[Any] = [
    {"conditions": [{"kind": "event", "key": "a"}]},
    {"conditions": [{"kind": "event", "key": "a"}, {"kind": "sleep", "ms": 5}]},
    {
        "conditions": [
            {"kind": "or", "items": [{"kind": "event", "key": "a"}, {"kind": "sleep", "ms": 1}]}
        ]
    },
    {
        "conditions": [
            {"kind": "event", "key": "x"},
            {"kind": "or", "items": [{"kind": "event", "key": "a"}, {"kind": "event", "key": "b"}]},
            {"kind": "sleep", "ms": 1},
        ]
    },
    {"conditions": []},
    {"conditions": [{"kind": "or", "items": []}]},
    {"conditions": "not a list"},
    {},
    [],
]
PATHS = ["0", "1", "2", "0.0", "0.1", "1.0", "1.1", "3"]


def test_the_sql_rule_matches_wait_holds(db_url: str) -> None:
    cases = [
        (request, list(done))
        for request in REQUESTS
        for n in range(len(PATHS) + 1)
        for done in itertools.combinations(PATHS, n)
        if n <= 3 or n == len(PATHS)
    ]
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        for request, done in cases:
            row = conn.execute(
                "SELECT durable_wait_holds(%s::jsonb, %s::text[])", (json.dumps(request), done)
            ).fetchone()
            assert row is not None
            expected = wait_holds(request, done) if isinstance(request, dict) else False
            assert row[0] is expected, (request, done)
        empty = conn.execute(
            "SELECT durable_wait_holds(%s::jsonb, NULL)", (json.dumps(REQUESTS[0]),)
        ).fetchone()
    assert empty == (False,)
