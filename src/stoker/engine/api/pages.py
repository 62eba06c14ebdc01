"""Keyset pagination of run lists: the page size limit and the opaque cursor.

A cursor names the last run of a page by ``(created_at, run id)``, the key the list
statements order by; it is base64 of JSON so that clients treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from stoker.errors import InvalidRequestError

MAX_PAGE = 500


def encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    """An opaque cursor naming the last run of a page."""
    raw = json.dumps([created_at.isoformat(), str(run_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, run_id) of a cursor; InvalidRequestError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return at, uuid.UUID(run_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            "query parameter 'cursor' is not a cursor this API returned "
            "(pass next_cursor from the previous page unchanged)"
        ) from exc


def aware(value: datetime | None) -> datetime | None:
    """Timestamps without a zone are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
