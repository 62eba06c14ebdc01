"""Signing in to the dashboard through an OpenID Connect provider: the authorization code
flow with PKCE (S256), a state and a nonce, and the ID token's signature checked against
the provider's published keys.

Configured by environment variables (``STOKER_OIDC_*``, :class:`OidcSettings`); without
an issuer and a client id the dashboard offers passwords and links only. The provider's
discovery document (``{issuer}/.well-known/openid-configuration``) names its endpoints; its
keys (``jwks_uri``) are fetched once and again when a token names a key not seen yet.

The ID token is accepted when: its algorithm is RS256/384/512 or ES256/384 (never
``none`` or an HMAC one), its signature verifies with the provider's key of its ``kid``,
``iss`` is the configured issuer, ``aud`` holds the client id (and ``azp`` is it when
there are several audiences), it has not expired (60 s of clock skew allowed), and its
``nonce`` is the one this sign-in sent. The email claim (``email`` by default) names the
user: a dashboard user with that email signs in (any tenant: emails are unique), else —
when ``STOKER_OIDC_DEFAULT_ROLE`` is set — a user is created in ``STOKER_OIDC_TENANT``
with that role and no password; a token saying ``email_verified: false`` is refused.

HTTP calls to the provider use the standard library (in a thread), with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic_settings import BaseSettings, SettingsConfigDict

from stoker.errors import AuthenticationError

TIMEOUT_S = 10.0
LEEWAY_S = 60
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384")


class OidcSettings(BaseSettings):
    """The dashboard's OpenID Connect sign-in (environment variables ``STOKER_OIDC_*``)."""

    model_config = SettingsConfigDict(env_prefix="STOKER_OIDC_", extra="ignore")

    issuer: str = ""
    """The provider's issuer URL (``https://accounts.example.com``); empty: no OIDC."""
    client_id: str = ""
    client_secret: str = ""
    """Sent with HTTP Basic to the token endpoint; empty for a public client (PKCE only)."""
    scopes: str = "openid email profile"
    email_claim: str = "email"
    default_role: str = ""
    """The role of a user created at their first sign-in; empty: only existing users."""
    tenant: str = ""
    """The tenant (by name) that users created at their first sign-in join."""
    redirect_url: str = ""
    """The callback URL registered with the provider; empty: ``{this host}/ui/login/oidc/
    callback`` as the browser reached the dashboard."""
    name: str = "single sign-on"
    """What the sign-in button calls the provider."""

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(text: str) -> int:
    return int.from_bytes(_unb64(text), "big")


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in on its way through the provider (kept in a short-lived cookie)."""

    state: str
    nonce: str
    verifier: str
    next_url: str

    @classmethod
    def new(cls, next_url: str) -> Pending:
        return cls(
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),
            next_url,
        )

    @property
    def challenge(self) -> str:
        return b64url(hashlib.sha256(self.verifier.encode()).digest())

    def cookie(self) -> str:
        return b64url(json.dumps([self.state, self.nonce, self.verifier, self.next_url]).encode())

    @classmethod
    def from_cookie(cls, value: str) -> Pending | None:
        try:
            state, nonce, verifier, next_url = json.loads(_unb64(value))
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (state, nonce, verifier, next_url)):
            return None
        return cls(state, nonce, verifier, next_url)


def _fetch(request: urllib.request.Request) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", errors="replace")
        raise AuthenticationError(
            f"the sign-in provider answered {exc.code} at {request.full_url}: {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise AuthenticationError(
            f"the sign-in provider could not be reached at {request.full_url}: {exc}"
        ) from None


class OidcProvider:
    """One configured provider: its endpoints and keys (cached), and the checks."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._config: dict[str, Any] | None = None
        self._keys: dict[str, dict[str, Any]] = {}

    async def _get(self, url: str) -> Any:
        request = urllib.request.Request(url, headers={"accept": "application/json"})
        return await asyncio.to_thread(_fetch, request)

    async def config(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once)."""
        if self._config is None:
            issuer = self.settings.issuer.rstrip("/")
            found = await self._get(issuer + "/.well-known/openid-configuration")
            if not isinstance(found, dict) or found.get("issuer", "").rstrip("/") != issuer:
                raise AuthenticationError(
                    f"the discovery document of {issuer} names another issuer"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(found.get(key), str):
                    raise AuthenticationError(f"the discovery document of {issuer} has no {key}")
            self._config = found
        return self._config

    async def authorize_url(self, redirect_uri: str, pending: Pending) -> str:
        """Where the browser goes to sign in at the provider."""
        config = await self.config()
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.scopes,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pending.challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(config["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + query

    async def exchange(self, code: str, redirect_uri: str, pending: Pending) -> dict[str, Any]:
        """The claims of the ID token the provider gives for ``code``, checked."""
        config = await self.config()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
            "client_id": self.settings.client_id,
        }
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        }
        if self.settings.client_secret:
            pair = f"{urllib.parse.quote(self.settings.client_id, safe='')}:" + urllib.parse.quote(
                self.settings.client_secret, safe=""
            )
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        request = urllib.request.Request(
            config["token_endpoint"],
            data=urllib.parse.urlencode(form).encode(),
            headers=headers,
            method="POST",
        )
        answer = await asyncio.to_thread(_fetch, request)
        token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise AuthenticationError("the sign-in provider's answer has no ID token")
        return await self.verify(token, pending.nonce)

    async def _key(self, kid: str | None) -> dict[str, Any]:
        found = self._keys.get(kid or "")
        if found is None:
            jwks = await self._get((await self.config())["jwks_uri"])
            keys = jwks.get("keys") if isinstance(jwks, dict) else None
            self._keys = {str(k.get("kid", "")): k for k in keys or [] if isinstance(k, dict)}
            found = self._keys.get(kid or "")
            if found is None and kid is None and len(self._keys) == 1:
                found = next(iter(self._keys.values()))
        if found is None:
            raise AuthenticationError(
                f"the ID token names a key ({kid!r}) the provider does not publish"
            )
        return found

    async def verify(self, token: str, nonce: str) -> dict[str, Any]:
        """The claims of ``token`` once its signature and claims are checked."""
        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(body_b64))
            signature = _unb64(sig_b64)
        except ValueError:
            raise AuthenticationError("the ID token is not a signed JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AuthenticationError("the ID token is not a signed JWT")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthenticationError(f"the ID token's algorithm {alg!r} is not accepted")
        jwk = await self._key(header.get("kid"))
        _check_signature(jwk, str(alg), f"{head_b64}.{body_b64}".encode(), signature)
        self._check_claims(claims, nonce)
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        now = time.time()
        if str(claims.get("iss", "")).rstrip("/") != self.settings.issuer.rstrip("/"):
            raise AuthenticationError("the ID token was issued by another issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences:
            raise AuthenticationError("the ID token is meant for another client")
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise AuthenticationError("the ID token was issued to another party")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp + LEEWAY_S < now:
            raise AuthenticationError("the ID token has expired")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat - LEEWAY_S > now:
            raise AuthenticationError("the ID token was issued in the future")
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise AuthenticationError("the ID token's nonce is not this sign-in's")

    def email(self, claims: dict[str, Any]) -> str:
        """The email the claims name; AuthenticationError without one, or when the
        provider says it is not verified."""
        email = claims.get(self.settings.email_claim)
        if not isinstance(email, str) or not email:
            raise AuthenticationError(
                f"the ID token has no {self.settings.email_claim!r} claim to name a user by"
            )
        if claims.get("email_verified") is False:
            raise AuthenticationError(f"the provider has not verified the email {email}")
        return email


def _check_signature(jwk: dict[str, Any], alg: str, signed: bytes, signature: bytes) -> None:
    digest = _HASHES[alg[2:]]()
    try:
        if alg.startswith("RS"):
            if jwk.get("kty") != "RSA":
                raise AuthenticationError("the ID token's key is not an RSA key")
            rsa_key = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
            rsa_key.verify(signature, signed, padding.PKCS1v15(), digest)
        else:
            curve = _CURVES.get(str(jwk.get("crv")))
            if jwk.get("kty") != "EC" or curve is None:
                raise AuthenticationError("the ID token's key is not a P-256 or P-384 key")
            ec_key = ec.EllipticCurvePublicNumbers(
                _int(jwk["x"]), _int(jwk["y"]), curve()
            ).public_key()
            half = len(signature) // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            ec_key.verify(der, signed, ec.ECDSA(digest))
    except InvalidSignature:
        raise AuthenticationError("the ID token's signature does not verify") from None
    except (KeyError, ValueError, TypeError):
        raise AuthenticationError("the provider's key for the ID token is malformed") from None
