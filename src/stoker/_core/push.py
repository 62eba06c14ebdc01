"""What an HTTP push delivery looks like on the wire: both the engine (which signs) and
the SDK's ASGI endpoint (which checks) follow these rules (docs/http-workers.md).

A delivery is a POST whose body is JSON; it carries two headers:

* ``Stoker-Timestamp``: Unix seconds when the engine signed it;
* ``Stoker-Signature``: ``v1=`` and the hex HMAC-SHA256, under the endpoint's secret, of
  ``<timestamp>.<body>``.

The endpoint refuses a signature that does not match, and one whose timestamp is more
than :data:`REPLAY_WINDOW_S` away from its own clock (a captured request replayed later).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "stoker-timestamp"
SIGNATURE_HEADER = "stoker-signature"
REPLAY_WINDOW_S = 300
"""How far a delivery's timestamp may be from the endpoint's clock, either way."""

RUN_PATH = "/run"
CANCEL_PATH = "/cancel"
MIN_SECRET_CHARS = 16


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Stoker-Signature`` value of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` now."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}


def check(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    window_s: float = REPLAY_WINDOW_S,
) -> str | None:
    """Why the delivery is refused, or None when its signature holds and is fresh."""
    raw_ts = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not raw_ts or not given:
        return "the request is not signed"
    try:
        ts = int(raw_ts)
    except ValueError:
        return "the timestamp is not a number"
    clock = time.time() if now is None else now
    if abs(clock - ts) > window_s:
        return f"the timestamp is more than {window_s:g} s away from this clock"
    if not hmac.compare_digest(signature(secret, ts, body), given):
        return "the signature does not match"
    return None
