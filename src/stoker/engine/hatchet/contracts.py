"""Hatchet's wire messages and services, as the ``hatchet-sdk`` package generates them.

Stoker ships no copy of Hatchet's ``.proto`` files: the front door imports the generated
modules of the pinned ``hatchet-sdk`` (``pip install "stoker[hatchet]"``, docs/hatchet.md),
so its messages are byte-for-byte those the SDK sends. Importing a submodule runs the SDK
package's ``__init__``, which imports the whole SDK; its import-time deprecation warnings
are not the engine's to show.
"""

from __future__ import annotations

import warnings
from importlib import metadata

from stoker.errors import ConfigError

SDK_VERSION = "1.43.1"
"""The ``hatchet-sdk`` release whose protocol the front door speaks and is tested with."""

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from hatchet_sdk.contracts import dispatcher_pb2 as dispatcher
        from hatchet_sdk.contracts import dispatcher_pb2_grpc as dispatcher_grpc
        from hatchet_sdk.contracts import events_pb2 as events
        from hatchet_sdk.contracts import events_pb2_grpc as events_grpc
        from hatchet_sdk.contracts import workflows_pb2 as workflows
        from hatchet_sdk.contracts import workflows_pb2_grpc as workflows_grpc
        from hatchet_sdk.contracts.v1 import dispatcher_pb2 as v1_dispatcher
        from hatchet_sdk.contracts.v1 import dispatcher_pb2_grpc as v1_dispatcher_grpc
        from hatchet_sdk.contracts.v1 import workflows_pb2 as v1_workflows
        from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_workflows_grpc
        from hatchet_sdk.contracts.v1.shared import trigger_pb2 as trigger
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "STOKER_HATCHET_ENABLED=true needs the hatchet-sdk package "
        f"(pip install 'stoker[hatchet]' && pip install --no-deps hatchet-sdk=={SDK_VERSION}):"
        f" {exc}"
    ) from exc


def check_version() -> None:
    """ConfigError unless the installed ``hatchet-sdk`` is the release the front door speaks."""
    installed = metadata.version("hatchet-sdk")
    if installed != SDK_VERSION:
        raise ConfigError(
            f"the Hatchet front door speaks hatchet-sdk {SDK_VERSION}'s protocol, but "
            f"{installed} is installed: pip install --no-deps hatchet-sdk=={SDK_VERSION}"
        )


__all__ = [
    "SDK_VERSION",
    "check_version",
    "dispatcher",
    "dispatcher_grpc",
    "events",
    "events_grpc",
    "trigger",
    "v1_dispatcher",
    "v1_dispatcher_grpc",
    "v1_workflows",
    "v1_workflows_grpc",
    "workflows",
    "workflows_grpc",
]
