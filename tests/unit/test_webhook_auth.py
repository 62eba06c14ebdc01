"""The pieces of incoming webhooks that need no engine: sealing secrets (AES-GCM, bound to
the webhook, readable under an old key during a rotation), the key settings, and the
signature checks of each auth kind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest

from stoker.config import EngineSettings
from stoker.engine.webhooks.secrets import SecretBox
from stoker.engine.webhooks.verify import (
    AuthSpec,
    WebhookForbidden,
    WebhookUnauthorized,
    verify,
)
from stoker.errors import ConfigError, InvalidRequestError

OLD, NEW = b"o" * 32, b"n" * 32


def test_a_sealed_secret_opens_only_for_its_webhook_and_under_a_known_key() -> None:
    hook, other = uuid.uuid4(), uuid.uuid4()
    box = SecretBox([OLD])
    sealed = box.seal("whsec_1", hook)
    assert b"whsec_1" not in sealed and box.open(sealed, hook) == "whsec_1"
    assert box.seal("whsec_1", hook) != sealed  # a fresh nonce each time
    with pytest.raises(ConfigError, match="does not decrypt"):
        box.open(sealed, other)  # copied to another webhook's row
    rotated = SecretBox([NEW, OLD])
    assert rotated.stale(sealed) and rotated.open(sealed, hook) == "whsec_1"
    assert not rotated.stale(rotated.seal("whsec_1", hook))
    with pytest.raises(ConfigError, match="STOKER_WEBHOOK_OLD_SECRET_KEYS"):
        SecretBox([NEW]).open(sealed, hook)
    with pytest.raises(ConfigError, match="STOKER_WEBHOOK_SECRET_KEY"):
        SecretBox([]).seal("x", hook)


def test_the_key_settings_are_checked() -> None:
    good = base64.b64encode(NEW).decode()
    settings = EngineSettings(database_url="postgresql://x/y", webhook_secret_key=good)
    assert settings.webhook_keys() == [NEW]
    with pytest.raises(ConfigError, match="32 random bytes"):
        EngineSettings(database_url="postgresql://x/y", webhook_secret_key="short").webhook_keys()
    with pytest.raises(ConfigError, match="needs STOKER_WEBHOOK_SECRET_KEY"):
        EngineSettings(database_url="postgresql://x/y", webhook_old_secret_keys=good).webhook_keys()


def _sig(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_each_kind_accepts_the_right_credential_and_refuses_others() -> None:
    body = b'{"a": 1}'
    hmac_auth = AuthSpec("HMAC", "s", "X-Sig").checked("w")
    verify(hmac_auth, {"x-sig": _sig("s", body)}, body, 0)
    with pytest.raises(WebhookForbidden):
        verify(hmac_auth, {"x-sig": _sig("t", body)}, body, 0)
    with pytest.raises(WebhookForbidden):
        verify(hmac_auth, {"x-sig": "not hex"}, body, 0)
    with pytest.raises(WebhookUnauthorized):
        verify(hmac_auth, {}, body, 0)

    github = AuthSpec("GITHUB", "s").checked("w")
    verify(github, {"x-hub-signature-256": "sha256=" + _sig("s", body)}, body, 0)

    stripe = AuthSpec("STRIPE", "s", tolerance_s=60).checked("w")
    header = f"t=1000,v1={_sig('s', b'1000.' + body)}"
    verify(stripe, {"stripe-signature": header}, body, 1030)
    with pytest.raises(WebhookForbidden, match="replay"):
        verify(stripe, {"stripe-signature": header}, body, 1061)

    slack = AuthSpec("SLACK", "s").checked("w")
    signed = {
        "x-slack-request-timestamp": "1000",
        "x-slack-signature": "v0=" + _sig("s", b"v0:1000:" + body),
    }
    verify(slack, signed, body, 1200)
    with pytest.raises(WebhookForbidden, match="replay"):
        verify(slack, signed, body, 1301)
    with pytest.raises(WebhookUnauthorized, match="X-Slack-Request-Timestamp"):
        verify(slack, {"x-slack-signature": signed["x-slack-signature"]}, body, 1000)

    basic = AuthSpec("BASIC", "pw", username="u").checked("w")
    token = base64.b64encode(b"u:pw").decode()
    verify(basic, {"authorization": f"Basic {token}"}, body, 0)
    with pytest.raises(WebhookForbidden):
        verify(basic, {"authorization": "Basic " + base64.b64encode(b"u:px").decode()}, body, 0)

    key = AuthSpec("API_KEY", "k", "X-Key").checked("w")
    verify(key, {"x-key": "k"}, body, 0)
    with pytest.raises(WebhookForbidden):
        verify(key, {"x-key": "K"}, body, 0)


def test_an_auth_that_cannot_work_is_refused_naming_the_field() -> None:
    for spec, problem in (
        (AuthSpec("MD5", "s"), "unknown auth kind"),
        (AuthSpec("HMAC", "", "X-Sig"), "secret is empty"),
        (AuthSpec("HMAC", "s", "bad header"), "not an HTTP header"),
        (AuthSpec("HMAC", "s", "X-Sig", "md5"), "algorithm"),
        (AuthSpec("HMAC", "s", "X-Sig", "sha256", "base32"), "encoding"),
        (AuthSpec("BASIC", "pw"), "user name"),
        (AuthSpec("API_KEY", "", "X-Key"), "key is empty"),
    ):
        with pytest.raises(InvalidRequestError, match=problem):
            spec.checked("webhook 'w'")
