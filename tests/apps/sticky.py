"""Sticky children (tests/e2e/test_sticky_children.py): a parent spawns children that
prefer its worker and children that do not; each says which worker ran it. Two worker
processes serve this module's ``app``."""

from __future__ import annotations

import asyncio
from typing import Any

from stoker import Context, Stoker


def declare(app: Stoker) -> Stoker:
    @app.task(name="sticky_t_child")
    async def sticky_t_child(input: dict[str, Any], ctx: Context) -> str:
        await asyncio.sleep(0.05)
        return ctx.worker_id

    @app.task(name="sticky_t_parent")
    async def sticky_t_parent(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        n = int(input["n"])
        sticky = [sticky_t_child.aio_run({"i": i}, sticky=True) for i in range(n)]
        plain = [sticky_t_child.aio_run({"i": i}) for i in range(n)]
        return {
            "parent": ctx.worker_id,
            "sticky": list(await asyncio.gather(*sticky)),
            "plain": list(await asyncio.gather(*plain)),
        }

    return app


app = declare(Stoker())
