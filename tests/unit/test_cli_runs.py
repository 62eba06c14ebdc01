"""``stoker runs cancel|replay --filter KEY=VALUE``: how the pairs become a bulk filter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from stoker.cli_runs import parse_filter


def test_filter_pairs_name_statuses_times_and_metadata() -> None:
    assert parse_filter(
        [
            "status=failed",
            "name=send_email",
            "name=charge",
            "since=2026-12-01T00:00:00Z",
            "customer=acme",
            "meta.status=vip",
        ]
    ) == {
        "status": ["FAILED"],
        "workflow": ["send_email", "charge"],
        "since": datetime(2026, 12, 1, tzinfo=UTC),
        "additional_metadata": {"customer": "acme", "status": "vip"},
    }
    assert parse_filter([]) == {}


@pytest.mark.parametrize("pair", ["status", "=x", "since=yesterday", "until=2026-12-01T00:00"])
def test_a_bad_filter_pair_is_one_error(pair: str) -> None:
    with pytest.raises(typer.Exit) as exc:
        parse_filter([pair])
    assert exc.value.exit_code == 2
