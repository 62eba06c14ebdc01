"""The one table of how errors leave the engine: every Stoker error has a gRPC code and an
HTTP status (pinned here, so a change is deliberate), and an error the engine answers a
call with comes back to the SDK as the same class."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from stoker import errors
from stoker._core.wire import ERROR_TYPE_KEY
from stoker._sdk.transport import to_stoker_error
from stoker.engine.rpc.handlers import status_for

TABLE: dict[type[errors.StokerError], tuple[grpc.StatusCode, int]] = {
    errors.StokerError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.ConfigError: (grpc.StatusCode.FAILED_PRECONDITION, 500),
    errors.DeclarationError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    # a DeclarationError and a ConfigError: the nearest base with a status is ConfigError
    errors.DurationError: (grpc.StatusCode.FAILED_PRECONDITION, 500),
    errors.EngineUnavailableError: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.DatabaseUnavailableError: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.AuthenticationError: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.PermissionDeniedError: (grpc.StatusCode.PERMISSION_DENIED, 403),
    errors.UnknownTaskError: (grpc.StatusCode.NOT_FOUND, 404),
    errors.NotFoundError: (grpc.StatusCode.NOT_FOUND, 404),
    errors.PayloadTooLargeError: (grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    errors.InvalidRequestError: (grpc.StatusCode.INVALID_ARGUMENT, 422),
    errors.ConflictError: (grpc.StatusCode.ALREADY_EXISTS, 409),
    errors.TaskRunError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.TransactionalEnqueueError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.RunCancelledError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.NonRetryableError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.RetryAfter: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.TaskTimeoutError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.OutputSerializationError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.NonDeterminismError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.WaitTimeoutError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.StepError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.StepTimeoutError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    # the answers of a webhook's URL
    errors.WebhookUnauthorized: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.WebhookForbidden: (grpc.StatusCode.PERMISSION_DENIED, 403),
    errors.WebhookBodyError: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.UnknownWebhookError: (grpc.StatusCode.NOT_FOUND, 404),
    errors.SubprocessCrashedError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.LifespanError: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.UnsupportedFeatureError: (grpc.StatusCode.UNIMPLEMENTED, 501),
}

# What the engine raises in handlers; each must come back to the SDK as itself.
ANSWERED = [
    errors.AuthenticationError,
    errors.PermissionDeniedError,
    errors.UnknownTaskError,
    errors.NotFoundError,
    errors.PayloadTooLargeError,
    errors.InvalidRequestError,
    errors.ConflictError,
    errors.EngineUnavailableError,
    errors.DatabaseUnavailableError,
    errors.UnknownWebhookError,
]


def _every_error() -> set[type[errors.StokerError]]:
    found: set[type[errors.StokerError]] = set()
    todo: list[type[errors.StokerError]] = [errors.StokerError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__ and cls not in found:
            found.add(cls)
            todo += cls.__subclasses__()
    return found


def test_every_error_is_in_the_table() -> None:
    assert _every_error() == set(TABLE)


@pytest.mark.parametrize("cls", sorted(TABLE, key=lambda c: c.__name__))
def test_statuses(cls: type[errors.StokerError]) -> None:
    code, http = TABLE[cls]
    assert grpc.StatusCode[cls.grpc_code] is code
    assert cls.http_status == http


class _Answer(grpc.RpcError):
    """A failed call as the SDK sees it."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str]]):
        self._code, self._details, self._trailing = code, details, tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


@pytest.mark.parametrize("cls", ANSWERED, ids=lambda c: c.__name__)
def test_an_engine_error_comes_back_as_itself(cls: type[errors.StokerError]) -> None:
    sent = cls("it went wrong")
    answer = _Answer(status_for(sent), sent.message, [(ERROR_TYPE_KEY, cls.__name__)])
    got = to_stoker_error(answer, "engine:7077")
    assert type(got) is cls
    assert got.message == "it went wrong"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, errors.AuthenticationError),
        (grpc.StatusCode.NOT_FOUND, errors.NotFoundError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.PayloadTooLargeError),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidRequestError),
    ],
)
def test_an_answer_without_a_type_maps_by_its_code(
    code: grpc.StatusCode, cls: type[errors.StokerError]
) -> None:
    assert type(to_stoker_error(_Answer(code, "refused", []), "engine:7077")) is cls


def test_other_answers() -> None:
    unavailable = to_stoker_error(_Answer(grpc.StatusCode.UNAVAILABLE, "down", []), "e:1")
    assert type(unavailable) is errors.EngineUnavailableError
    assert unavailable.message == "the Stoker engine at e:1 is unavailable: down"
    # an error without a code of its own arrives as a plain StokerError
    sent = errors.ConfigError("bad")
    answer = _Answer(status_for(sent), "bad", [(ERROR_TYPE_KEY, "ConfigError")])
    got = to_stoker_error(answer, "e:1")
    assert type(got) is errors.StokerError
    assert got.message == "engine call failed (FAILED_PRECONDITION): bad"
