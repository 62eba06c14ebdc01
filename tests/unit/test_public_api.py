"""The SDK's public surface is ``stoker.__all__``: pinned here, so a change to it is a
deliberate edit of this list (and of the README), never a side effect of moving code."""

from __future__ import annotations

import importlib

import stoker

PUBLIC = [
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
    "HMAC",
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


def test_the_public_names_are_exactly_the_pinned_list() -> None:
    assert sorted(stoker.__all__) == PUBLIC


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("stoker")
    for name in stoker.__all__:
        assert getattr(module, name, None) is not None, name
        namespace: dict[str, object] = {}
        exec(f"from stoker import {name}", namespace)
        assert namespace[name] is getattr(module, name)


def test_public_classes_say_they_are_stoker_s() -> None:
    # Every public class is defined in a stoker module (the re-exports are not shadowed).
    for name in stoker.__all__:
        value = getattr(stoker, name)
        if isinstance(value, type):
            assert value.__module__.startswith("stoker."), (name, value.__module__)
