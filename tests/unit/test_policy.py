"""Per-run policy values (evaluate_policy): concurrency keys and rate-limit units, keys and
limits from CEL, and the error that fails one run instead of its batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoker._core.wire import (
    DURATION_MS,
    ConcurrencyExpression,
    RateLimit,
    RateLimitDuration,
    TaskConfig,
)
from stoker.engine.definitions.policy import RunPolicy, Strategy, evaluate_policy


def evaluate(
    config: TaskConfig,
    input: Any = None,
    metadata: dict[str, Any] | None = None,
    static_keys: set[str] | None = None,
) -> RunPolicy:
    strategies = [Strategy(id=10 + i, idx=i) for i in range(len(config.concurrency))]
    raw_input = json.dumps(input).encode() if input is not None else b""
    raw_metadata = json.dumps(metadata or {}).encode()
    return evaluate_policy("job", config, strategies, raw_input, raw_metadata, static_keys or set())


def dynamic(units: int | str = 1, limit: int | str = 10, key: str = "input.user") -> RateLimit:
    return RateLimit(dynamic_key=key, units=units, limit=limit, duration=RateLimitDuration.MINUTE)


def test_a_task_without_policies_does_not_even_read_its_input() -> None:
    policy = evaluate_policy("job", TaskConfig(), [], b"not json", b"{", set())
    assert policy == RunPolicy()
    assert policy.rate_limits_json is None and policy.concurrency_keys_json is None


keys = st.one_of(st.text(max_size=20), st.integers(-(2**53), 2**53), st.booleans())


@settings(deadline=None)
@given(first=keys, second=st.text(max_size=10))
def test_each_concurrency_strategy_gets_the_key_its_expression_gives(
    first: str | int | bool, second: str
) -> None:
    config = TaskConfig(
        concurrency=[
            ConcurrencyExpression(expression="input.customer"),
            ConcurrencyExpression(expression="additional_metadata.team", max_runs=3),
        ]
    )
    policy = evaluate(config, {"customer": first}, {"team": second})
    assert policy.error is None
    # Strings as they are; numbers and booleans as JSON, so 1 and "1" share a key.
    want = first if isinstance(first, str) else json.dumps(first)
    assert policy.slots == [(10, 0, want), (11, 1, second)]
    assert json.loads(policy.concurrency_keys_json or "") == [
        {"strategy_id": 10, "idx": 0, "key": want},
        {"strategy_id": 11, "idx": 1, "key": second},
    ]


@pytest.mark.parametrize("value", [[1], {"a": 1}, None])
def test_a_key_that_is_not_a_string_or_number_fails_the_run(value: Any) -> None:
    config = TaskConfig(concurrency=[ConcurrencyExpression(expression="input.customer")])
    policy = evaluate(config, {"customer": value})
    assert policy.slots == [] and policy.rate_limits == []
    assert policy.error is not None
    assert policy.error.startswith("task 'job': concurrency expression 'input.customer'")


def test_an_expression_that_fails_on_the_input_fails_the_run_and_names_itself() -> None:
    config = TaskConfig(concurrency=[ConcurrencyExpression(expression="input.customer")])
    policy = evaluate(config, {"other": 1})
    assert policy.error is not None and "'input.customer'" in policy.error


def test_a_static_limit_must_exist_and_takes_its_units() -> None:
    config = TaskConfig(rate_limits=[RateLimit(static_key="api", units=3)])
    assert evaluate(config, {}, static_keys={"api"}).rate_limits == [{"key": "api", "units": 3}]
    missing = evaluate(config, {}, static_keys={"other"})
    assert missing.rate_limits == []
    assert missing.error is not None
    assert "'api' was never created" in missing.error
    assert "app.rate_limits.put('api'" in missing.error


@settings(deadline=None)
@given(
    units=st.integers(1, 50),
    cap=st.integers(1, 50),
    user=st.text(max_size=10),
    duration=st.sampled_from(list(RateLimitDuration)),
)
def test_a_dynamic_limit_keys_by_value_and_refuses_runs_that_could_never_start(
    units: int, cap: int, user: str, duration: RateLimitDuration
) -> None:
    limit = RateLimit(
        dynamic_key="input.user", units="input.units", limit="input.cap", duration=duration
    )
    policy = evaluate(TaskConfig(rate_limits=[limit]), {"user": user, "units": units, "cap": cap})
    if units > cap:
        assert policy.rate_limits == []
        assert policy.error is not None and "could never start" in policy.error
        assert f"takes {units} units per run but allows only {cap} per {duration.value}" in (
            policy.error
        )
    else:
        assert policy.error is None
        assert policy.rate_limits == [
            {
                "key": f"input.user={user}",
                "units": units,
                "limit": cap,
                "window_ms": DURATION_MS[duration.value],
            }
        ]
        assert json.loads(policy.rate_limits_json or "") == policy.rate_limits


@pytest.mark.parametrize(("units", "limit"), [(0, 5), (-2, 5), (True, 5), ("x", 5), (1, 0)])
def test_units_and_limits_from_cel_must_be_positive_integers(units: Any, limit: Any) -> None:
    config = TaskConfig(rate_limits=[dynamic(units="input.units", limit="input.limit")])
    policy = evaluate(config, {"user": "u", "units": units, "limit": limit})
    assert policy.error is not None
    assert "must evaluate to a positive integer" in policy.error


def test_one_failing_policy_discards_the_values_already_computed() -> None:
    config = TaskConfig(
        concurrency=[ConcurrencyExpression(expression="input.user")],
        rate_limits=[RateLimit(static_key="api"), RateLimit(static_key="gone")],
    )
    policy = evaluate(config, {"user": "u"}, static_keys={"api"})
    assert policy.slots == [] and policy.rate_limits == []
    assert policy.error is not None and "'gone'" in policy.error
