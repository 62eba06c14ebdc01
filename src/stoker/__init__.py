"""Stoker: a distributed task queue and durable workflow engine for Python, on PostgreSQL.

This module is the SDK's whole public surface::

    from stoker import Stoker, Context

    app = Stoker()

    @app.task(retries=3)
    async def greet(input: Greet, ctx: Context) -> dict: ...
"""

__version__ = "0.1.0"

from stoker._sdk.client import Stoker
from stoker._sdk.context import Context
from stoker._sdk.task import RunRef, Task
from stoker._sdk.worker import Worker
from stoker.errors import (
    AuthenticationError,
    ConfigError,
    DeclarationError,
    EngineUnavailableError,
    InvalidRequestError,
    NonRetryableError,
    NotFoundError,
    OutputSerializationError,
    PayloadTooLargeError,
    RetryAfter,
    RunCancelledError,
    StokerError,
    TaskRunError,
    TaskTimeoutError,
    UnknownTaskError,
)

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "Context",
    "DeclarationError",
    "EngineUnavailableError",
    "InvalidRequestError",
    "NonRetryableError",
    "NotFoundError",
    "OutputSerializationError",
    "PayloadTooLargeError",
    "RetryAfter",
    "RunCancelledError",
    "RunRef",
    "Stoker",
    "StokerError",
    "Task",
    "TaskRunError",
    "TaskTimeoutError",
    "UnknownTaskError",
    "Worker",
    "__version__",
]
