"""Our Standard Webhooks signer against the reference implementation (`standardwebhooks`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audit_service.kit import webhooks

# The spec's own example (standard-webhooks/spec, "Signature scheme").
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_example_signs_to_its_published_signature() -> None:
    assert webhooks.signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_the_reference_implementation_accepts_our_headers() -> None:
    secret = webhooks.new_secret()
    body = b'{"event":"alert.opened","id":7}'
    headers = webhooks.sign_headers([secret], "msg_1", body)
    assert Webhook(secret).verify(body, headers) == {"event": "alert.opened", "id": 7}


def test_during_rotation_either_secret_verifies() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    body = b"[]"
    headers = webhooks.sign_headers([old, new], "msg_2", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    webhooks.verify([new], headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


def test_we_verify_what_the_reference_implementation_signs() -> None:
    secret = webhooks.new_secret()
    now = int(time.time())
    sig = Webhook(secret).sign("msg_3", datetime.fromtimestamp(now, UTC), '{"a":1}')
    headers = {"webhook-id": "msg_3", "webhook-timestamp": str(now), "webhook-signature": sig}
    webhooks.verify([secret], headers, b'{"a":1}')
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify([secret], headers, b'{"a":2}')


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-timestamp": str(int(time.time()) - 3600)},
        {"webhook-timestamp": "soon"},
        {"webhook-id": "msg_other"},
        {"webhook-signature": "v2,abc"},
        {"webhook-signature": ""},
    ],
)
def test_a_changed_or_stale_request_is_refused(change: dict[str, str]) -> None:
    secret = webhooks.new_secret()
    headers = webhooks.sign_headers([secret], "msg_4", b"{}") | change
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify([secret], headers, b"{}")


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64", "whsec_c2hvcnQ="]
)
def test_a_malformed_secret_is_refused_without_quoting_it(secret: str) -> None:
    with pytest.raises(webhooks.InvalidSecret) as caught:
        webhooks.signature(secret, "m", 1, b"")
    assert secret not in str(caught.value)
