"""Telling a database outage from a bad item, for the engine's batched writers.

A batch that fails because the database went away (connection lost, server shutting down,
pool exhausted, a serialization conflict) must be retried whole: nothing in it is wrong.
A batch that fails on one item's data (a value PostgreSQL refuses) must not fail the items
of every other caller written with it: the writer splits it (:func:`isolate`) until the
failing items stand alone, writes the rest, and fails only those with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import psycopg

from stoker.errors import DatabaseUnavailableError, InvalidRequestError, StokerError

log = logging.getLogger("stoker.engine.faults")

T = TypeVar("T")
R = TypeVar("R")


def transient(exc: BaseException) -> bool:
    """True for a failure of the database rather than of the data written (retry it).

    psycopg's OperationalError covers a lost or refused connection, an administrator
    shutdown, the pool's timeout and transaction conflicts (deadlock, serialization).
    """
    return isinstance(exc, psycopg.OperationalError | OSError | TimeoutError)


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    """The error a caller gets when the database could not be reached."""
    return DatabaseUnavailableError(
        f"the engine's database is unavailable ({type(exc).__name__}: {exc}); retry shortly"
    )


def for_caller(exc: BaseException) -> BaseException:
    """What a caller whose item failed to be written is told: the database's refusal of a
    value as an invalid request, an outage as unavailable, a Stoker error unchanged."""
    if isinstance(exc, StokerError):
        return exc
    if transient(exc):
        return unavailable(exc)
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | UnicodeError):
        return InvalidRequestError(f"the database refused a value: {exc}")
    if isinstance(exc, RecursionError):
        return InvalidRequestError("a value nests too deeply to be read")
    return exc


@dataclass(slots=True)
class Isolated(Generic[T, R]):
    """What :func:`isolate` wrote, what failed alone and why, and what an outage left."""

    written: list[tuple[Sequence[T], R]] = field(default_factory=list)
    failed: list[tuple[T, BaseException]] = field(default_factory=list)
    unwritten: list[T] = field(default_factory=list)
    outage: BaseException | None = None


async def isolate(
    items: Sequence[T], write: Callable[[Sequence[T]], Awaitable[R]], *, what: str
) -> Isolated[T, R]:
    """Writes ``items`` with ``write`` (one transaction per call), splitting on failure.

    A slice that fails on its data is split in halves until each failing item stands
    alone; those are returned with their exceptions and every other item is written. A
    ``k`` bad items of ``n`` cost at most about ``2k·log2(n)`` extra transactions. A
    transient failure (:func:`transient`) stops the writing: what was not written yet is
    returned as ``unwritten`` with the ``outage``, for the caller to retry or refuse.
    """
    result: Isolated[T, R] = Isolated()
    stack = [items]
    while stack:
        chunk = stack.pop()
        if result.outage is not None:
            result.unwritten.extend(chunk)
            continue
        try:
            result.written.append((chunk, await write(chunk)))
        except Exception as exc:
            if transient(exc):
                result.outage = exc
                result.unwritten.extend(chunk)
            elif len(chunk) == 1:
                log.warning("%s: one item could not be written: %s", what, exc)
                result.failed.append((chunk[0], exc))
            else:
                log.warning("%s: a batch of %d failed (%s); splitting it", what, len(chunk), exc)
                mid = len(chunk) // 2
                stack += [chunk[mid:], chunk[:mid]]
    return result
