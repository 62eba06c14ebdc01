"""Shapes shared by the SDK and the engine beyond the protobuf messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIN_PRIORITY = 1
MAX_PRIORITY = 3
DEFAULT_PRIORITY = 1


class TaskConfig(BaseModel):
    """A task definition's options as registered with the engine (JSON in TaskDefinition)."""

    # Unknown keys are ignored so an older engine accepts a newer SDK's definitions.
    model_config = ConfigDict(extra="ignore", frozen=True)

    retries: int = Field(default=0, ge=0)
    backoff_factor: float | None = Field(default=None, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    execution_timeout_ms: int = Field(default=60_000, ge=0)
    schedule_timeout_ms: int = Field(default=300_000, ge=0)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
