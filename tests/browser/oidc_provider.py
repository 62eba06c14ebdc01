"""A tiny OpenID Connect provider for tests: a real HTTP server on 127.0.0.1 that serves
discovery, an authorization page (a form asking for an email), a token endpoint that
checks the client secret, the code, the redirect URI and the PKCE verifier, and issues ID
tokens signed with RS256 by a key it publishes at ``/jwks``.

``sign_with_other_key`` makes it sign with a key it does not publish (a forged token);
``verified = False`` makes it say ``email_verified: false``; ``alg="ES256"`` makes it sign
with a P-256 key instead.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class Grant:
    email: str
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str


@dataclass
class TinyProvider:
    """The provider: start() serves it on a free port; issuer is its URL."""

    client_id: str = "stoker-dashboard"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    sign_with_other_key: bool = False
    verified: bool = True
    alg: str = "RS256"
    token_requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _grants: dict[str, Grant] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = secrets.token_hex(4)

    @property
    def issuer(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TinyProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, doc: Any) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json")

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif url.path == "/jwks":
                    self._json(200, provider.jwks())
                elif url.path == "/authorize":
                    self._send(200, provider.login_page(query), "text/html; charset=utf-8")
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/authorize":
                    code = provider.approve(form)
                    target = (
                        form["redirect_uri"]
                        + "?"
                        + urllib.parse.urlencode({"code": code, "state": form["state"]})
                    )
                    self._send(303, b"", "text/plain", location=target)
                elif url.path == "/token":
                    status, doc = provider.token(form, self.headers.get("authorization", ""))
                    self._json(status, doc)
                else:
                    self._json(404, {"error": "not_found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict[str, Any]:
        if self.alg == "ES256":
            point = self.ec_key.public_key().public_numbers()
            return {
                "keys": [
                    {
                        "kty": "EC",
                        "kid": self.kid,
                        "crv": "P-256",
                        "x": b64url(point.x.to_bytes(32, "big")),
                        "y": b64url(point.y.to_bytes(32, "big")),
                    }
                ]
            }
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": self.kid,
                    "alg": "RS256",
                    "use": "sig",
                    "n": _int_b64(numbers.n),
                    "e": _int_b64(numbers.e),
                }
            ]
        }

    def login_page(self, query: dict[str, str]) -> bytes:
        """The provider's sign-in form; the request's parameters ride along hidden."""
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return b"<p>unknown client</p>"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return b"<p>PKCE is required</p>"
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items()
        )
        return (
            "<!doctype html><title>Test IdP</title><h1>Test IdP</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label for="email">Your email</label><input id="email" name="email">'
            '<button type="submit">Continue</button></form>'
        ).encode()

    def approve(self, form: dict[str, str]) -> str:
        code = secrets.token_urlsafe(16)
        self._grants[code] = Grant(
            form["email"],
            form["client_id"],
            form["redirect_uri"],
            form.get("nonce", ""),
            form["code_challenge"],
        )
        return code

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": hashlib.sha256(grant.email.encode()).hexdigest()[:16],
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            "email": grant.email,
            "email_verified": self.verified,
        }
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "id_token": self.sign(claims),
        }

    def sign(self, claims: dict[str, Any], **header_fields: Any) -> str:
        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **header_fields}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        if self.alg == "ES256":
            der = self.ec_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        key = self.other_key if self.sign_with_other_key else self.key
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)
