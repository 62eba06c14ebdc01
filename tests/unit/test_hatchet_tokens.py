"""Hatchet-style tokens (stoker.engine.hatchet.tokens): the claims Hatchet's SDK reads,
signed with the Stoker API token they carry, and every malformation refused with why."""

from __future__ import annotations

import base64
import json

import pytest

from stoker.engine.hatchet import tokens
from stoker.errors import AuthenticationError

CLAIMS = tokens.HatchetClaims(
    sub="0e4f9526-0000-4000-8000-000000000001",
    server_url="http://127.0.0.1:7078",
    grpc_broadcast_address="127.0.0.1:7079",
    stoker_token="stk_secret",
)


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_token_round_trips_and_the_sdk_can_read_its_claims() -> None:
    token = tokens.encode(CLAIMS)
    assert tokens.decode(token) == CLAIMS
    # What Hatchet's SDK does with it: decode the middle part without verifying.
    body = token.split(".")[1]
    read = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert read["sub"] == CLAIMS.sub
    assert read["grpc_broadcast_address"] == CLAIMS.grpc_broadcast_address


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("stk_plain", "3 dot-separated parts"),
        ("a.b.c.d", "this one has 4"),
        (f"{_b64({'alg': 'HS256'})}.%%%.x", "not base64url"),
        (f"{_b64({'alg': 'none'})}.{_b64({})}.x", "alg HS256"),
        (f"{_b64({'alg': 'HS256'})}.{_b64([1])}.x", "not a JSON object"),
        (f"{_b64({'alg': 'HS256'})}.{_b64({'sub': 's'})}.x", "server_url"),
        ("x" * 5000, "longer than"),
    ],
)
def test_malformed_tokens_are_refused_with_the_reason(token: str, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        tokens.decode(token)


def test_claims_edited_after_issue_break_the_signature() -> None:
    head, _, signature = tokens.encode(CLAIMS).split(".")
    edited = {name: getattr(CLAIMS, name) for name in tokens.CLAIMS} | {"sub": "other"}
    with pytest.raises(AuthenticationError, match="signature does not match"):
        tokens.decode(f"{head}.{_b64(edited)}.{signature}")
