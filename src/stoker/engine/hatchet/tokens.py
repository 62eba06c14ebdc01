"""Hatchet-style tokens: a JWT whose claims Hatchet's SDK reads, carrying a Stoker API token.

Hatchet's SDK never verifies its token; it only decodes the middle part for ``sub`` (the
tenant, used in REST paths), ``server_url`` and ``grpc_broadcast_address`` (where to
connect when ``HATCHET_CLIENT_HOST_PORT`` is not set). So a Stoker-issued Hatchet token is
``header.claims.signature`` where:

* the claims hold those three fields plus ``stoker_token``, an ordinary Stoker API token
  (``stk_…``, stored hashed like any other; revoking it revokes the Hatchet token);
* the signature is HMAC-SHA256 of ``header.claims`` keyed with that API token, so claims
  edited after issue (another tenant's ``sub``, say) are refused.

The front door checks the shape, the claims and the signature, then authenticates the
embedded API token with :class:`~stoker.engine.auth.TokenAuth` (cached, revocable, with
expiry): the call acts for that token's tenant, whose id the signed ``sub`` carries. Every
refusal says why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from stoker.errors import AuthenticationError

_HEADER = {"alg": "HS256", "typ": "JWT", "kid": "stoker"}
_MAX_CHARS = 4096
CLAIMS = ("sub", "server_url", "grpc_broadcast_address", "stoker_token")


@dataclass(frozen=True, slots=True)
class HatchetClaims:
    """What a Hatchet token says: the tenant, where to connect, and the API token inside."""

    sub: str
    server_url: str
    grpc_broadcast_address: str
    stoker_token: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str, what: str) -> bytes:
    try:
        return base64.b64decode(part + "=" * (-len(part) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError(f"malformed Hatchet token: its {what} is not base64url") from None


def _sign(signed: str, key: str) -> str:
    return _b64(hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest())


def encode(claims: HatchetClaims) -> str:
    """The Hatchet token carrying ``claims``."""
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(
        json.dumps({name: getattr(claims, name) for name in CLAIMS}, separators=(",", ":")).encode()
    )
    signed = f"{head}.{body}"
    return f"{signed}.{_sign(signed, claims.stoker_token)}"


def decode(token: str) -> HatchetClaims:
    """The claims of a Hatchet token issued by Stoker; AuthenticationError saying what is
    wrong with a malformed one (its signature included, not its API token's validity)."""
    if len(token) > _MAX_CHARS:
        raise AuthenticationError(f"malformed Hatchet token: longer than {_MAX_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError(
            f"malformed Hatchet token: a JWT has 3 dot-separated parts, this one has {len(parts)}"
            " (create one with `stoker token create --hatchet`)"
        )
    head_part, body_part, signature = parts
    try:
        header = json.loads(_unb64(head_part, "header"))
        body = json.loads(_unb64(body_part, "claims part"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AuthenticationError("malformed Hatchet token: a part is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise AuthenticationError("malformed Hatchet token: the header must name alg HS256")
    if not isinstance(body, dict):
        raise AuthenticationError("malformed Hatchet token: the claims are not a JSON object")
    missing = [c for c in CLAIMS if not isinstance(body.get(c), str) or not body[c]]
    if missing:
        raise AuthenticationError(
            f"malformed Hatchet token: claim(s) {', '.join(missing)} missing; Stoker accepts "
            "only Hatchet tokens it issued (`stoker token create --hatchet`)"
        )
    claims = HatchetClaims(*(str(body[c]) for c in CLAIMS))
    expected = _sign(f"{head_part}.{body_part}", claims.stoker_token)
    if not hmac.compare_digest(expected, signature):
        raise AuthenticationError(
            "malformed Hatchet token: its signature does not match its claims (edited after issue?)"
        )
    return claims
