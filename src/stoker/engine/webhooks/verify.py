"""How a webhook authenticates a request: the kinds of credential, checked in constant time.

* ``HMAC`` — a header carries the HMAC of the raw body under the shared secret (hex or
  base64, after an optional prefix such as ``sha256=``).
* ``STRIPE`` — ``Stripe-Signature: t=<unix time>,v1=<hex>``: the HMAC-SHA256 of
  ``"<t>.<body>"``; a timestamp further than the tolerance from now is a replay.
* ``GITHUB`` — ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the body.
* ``SLACK`` — ``X-Slack-Signature: v0=<hex>``, the HMAC-SHA256 of ``"v0:<t>:<body>"`` where
  ``t`` is ``X-Slack-Request-Timestamp``; a stale timestamp is a replay, as for Stripe.
* ``BASIC`` — ``Authorization: Basic`` with the user name and password.
* ``API_KEY`` — a header carries the key itself.

A request without the credential is refused with :class:`WebhookUnauthorized` (401), one
with a wrong credential or a stale timestamp with :class:`WebhookForbidden` (403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from stoker.errors import InvalidRequestError, WebhookForbidden, WebhookUnauthorized

KINDS = ("HMAC", "STRIPE", "GITHUB", "SLACK", "BASIC", "API_KEY")
ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
ENCODINGS = ("hex", "base64")
DEFAULT_TOLERANCE_S = 300
MAX_TOLERANCE_S = 86_400
SLACK_TIMESTAMP = "X-Slack-Request-Timestamp"
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """A webhook's authentication; ``secret`` is the HMAC secret, Basic password or API key
    (the only field stored encrypted), the rest is :meth:`options`."""

    kind: str
    secret: str
    header: str = ""
    algorithm: str = ""
    encoding: str = ""
    prefix: str = ""
    username: str = ""
    tolerance_s: int = 0

    def checked(self, what: str) -> AuthSpec:
        """This spec with the preset's fixed parts filled in; InvalidRequestError naming
        the field that cannot work."""
        kind = self.kind.upper()
        if kind not in KINDS:
            raise InvalidRequestError(
                f"{what}: unknown auth kind {self.kind!r}; use one of {', '.join(KINDS)}"
            )
        if not self.secret:
            field = {"BASIC": "password", "API_KEY": "key"}.get(kind, "secret")
            raise InvalidRequestError(f"{what}: the {field} is empty")
        if kind in ("STRIPE", "SLACK"):
            tolerance = self.tolerance_s or DEFAULT_TOLERANCE_S
            if not 0 < tolerance <= MAX_TOLERANCE_S:
                raise InvalidRequestError(
                    f"{what}: the tolerance must be 1 to {MAX_TOLERANCE_S} seconds, got {tolerance}"
                )
            if kind == "SLACK":
                return AuthSpec(
                    kind, self.secret, "X-Slack-Signature", "sha256", "hex", "v0=", "", tolerance
                )
            return AuthSpec(
                kind, self.secret, "Stripe-Signature", "sha256", "hex", "", "", tolerance
            )
        if kind == "GITHUB":
            return AuthSpec(kind, self.secret, "X-Hub-Signature-256", "sha256", "hex", "sha256=")
        if kind == "BASIC":
            if not self.username or ":" in self.username:
                raise InvalidRequestError(f"{what}: Basic needs a user name without ':'")
            return AuthSpec(kind, self.secret, "Authorization", username=self.username)
        if not _HEADER.match(self.header):
            raise InvalidRequestError(f"{what}: {self.header!r} is not an HTTP header name")
        if kind == "API_KEY":
            return AuthSpec(kind, self.secret, self.header)
        algorithm = (self.algorithm or "sha256").lower()
        encoding = (self.encoding or "hex").lower()
        if algorithm not in ALGORITHMS:
            raise InvalidRequestError(
                f"{what}: unknown HMAC algorithm {self.algorithm!r}; use one of "
                f"{', '.join(ALGORITHMS)}"
            )
        if encoding not in ENCODINGS:
            raise InvalidRequestError(
                f"{what}: unknown signature encoding {self.encoding!r}; use hex or base64"
            )
        return AuthSpec(kind, self.secret, self.header, algorithm, encoding, self.prefix)

    def options(self) -> dict[str, Any]:
        """What is stored in clear: everything but the secret, set fields only."""
        return {k: v for k, v in asdict(self).items() if v and k not in ("kind", "secret")}

    @classmethod
    def stored(cls, kind: str, options: Mapping[str, Any], secret: str) -> AuthSpec:
        """The spec of a stored webhook."""
        return cls(kind, secret, **dict(options))


def verify(auth: AuthSpec, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Returns when the request carries the right credential; raises
    :class:`WebhookUnauthorized` or :class:`WebhookForbidden` otherwise. ``headers`` have
    lower-case names."""
    given = headers.get(auth.header.lower())
    if not given:
        raise WebhookUnauthorized(f"the request has no {auth.header} header")
    if auth.kind == "BASIC":
        _basic(auth, given)
    elif auth.kind == "API_KEY":
        if not hmac.compare_digest(given.encode(), auth.secret.encode()):
            raise WebhookForbidden(f"the {auth.header} header does not hold the webhook's key")
    elif auth.kind == "STRIPE":
        _stripe(auth, given, body, now)
    elif auth.kind == "SLACK":
        _slack(auth, given, headers.get(SLACK_TIMESTAMP.lower(), ""), body, now)
    else:
        if not given.startswith(auth.prefix):
            raise WebhookForbidden(f"the {auth.header} header does not start with {auth.prefix!r}")
        expected = _digest(auth, body)
        if not _same_signature(given[len(auth.prefix) :].strip(), expected, auth.encoding):
            raise WebhookForbidden(f"the signature in {auth.header} does not match the body")


