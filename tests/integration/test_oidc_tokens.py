"""The ID token checks of the dashboard's OpenID Connect sign-in, against a small provider
served over HTTP on 127.0.0.1 (tests/browser/oidc_provider.py): the signature with the
provider's published key, the algorithm, issuer, audience, expiry and nonce."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from stoker.engine.dashboard.oidc import OidcProvider, OidcSettings, Pending, b64url
from stoker.errors import AuthenticationError
from tests.browser.oidc_provider import TinyProvider


@pytest.fixture(scope="module")
def idp() -> Iterator[TinyProvider]:
    provider = TinyProvider().start()
    yield provider
    provider.stop()


def _oidc(idp: TinyProvider, **settings: Any) -> OidcProvider:
    return OidcProvider(OidcSettings(issuer=idp.issuer, client_id=idp.client_id, **settings))


def _claims(idp: TinyProvider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": idp.issuer,
        "aud": idp.client_id,
        "sub": "s1",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        "email": "ada@example.test",
        **changes,
    }


async def test_a_good_token_is_accepted_and_names_its_email(idp: TinyProvider) -> None:
    oidc = _oidc(idp)
    claims = await oidc.verify(idp.sign(_claims(idp)), "n-1")
    assert oidc.email(claims) == "ada@example.test"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aud": "someone-else"}, "meant for another client"),
        ({"iss": "https://evil.example"}, "issued by another issuer"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"nonce": "n-2"}, "nonce is not this sign-in's"),
        ({"aud": ["stoker-dashboard", "other"]}, "issued to another party"),
    ],
)
async def test_a_token_with_bad_claims_is_refused(
    idp: TinyProvider, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message):
        await _oidc(idp).verify(idp.sign(_claims(idp, **changes)), "n-1")


async def test_forged_and_unsigned_tokens_are_refused(idp: TinyProvider) -> None:
    oidc = _oidc(idp)
    good = idp.sign(_claims(idp))
    head, body, _sig = good.split(".")
    with pytest.raises(AuthenticationError, match="algorithm 'none' is not accepted"):
        await oidc.verify(b64url(b'{"alg":"none"}') + f".{body}.", "n-1")
    with pytest.raises(AuthenticationError, match="algorithm 'HS256' is not accepted"):
        await oidc.verify(b64url(b'{"alg":"HS256"}') + f".{body}.c2ln", "n-1")
    tampered = b64url(b'{"email":"mallory@example.test"}')
    with pytest.raises(AuthenticationError, match="signature does not verify"):
        await oidc.verify(f"{head}.{tampered}.{_sig}", "n-1")
    idp.sign_with_other_key = True
    try:
        with pytest.raises(AuthenticationError, match="signature does not verify"):
            await oidc.verify(idp.sign(_claims(idp)), "n-1")
    finally:
        idp.sign_with_other_key = False
    with pytest.raises(AuthenticationError, match="does not publish"):
        await oidc.verify(idp.sign(_claims(idp), kid="unknown"), "n-1")
    with pytest.raises(AuthenticationError, match="not a signed JWT"):
        await oidc.verify("not-a-token", "n-1")


async def test_the_email_must_be_there_and_not_unverified(idp: TinyProvider) -> None:
    oidc = _oidc(idp, email_claim="upn")
    with pytest.raises(AuthenticationError, match="no 'upn' claim"):
        oidc.email(_claims(idp))
    assert oidc.email(_claims(idp, upn="ada@corp.test")) == "ada@corp.test"
    with pytest.raises(AuthenticationError, match="not verified"):
        _oidc(idp).email(_claims(idp, email_verified=False))


async def test_es256_tokens_verify_with_an_ec_key() -> None:
    provider = TinyProvider(alg="ES256").start()
    try:
        claims = await _oidc(provider).verify(provider.sign(_claims(provider)), "n-1")
        assert claims["email"] == "ada@example.test"
    finally:
        provider.stop()


async def test_the_authorization_request_carries_state_nonce_and_an_s256_challenge(
    idp: TinyProvider,
) -> None:
    pending = Pending.new("/ui/runs")
    url = await _oidc(idp).authorize_url("http://dash.test/ui/login/oidc/callback", pending)
    assert url.startswith(idp.issuer + "/authorize?")
    for part in (
        f"state={pending.state}",
        f"nonce={pending.nonce}",
        f"code_challenge={pending.challenge}",
        "code_challenge_method=S256",
        "response_type=code",
    ):
        assert part in url
    assert pending.verifier not in url
    assert Pending.from_cookie(pending.cookie()) == pending
    assert Pending.from_cookie("garbage") is None
