"""Stoker's exceptions: one root, :class:`StokerError`.

A subclass's docstring is its default message, so ``raise EngineUnavailableError()`` says
something useful; pass a message to be more specific.

This module is also the one table of how an error leaves the engine: each class names its
gRPC status code (``grpc_code``) and its HTTP status (``http_status``); a subclass that
names neither answers as its nearest base class does. The engine's gRPC handlers and REST
app read these attributes, and the SDK turns an engine's answer back into the class it
names (:func:`stoker._core.wire.error_class`).
"""

from __future__ import annotations

from typing import ClassVar


class StokerError(Exception):
    """A Stoker error."""

    grpc_code: ClassVar[str] = "FAILED_PRECONDITION"
    """The name of the ``grpc.StatusCode`` a call failing with this error answers with."""
    http_status: ClassVar[int] = 400
    """The HTTP status a REST request failing with this error answers with."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


class ConfigError(StokerError):
    """Stoker's configuration is invalid."""

    http_status = 500


class DeclarationError(StokerError):
    """A task or workflow declaration is invalid."""


class DurationError(DeclarationError, ConfigError):
    """A duration is invalid: use a number of seconds or a string such as '30s' or '5m'.

    Durations appear in declarations (timeouts, sleeps, rate-limit windows) and in settings,
    so this is both a :class:`DeclarationError` and a :class:`ConfigError`.
    """


class EngineUnavailableError(StokerError):
    """The Stoker engine could not be reached after retrying; is it running?"""

    grpc_code = "UNAVAILABLE"
    http_status = 503


class AuthenticationError(StokerError):
    """The engine rejected the API token: it is missing, unknown or revoked."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDeniedError(StokerError):
    """The API token is valid but its role does not allow this (it needs the admin role)."""

    grpc_code = "PERMISSION_DENIED"
    http_status = 403


class UnknownTaskError(StokerError):
    """No task is registered under that name."""

    grpc_code = "NOT_FOUND"
    http_status = 404


class PayloadTooLargeError(StokerError):
    """A payload is larger than the configured limit."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413


class InvalidRequestError(StokerError):
    """The engine refused the request as invalid."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 422


class TransactionalEnqueueError(StokerError):
    """A transactional enqueue could not write through the application's connection: its
    database has no Stoker schema, or its database role may not enqueue (see
    docs/transactional.md). The application's transaction is aborted and must roll back."""


class ConflictError(InvalidRequestError):
    """The request names something that exists already (a cron of that name)."""

    grpc_code = "ALREADY_EXISTS"
    http_status = 409


class NotFoundError(StokerError):
    """No such run."""

    grpc_code = "NOT_FOUND"
    http_status = 404


class TaskRunError(StokerError):
    """A task run failed.

    ``error_type``, ``error_message`` and ``remote_traceback`` describe the exception raised
    on the worker (or the engine's reason, such as a timeout).
    """

    def __init__(
        self,
        run_id: str,
        error_type: str,
        error_message: str,
        remote_traceback: str = "",
        status: str = "FAILED",
    ) -> None:
        self.run_id = run_id
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
        self.status = status
        text = f"run {run_id} {status.lower()}: {error_type}: {error_message}"
        if remote_traceback:
            text += f"\n\nremote traceback:\n{remote_traceback}"
        super().__init__(text)


class RunCancelledError(TaskRunError):
    """A task run was cancelled."""


class NonRetryableError(StokerError):
    """Raise from a task to fail the run at once, without its remaining retries."""


class RetryAfter(StokerError):
    """Raise from a task to fail this attempt and retry it after ``seconds``."""

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if seconds < 0:
            raise ValueError("RetryAfter needs seconds >= 0")
        self.seconds = seconds
        super().__init__(message or f"retry requested after {seconds:g}s")


class TaskTimeoutError(StokerError):
    """The task ran longer than its execution timeout."""


class OutputSerializationError(StokerError):
    """A task's output could not be serialized to JSON."""


class DatabaseUnavailableError(EngineUnavailableError):
    """The engine is up but its database cannot be reached; retry shortly."""


class NonDeterminismError(StokerError):
    """A durable task's replay made a different call than its log recorded at that position;
    fix the code, then replay or reset the run.

    ``position`` is the call's place in the log, ``recorded`` and ``called`` describe the
    recorded operation and the one the code made (``None`` when not known, as for a replay
    that stalled).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        position: int | None = None,
        recorded: str | None = None,
        called: str | None = None,
    ) -> None:
        self.position = position
        self.recorded = recorded
        self.called = called
        super().__init__(message)


class StepError(StokerError):
    """A durable task's memoized step failed for good (its retries used up, its timeout
    passed, or its result was not JSON).

    The failure is recorded in the task's log, and the same :class:`StepError` is raised
    on every replay without running the step again: ``step`` and ``position`` name the
    step, ``error_type``, ``error_message`` and ``remote_traceback`` describe what it
    raised (``StepTimeoutError`` for a timeout, ``OutputSerializationError`` for a result
    that is not JSON). On the first run the original exception is also the ``__cause__``.
    """

    def __init__(
        self,
        step: str,
        position: int,
        error_type: str,
        error_message: str,
        remote_traceback: str = "",
    ) -> None:
        self.step = step
        self.position = position
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
        super().__init__(
            f"step {step!r} (position {position}) failed: {error_type}: {error_message}"
        )


class StepTimeoutError(StokerError):
    """A try of a durable task's step ran past the step's timeout."""


class WaitTimeoutError(StokerError):
    """A durable wait reached its timeout before anything it waited for happened."""


# -- incoming webhooks (the answers of POST /webhooks/<tenant>/<name>) ------------------


class WebhookUnauthorized(StokerError):
    """The request carries no credential for this webhook."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401


class WebhookForbidden(StokerError):
    """The request's signature or credential is wrong for this webhook."""

    grpc_code = "PERMISSION_DENIED"
    http_status = 403


class WebhookBodyError(InvalidRequestError):
    """The request body is not what the webhook takes (a JSON document)."""

    http_status = 400


class UnknownWebhookError(NotFoundError):
    """No webhook of that name at this URL."""


# -- worker runtimes: executors ---------------------------------------------------------


class SubprocessCrashedError(StokerError):
    """The subprocess running a task (``executor="process"``) died before it answered: a
    crash in native code, ``os._exit``, a signal or the out-of-memory killer. The attempt
    failed and is retried like any failure; the worker starts a new subprocess."""


# -- worker runtimes: lifespan ----------------------------------------------------------


class LifespanError(StokerError):
    """A worker's lifespan raised when it was entered: the worker stopped before it
    registered. The original exception is the ``__cause__``."""


# -- the Hatchet front door (docs/hatchet.md) -------------------------------------------


class UnsupportedFeatureError(StokerError):
    """The Hatchet front door does not support this feature yet (docs/hatchet.md lists what
    it supports)."""

    grpc_code = "UNIMPLEMENTED"
    http_status = 501