def _digest(auth: AuthSpec, message: bytes) -> bytes:
    return hmac.new(auth.secret.encode(), message, ALGORITHMS[auth.algorithm]).digest()


def _same_signature(given: str, expected: bytes, encoding: str) -> bool:
    """Whether ``given`` (encoded) is ``expected``, compared in constant time."""
    try:
        raw = bytes.fromhex(given) if encoding == "hex" else base64.b64decode(given, validate=True)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(raw, expected)


def _basic(auth: AuthSpec, given: str) -> None:
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "basic":
        raise WebhookUnauthorized("the Authorization header is not Basic")
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise WebhookForbidden("the Basic credentials do not decode") from None
    # Both compared, always: the time taken does not say which one was wrong.
    same_user = hmac.compare_digest(user.encode(), auth.username.encode())
    same_password = hmac.compare_digest(password.encode(), auth.secret.encode())
    if not (sep and same_user and same_password):
        raise WebhookForbidden("wrong user name or password")


def _fresh(auth: AuthSpec, header: str, timestamp: str, now: float) -> None:
    """Refuses a signed timestamp further than the tolerance from ``now`` (a replay)."""
    age = now - int(timestamp)
    if abs(age) > auth.tolerance_s:
        raise WebhookForbidden(
            f"the {header} timestamp is {age:.0f}s from now, outside the tolerance of "
            f"{auth.tolerance_s}s: refused as a replay"
        )


def _slack(auth: AuthSpec, given: str, timestamp: str, body: bytes, now: float) -> None:
    if not timestamp.isdigit():
        raise WebhookUnauthorized(f"the request has no {SLACK_TIMESTAMP} header")
    _fresh(auth, SLACK_TIMESTAMP, timestamp, now)
    expected = _digest(auth, b"v0:" + timestamp.encode() + b":" + body)
    if not given.startswith("v0=") or not _same_signature(given[3:], expected, "hex"):
        raise WebhookForbidden(f"the signature in {auth.header} does not match the body")


def _stripe(auth: AuthSpec, given: str, body: bytes, now: float) -> None:
    timestamp = ""
    signatures: list[str] = []
    for part in given.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if not timestamp.isdigit() or not signatures:
        raise WebhookForbidden(f"the {auth.header} header has no t=... and v1=... parts")
    _fresh(auth, auth.header, timestamp, now)
    expected = _digest(auth, timestamp.encode() + b"." + body)
    # Every v1 signature is compared (a secret being rolled signs with both).
    matches = [_same_signature(s, expected, "hex") for s in signatures]
    if not any(matches):
        raise WebhookForbidden(f"no v1 signature in {auth.header} matches the body")


__all__ = [
    "ALGORITHMS",
    "DEFAULT_TOLERANCE_S",
    "ENCODINGS",
    "KINDS",
    "MAX_TOLERANCE_S",
    "AuthSpec",
    "WebhookForbidden",
    "WebhookUnauthorized",
    "verify",
]
