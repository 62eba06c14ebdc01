"""Event keys and the patterns tasks and workflows subscribe with (``on_events``).

An event key is 1 to 500 characters (no NUL). Keys are read as segments separated by
``:`` (``"order:created"`` has two). A pattern is a key whose segments may be wildcards:

* ``*`` stands for exactly one segment, whatever it holds (``"order:*"`` matches
  ``"order:created"`` but neither ``"order"`` nor ``"order:created:eu"``);
* ``**``, only as the last segment, stands for one or more segments (``"order:**"``
  matches ``"order:created"`` and ``"order:created:eu"``, not ``"order"``);
* any other segment matches itself exactly (no partial wildcards such as ``"ord*"``).

Matching is case-sensitive. The same rules run in the SDK (a bad pattern fails at
declaration) and in the engine (which matches pushed keys against them).
"""

from __future__ import annotations

from functools import lru_cache

MAX_KEY_LENGTH = 500
SEPARATOR = ":"

EVENT_ID_KEY = "stoker_event"
"""The additional-metadata key of an event-started run holding its event's id."""
EVENT_KEY_KEY = "stoker_event_key"
"""... and the event's key."""
FILTER_ID_KEY = "stoker_filter"
"""... and the id of the filter that let the run through (when one did)."""
FILTER_PAYLOAD_KEY = "stoker_filter_payload"
"""Where runs started by engines before migration 0030 carried their filter's payload: the
worker still takes it out of the metadata the task sees. The payload is now kept beside
the run (``run_filter_payload``) and sent with each assignment (``ctx.filter_payload``)."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid event key, or None."""
    if not isinstance(key, str) or not key:
        return "an event key must be a non-empty string"
    if len(key) > MAX_KEY_LENGTH:
        return f"an event key is at most {MAX_KEY_LENGTH} characters, got {len(key)}"
    if "\x00" in key:
        return "an event key cannot hold a NUL character"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subscription pattern, or None."""
    problem = key_problem(pattern)
    if problem is not None:
        return problem.replace("event key", "event pattern")
    segments = pattern.split(SEPARATOR)
    for n, segment in enumerate(segments):
        if segment == "**" and n != len(segments) - 1:
            return f"event pattern {pattern!r}: '**' may only be the last segment"
        if segment not in ("*", "**") and "*" in segment:
            return (
                f"event pattern {pattern!r}: a wildcard is a whole segment ('*' or '**'), "
                f"not part of one ({segment!r})"
            )
    return None


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split(SEPARATOR))


def matches(pattern: str, key: str) -> bool:
    """Whether the event key ``key`` matches the subscription ``pattern``."""
    if "*" not in pattern:
        return pattern == key
    want = _segments(pattern)
    have = key.split(SEPARATOR)
    if want[-1] == "**":
        if len(have) < len(want):
            return False
        have = have[: len(want) - 1]
        want = want[:-1]
    elif len(have) != len(want):
        return False
    return all(w == "*" or w == h for w, h in zip(want, have, strict=True))


__all__ = [
    "EVENT_ID_KEY",
    "EVENT_KEY_KEY",
    "FILTER_ID_KEY",
    "FILTER_PAYLOAD_KEY",
    "MAX_KEY_LENGTH",
    "key_problem",
    "matches",
    "pattern_problem",
]
