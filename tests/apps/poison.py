"""Tasks that report what the database cannot store, for the bad-input tests.

``declare(app)`` puts the tasks on ``app``; the worker processes use the module's ``app``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stoker import Context, Stoker


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def echo(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Returns ``say``; with ``nul`` a NUL character in it, with ``deep`` nested 200
        levels (neither can be stored)."""
        say = str(input.get("say", ""))
        if input.get("nul"):
            return {"echo": say + "\x00"}
        if input.get("deep"):
            value: Any = say
            for _ in range(200):
                value = [value]
            return {"echo": value}
        return {"echo": say}

    @app.task()
    async def fail(input: dict[str, Any], ctx: Context) -> None:
        """Raises with ``say`` as the message; with ``nul`` a NUL character in it."""
        raise RuntimeError(str(input.get("say", "")) + ("\x00" if input.get("nul") else ""))

    @app.task()
    def nap(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Waits until the file ``wait_for`` exists, then creates ``done`` and returns."""
        while not Path(input["wait_for"]).exists():
            time.sleep(0.05)
        Path(input["done"]).touch()
        return {"napped": True}

    return app


app = declare(Stoker())
