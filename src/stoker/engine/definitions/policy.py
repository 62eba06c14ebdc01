"""Per-run policy values, computed once when a run is created.

Concurrency keys, rate-limit keys/units/limits are CEL over the run's ``input`` and
``additional_metadata``. If an expression fails on a run's input, that run is created
FAILED with the expression and the error, and the rest of the batch goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stoker._core.cel import evaluate
from stoker._core.wire import DURATION_MS, TaskConfig
from stoker.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Strategy:
    """A registered concurrency strategy of a task."""

    id: int
    idx: int


@dataclass(slots=True)
class RunPolicy:
    """What the queue needs to know about one new run."""

    error: str | None = None
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    slots: list[tuple[int, int, str]] = field(default_factory=list)  # (strategy_id, idx, key)

    @property
    def rate_limits_json(self) -> str | None:
        return json.dumps(self.rate_limits) if self.rate_limits else None

    @property
    def concurrency_keys_json(self) -> str | None:
        """The ``task.concurrency_keys`` value: one object per strategy, or None."""
        if not self.slots:
            return None
        return json.dumps([{"strategy_id": s, "idx": i, "key": k} for s, i, k in self.slots])


def _as_key(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise InvalidRequestError(f"evaluated to {type(value).__name__}, not a string or number")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) < 1:
        raise InvalidRequestError(f"{what} must evaluate to a positive integer, got {value!r}")
    return int(value)


def evaluate_policy(
    task_name: str,
    config: TaskConfig,
    strategies: list[Strategy],
    raw_input: bytes,
    raw_metadata: bytes,
    static_keys: set[str],
) -> RunPolicy:
    """The run's concurrency slots and rate-limit units, or the error that fails the run."""
    policy = RunPolicy()
    if not config.concurrency and not config.rate_limits:
        return policy
    data = json.loads(raw_input) if raw_input else None
    metadata = json.loads(raw_metadata) if raw_metadata else {}
    what = f"task {task_name!r}"
    try:
        for strategy, spec in zip(strategies, config.concurrency, strict=True):
            key = evaluate(spec.expression, data, metadata, f"{what}: concurrency")
            try:
                policy.slots.append((strategy.id, strategy.idx, _as_key(key)))
            except InvalidRequestError as exc:
                raise InvalidRequestError(
                    f"{what}: concurrency expression {spec.expression!r} {exc}"
                ) from None
        for limit in config.rate_limits:
            units = limit.units
            if isinstance(units, str):
                units = _as_int(
                    evaluate(units, data, metadata, f"{what}: rate limit units"), "units"
                )
            if limit.static_key is not None:
                if limit.static_key not in static_keys:
                    raise InvalidRequestError(
                        f"{what}: rate limit {limit.static_key!r} was never created; create it "
                        f"with app.rate_limits.put({limit.static_key!r}, limit=..., duration=...)"
                    )
                policy.rate_limits.append({"key": limit.static_key, "units": units})
                continue
            assert limit.dynamic_key is not None and limit.duration is not None
            raw_key = evaluate(limit.dynamic_key, data, metadata, f"{what}: rate limit key")
            cap = limit.limit
            if isinstance(cap, str):
                cap = _as_int(evaluate(cap, data, metadata, f"{what}: rate limit"), "limit")
            assert cap is not None
            if units > cap:
                # A limit holds in every window, so such a run could never start.
                raise InvalidRequestError(
                    f"{what}: rate limit {limit.dynamic_key!r} takes {units} units per run "
                    f"but allows only {cap} per {limit.duration.value}; the run could never "
                    "start"
                )
            policy.rate_limits.append(
                {
                    "key": f"{limit.dynamic_key}={_as_key(raw_key)}",
                    "units": units,
                    "limit": cap,
                    "window_ms": DURATION_MS[limit.duration.value],
                }
            )
    except InvalidRequestError as exc:
        return RunPolicy(error=exc.message)
    return policy
