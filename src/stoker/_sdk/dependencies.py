"""Dependencies in task signatures, FastAPI-style, and the worker's lifespan.

A task function may take, after ``(input, ctx)``, parameters annotated
``Annotated[T, Depends(provider)]``. For each attempt the worker calls the providers and
passes what they give:

* a provider is a sync or async function, or a sync or async generator function (what it
  yields is the value; the code after the ``yield`` is its teardown, run after the attempt
  — also when the attempt failed, with the exception thrown in at the ``yield``);
* a provider's own parameters are filled the same way: one annotated with
  :class:`~stoker.Context` (or named ``ctx``) gets the attempt's context (so
  ``ctx.lifespan``), one annotated ``Annotated[T, Depends(other)]`` gets that
  dependency; each provider runs at most once per attempt;
* teardowns run in the reverse order of setups; a provider that raises fails the
  attempt with its error (the usual retry policy applies);
* ``app.dependency_overrides[provider] = replacement`` swaps a provider (in tests).

The lifespan (``app.worker(..., lifespan=...)``) is an async context manager factory
(``@asynccontextmanager``, or a bare async generator function) entered before the worker
registers and exited after it stopped; what it yields is ``ctx.lifespan`` in every task.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

from stoker.errors import DeclarationError, LifespanError


class Depends:
    """Marks a parameter as a dependency: ``db: Annotated[Pool, Depends(get_pool)]``."""

    __slots__ = ("provider",)

    def __init__(self, provider: Callable[..., Any]) -> None:
        if not callable(provider):
            raise DeclarationError(f"Depends() takes a function, got {provider!r}")
        self.provider = provider

    def __repr__(self) -> str:
        return f"Depends({getattr(self.provider, '__qualname__', self.provider)!r})"


def _depends_of(annotation: Any) -> Depends | None:
    if typing.get_origin(annotation) is typing.Annotated:
        found = [m for m in annotation.__metadata__ if isinstance(m, Depends)]
        if len(found) == 1:
            return found[0]
    return None


def _hints(fn: Callable[..., Any], what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise DeclarationError(f"{what}: cannot resolve type annotations: {exc}") from None


def _provider_params(provider: Callable[..., Any], what: str) -> dict[str, Depends | None]:
    """A provider's parameters: each a sub-dependency, or None for the context."""
    from stoker._sdk.context import Context

    hints = _hints(provider, what)
    params: dict[str, Depends | None] = {}
    for p in inspect.signature(provider).parameters.values():
        dep = _depends_of(hints.get(p.name))
        hint = hints.get(p.name)
        if dep is not None:
            params[p.name] = dep
        elif (isinstance(hint, type) and issubclass(hint, Context)) or p.name == "ctx":
            params[p.name] = None
        elif p.default is p.empty:
            raise DeclarationError(
                f"{what}: parameter {p.name!r} of dependency "
                f"{getattr(provider, '__qualname__', provider)!r} must be the context "
                "(annotated Context) or another dependency (Annotated[T, Depends(...)])"
            )
    return params


def task_dependencies(fn: Callable[..., Any], name: str) -> dict[str, Depends]:
    """The task function's dependency parameters (those after ``(input, ctx)``), checked
    now: every other parameter is an error, and so is a provider it cannot call."""
    what = f"task {name!r}"
    hints = _hints(fn, what)
    params = list(inspect.signature(fn).parameters.values())[2:]
    found: dict[str, Depends] = {}
    for p in params:
        dep = _depends_of(hints.get(p.name))
        if dep is None:
            raise DeclarationError(
                f"{what}: parameter {p.name!r} after (input, ctx) must be a dependency, "
                "annotated Annotated[T, Depends(provider)]"
            )
        found[p.name] = dep
        _check_provider(dep.provider, what, [])
    return found


def _check_provider(provider: Callable[..., Any], what: str, path: list[Any]) -> None:
    if provider in path:
        chain = " -> ".join(getattr(p, "__qualname__", str(p)) for p in [*path, provider])
        raise DeclarationError(f"{what}: dependencies form a cycle: {chain}")
    for dep in _provider_params(provider, what).values():
        if dep is not None:
            _check_provider(dep.provider, what, [*path, provider])


async def solve(
    dependencies: Mapping[str, Depends],
    ctx: Any,
    stack: AsyncExitStack,
    overrides: Mapping[Callable[..., Any], Callable[..., Any]],
) -> dict[str, Any]:
    """The values of one attempt's dependencies; the generators' teardowns are pushed on
    ``stack`` (closed after the attempt). Raises what a provider raised."""
    cache: dict[Callable[..., Any], Any] = {}

    async def value(dep: Depends) -> Any:
        provider = overrides.get(dep.provider, dep.provider)
        if provider in cache:
            return cache[provider]
        kwargs: dict[str, Any] = {}
        for pname, sub in _provider_params(provider, "dependency").items():
            kwargs[pname] = ctx if sub is None else await value(sub)
        if inspect.isasyncgenfunction(provider):
            got = await stack.enter_async_context(
                contextlib.asynccontextmanager(provider)(**kwargs)
            )
        elif inspect.isgeneratorfunction(provider):
            got = stack.enter_context(contextlib.contextmanager(provider)(**kwargs))
        else:
            got = provider(**kwargs)
            if inspect.isawaitable(got):
                got = await got
        cache[provider] = got
        return got

    return {name: await value(dep) for name, dep in dependencies.items()}


Lifespan = Callable[[], AbstractAsyncContextManager[Any]]
"""``app.worker(lifespan=...)``: called once, entered before the worker registers."""


def lifespan_manager(lifespan: Any, what: str) -> Lifespan | None:
    """The lifespan as a factory of async context managers; DeclarationError otherwise."""
    if lifespan is None:
        return None
    if inspect.isasyncgenfunction(lifespan):
        gen_fn: Callable[[], AsyncIterator[Any]] = lifespan
        return contextlib.asynccontextmanager(gen_fn)
    if callable(lifespan):
        return typing.cast(Lifespan, lifespan)
    raise DeclarationError(
        f"{what}: lifespan takes a function decorated with @asynccontextmanager (or an async "
        f"generator function), got {lifespan!r}"
    )


async def enter_lifespan(lifespan: Lifespan | None, stack: AsyncExitStack, what: str) -> Any:
    """Enters the lifespan on ``stack``; returns what it yields (None without one)."""
    if lifespan is None:
        return None
    manager = lifespan()
    if not isinstance(manager, AbstractAsyncContextManager) and not hasattr(manager, "__aenter__"):
        raise DeclarationError(
            f"{what}: lifespan() must return an async context manager (decorate it with "
            f"@asynccontextmanager), got {manager!r}"
        )
    try:
        return await stack.enter_async_context(manager)
    except Exception as exc:
        raise LifespanError(
            f"{what}: the lifespan failed to start, so the worker stops before it "
            f"registers: {type(exc).__name__}: {exc}"
        ) from exc
