"""The signature of HTTP push deliveries (stoker/_core/push.py), as engine and SDK use it."""

from __future__ import annotations

from stoker._core.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, check, signed_headers

SECRET = "a-secret-of-sixteen-or-more"
BODY = b'{"task_id": 1}'


def test_a_fresh_signature_holds() -> None:
    assert check(SECRET, signed_headers(SECRET, BODY), BODY) is None


def test_another_secret_body_or_time_is_refused() -> None:
    assert check(SECRET, signed_headers("another-secret-entirely", BODY), BODY) is not None
    assert check(SECRET, signed_headers(SECRET, BODY), BODY + b" ") is not None
    headers = signed_headers(SECRET, BODY, now=1_000_000)
    assert check(SECRET, headers, BODY, now=1_000_000 + 299) is None
    assert check(SECRET, headers, BODY, now=1_000_000 + 301) == (
        "the timestamp is more than 300 s away from this clock"
    )
    assert check(SECRET, headers, BODY, now=1_000_000 - 301) is not None


def test_a_request_without_both_headers_or_with_a_bad_timestamp_is_refused() -> None:
    good = signed_headers(SECRET, BODY)
    assert check(SECRET, {}, BODY) == "the request is not signed"
    assert check(SECRET, {SIGNATURE_HEADER: good[SIGNATURE_HEADER]}, BODY) is not None
    assert check(SECRET, {**good, TIMESTAMP_HEADER: "soon"}, BODY) == (
        "the timestamp is not a number"
    )
