"""The dashboard's pages: each module here with a ``router``
(:class:`~stoker.engine.dashboard.core.PageRouter`) is served under ``/ui``
(see :func:`stoker.engine.dashboard.page_routers` and docs/dashboard.md)."""
