"""Stoker: a distributed task queue and durable workflow engine for Python, on PostgreSQL.

This module is the SDK's whole public surface::

    from stoker import Stoker, Context

    app = Stoker()

    @app.task(retries=3)
    async def greet(input: Greet, ctx: Context) -> dict: ...
"""

__version__ = "0.1.0"

from stoker._core.cron import CronError
from stoker._core.wire import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    DesiredWorkerLabel,
    RateLimit,
    RateLimitDuration,
    StickyStrategy,
    WorkerLabelComparator,
)
from stoker._sdk.app import RateLimitInfo, RateLimits, Stoker
from stoker._sdk.conditions import ParentCondition, SleepCondition, UserEventCondition, or_
from stoker._sdk.context import Context
from stoker._sdk.crons import (
    BackfillRun,
    CatchUp,
    Cron,
    CronInfo,
    CronRun,
    Crons,
    PausedInfo,
    TaskRegistry,
    WorkflowRegistry,
)
from stoker._sdk.dependencies import Depends
from stoker._sdk.durable import DurableContext, Eviction, WaitResult
from stoker._sdk.events import (
    EventInfo,
    EventPush,
    EventRun,
    Events,
    FilterInfo,
    Filters,
    PushedEvent,
)
from stoker._sdk.http_worker import HttpWorker
from stoker._sdk.observe import LogLine, RunEvent
from stoker._sdk.refs import RunRef
from stoker._sdk.runs import (
    BulkOperation,
    BulkProgress,
    ResetOutcome,
    RunInfo,
    RunOutcome,
    RunPage,
    Runs,
)
from stoker._sdk.schedules import ScheduledRun, Schedules
from stoker._sdk.task import DefaultFilter, Idempotency, Task
from stoker._sdk.webhooks import (
    HMAC,
    ApiKey,
    Basic,
    GitHubSignature,
    SlackSignature,
    StripeSignature,
    Webhook,
    WebhookAuth,
    Webhooks,
)
from stoker._sdk.worker import Worker
from stoker._sdk.workers import WorkerInfo, Workers
from stoker._sdk.workflow import Workflow, WorkflowTask
from stoker.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    DeclarationError,
    EngineUnavailableError,
    InvalidRequestError,
    LifespanError,
    NonDeterminismError,
    NonRetryableError,
    NotFoundError,
    OutputSerializationError,
    PayloadTooLargeError,
    RetryAfter,
    RunCancelledError,
    StepError,
    StokerError,
    SubprocessCrashedError,
    TaskRunError,
    TaskTimeoutError,
    TransactionalEnqueueError,
    UnknownTaskError,
    WaitTimeoutError,
)

__all__ = [
    "HMAC",
    "ApiKey",
    "AuthenticationError",
    "BackfillRun",
    "Basic",
    "BulkOperation",
    "BulkProgress",
    "CatchUp",
    "ConcurrencyExpression",
    "ConcurrencyLimitStrategy",
    "ConfigError",
    "ConflictError",
    "Context",
    "Cron",
    "CronError",
    "CronInfo",
    "CronRun",
    "Crons",
    "DatabaseUnavailableError",
    "DeclarationError",
    "DefaultFilter",
    "Depends",
    "DesiredWorkerLabel",
    "DurableContext",
    "EngineUnavailableError",
    "EventInfo",
    "EventPush",
    "EventRun",
    "Events",
    "Eviction",
    "FilterInfo",
    "Filters",
    "GitHubSignature",
    "HttpWorker",
    "Idempotency",
    "InvalidRequestError",
    "LifespanError",
    "LogLine",
    "NonDeterminismError",
    "NonRetryableError",
    "NotFoundError",
    "OutputSerializationError",
    "ParentCondition",
    "PausedInfo",
    "PayloadTooLargeError",
    "PushedEvent",
    "RateLimit",
    "RateLimitDuration",
    "RateLimitInfo",
    "RateLimits",
    "ResetOutcome",
    "RetryAfter",
    "RunCancelledError",
    "RunEvent",
    "RunInfo",
    "RunOutcome",
    "RunPage",
    "RunRef",
    "Runs",
    "ScheduledRun",
    "Schedules",
    "SlackSignature",
    "SleepCondition",
    "StepError",
    "StickyStrategy",
    "Stoker",
    "StokerError",
    "StripeSignature",
    "SubprocessCrashedError",
    "Task",
    "TaskRegistry",
    "TaskRunError",
    "TaskTimeoutError",
    "TransactionalEnqueueError",
    "UnknownTaskError",
    "UserEventCondition",
    "WaitResult",
    "WaitTimeoutError",
    "Webhook",
    "WebhookAuth",
    "Webhooks",
    "Worker",
    "WorkerInfo",
    "WorkerLabelComparator",
    "Workers",
    "Workflow",
    "WorkflowRegistry",
    "WorkflowTask",
    "__version__",
    "or_",
]
