"""Serves the REST API (and later the dashboard) with uvicorn inside the engine's loop,
over https when the engine has a TLS certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from stoker.engine.service import Service

log = logging.getLogger("stoker.engine.api")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the engine."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiService(Service):
    """Runs a uvicorn server for ``app`` until stopped."""

    name = "api"

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        *,
        cert_file: str = "",
        key_file: str = "",
        client_ca_file: str = "",
    ) -> None:
        # With a certificate the API is served over https; with a client CA too, a client
        # must present a certificate signed by it (as on the gRPC port).
        tls: dict[str, Any] = {}
        if cert_file:
            tls = {"ssl_certfile": cert_file, "ssl_keyfile": key_file}
            if client_ca_file:
                tls |= {"ssl_ca_certs": client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            **tls,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._server.serve(), name="stoker-api")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises why it could not start
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
