"""Child runs: runs started from inside a running task.

A task run started from inside a running task (``await child.aio_run(x)``, ``run``,
``run_no_wait``, ``run_many``, and the same on a workflow) is a *child* of that task. The
worker runtime sets the running task's :class:`~stoker.Context` in a contextvar
(:data:`~stoker._sdk.context.current_context`), so the ordinary SDK calls know their
parent. Each spawn takes the next child index of the attempt (``run_many`` takes one per
input, in order), so a retried parent that spawns the same way gets its existing children
back, finished or not; ``child_key`` names a child explicitly instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stoker._core.wire import encode_json, message_limit, split_batches
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.calls import request_key
from stoker._sdk.context import Context

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child to spawn: a task or a workflow (by name), its JSON input and options."""

    task_name: str
    workflow_name: str
    input: bytes
    options: Mapping[str, Any]


def _spawn_requests(
    connection: Connection, ctx: Context, children: Sequence[ChildSpec]
) -> list[wpb.SpawnChildrenRequest]:
    """The children in requests that fit the engine's message limit (their child indexes
    are taken up front, so a retried parent finds the same children however they were
    split)."""
    items = _spawn_request(ctx, children).items
    limit = message_limit(connection.max_payload_bytes)
    return [
        wpb.SpawnChildrenRequest(
            parent_task_id=ctx.task_id,
            parent_attempt=ctx.attempt,
            items=batch,
            request_key=request_key(),
        )
        for batch in split_batches(list(items), limit, len(items) or 1)
    ]


def _spawn_request(ctx: Context, children: Sequence[ChildSpec]) -> wpb.SpawnChildrenRequest:
    items = []
    first = ctx.state.take_child_indexes(len(children))
    for n, child in enumerate(children):
        metadata = {**ctx.additional_metadata, **(child.options.get("additional_metadata") or {})}
        items.append(
            wpb.ChildSpawn(
                task_name=child.task_name,
                workflow_name=child.workflow_name,
                input=child.input,
                additional_metadata=encode_json(
                    metadata, f"child {child.task_name or child.workflow_name!r}: metadata"
                ),
                priority=int(child.options.get("priority") or 0),
                child_index=first + n,
                child_key=str(child.options.get("child_key") or ""),
                sticky=bool(child.options.get("sticky")),
            )
        )
    return wpb.SpawnChildrenRequest(
        parent_task_id=ctx.task_id, parent_attempt=ctx.attempt, items=items
    )


def spawn(connection: Connection, ctx: Context, children: Sequence[ChildSpec]) -> list[str]:
    """Creates children of the running task ``ctx`` (a blocking call); their run ids."""
    ids: list[str] = []
    for req in _spawn_requests(connection, ctx, children):
        ids += connection.calls.spawn_children(req).run_ids
    return ids


async def aio_spawn(
    connection: Connection, ctx: Context, children: Sequence[ChildSpec]
) -> list[str]:
    ids: list[str] = []
    for req in _spawn_requests(connection, ctx, children):
        resp = await connection.calls.aio_spawn_children(req)
        ids += resp.run_ids
    return ids


__all__ = ["ChildSpec", "aio_spawn", "spawn"]
