"""Standard Webhooks signatures, checked against the reference `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from infrastructure.secrets import SigningSecret
from infrastructure.signing import sign, signature_headers

BODY = b'{"type":"order.created","data":{"order_id":"ord_123","total":"19.99"}}'


def _headers(*secrets: SigningSecret) -> dict[str, str]:
    # The library rejects timestamps more than 5 minutes away from now.
    return signature_headers(
        secrets=list(secrets),
        msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        timestamp=int(time.time()),
        body=BODY,
    )


def test_signature_verifies_with_the_reference_library() -> None:
    # Given a secret and the headers we produce for a body
    secret = SigningSecret.generate()
    headers = _headers(secret)

    # When the subscriber verifies with the reference implementation
    payload = Webhook(secret.reveal()).verify(BODY, headers)

    # Then it accepts the delivery and hands back the parsed body
    assert payload == {"type": "order.created", "data": {"order_id": "ord_123", "total": "19.99"}}


def test_headers_carry_id_timestamp_and_one_signature_per_secret() -> None:
    # Given two secrets (an old one during rotation, then the new one)
    old, new = SigningSecret.generate(), SigningSecret.generate()

    # When we build the headers
    headers = signature_headers(
        secrets=[old, new], msg_id="msg_1", timestamp=1_700_000_000, body=BODY
    )

    # Then the three Standard Webhooks headers are there, signatures in the given order
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].split(" ") == [
        sign(secrets=[old], msg_id="msg_1", timestamp=1_700_000_000, body=BODY),
        sign(secrets=[new], msg_id="msg_1", timestamp=1_700_000_000, body=BODY),
    ]


@pytest.mark.parametrize("verifier", ["old", "new"])
def test_during_rotation_either_secret_alone_verifies(verifier: str) -> None:
    # Given a delivery signed with both the old and the new secret
    secrets = {"old": SigningSecret.generate(), "new": SigningSecret.generate()}
    headers = _headers(secrets["old"], secrets["new"])

    # When a subscriber that knows only one of them verifies
    payload = Webhook(secrets[verifier].reveal()).verify(BODY, headers, json_parse=False)

    # Then the delivery is accepted (verify returns None without raising)
    assert payload is None


def test_tampered_body_fails_verification() -> None:
    # Given headers signed for the original body
    secret = SigningSecret.generate()
    headers = _headers(secret)
    tampered = BODY.replace(b"19.99", b"0.01")

    # When / Then verifying them against a modified body fails
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret.reveal()).verify(tampered, headers)


def test_wrong_secret_fails_verification() -> None:
    # Given headers signed with one secret
    headers = _headers(SigningSecret.generate())

    # When / Then a subscriber holding another secret rejects them
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SigningSecret.generate().reveal()).verify(BODY, headers)


def test_known_answer_matches_an_independent_hmac() -> None:
    # Given a fixed secret, id, timestamp and body
    key = bytes(range(32))
    secret = SigningSecret.parse("whsec_" + base64.b64encode(key).decode())
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, b'{"test": 2432232314}'

    # When we sign
    signature = sign(secrets=[secret], msg_id=msg_id, timestamp=timestamp, body=body)

    # Then it is v1 + base64 HMAC-SHA256 of "id.timestamp.body" keyed by the decoded secret
    expected = hmac.new(
        key, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}', hashlib.sha256
    ).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()


def test_known_answer_from_the_standard_webhooks_spec() -> None:
    # Given the example secret, id, timestamp and body published with the specification
    secret = SigningSecret.parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, b'{"test": 2432232314}'

    # When we sign
    signature = sign(secrets=[secret], msg_id=msg_id, timestamp=timestamp, body=body)

    # Then we produce the published signature
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_message_id_with_a_dot_is_refused() -> None:
    # Given an id containing the separator of the signed content
    # When / Then signing refuses it rather than produce an ambiguous signature
    with pytest.raises(ValueError, match=r"must not contain '\.'"):
        sign(secrets=[SigningSecret.generate()], msg_id="msg.1", timestamp=1, body=BODY)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "message"),
    [
        ("", 1_700_000_000, "must not be empty"),
        ("msg_1", -1, "non-negative integer"),
    ],
)
def test_empty_id_and_negative_timestamp_are_refused(
    msg_id: str, timestamp: int, message: str
) -> None:
    # Given an invalid id or timestamp
    # When / Then signing refuses it
    with pytest.raises(ValueError, match=message):
        sign(secrets=[SigningSecret.generate()], msg_id=msg_id, timestamp=timestamp, body=BODY)


def test_no_secret_is_refused() -> None:
    # Given no secret at all
    # When / Then signing refuses instead of sending an unsigned delivery
    with pytest.raises(ValueError, match="at least one signing secret"):
        signature_headers(secrets=[], msg_id="msg_1", timestamp=1, body=BODY)
