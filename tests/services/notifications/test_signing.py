"""Standard Webhooks signatures (unit), against the specification's published example."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from nexanest.services.notifications.signing import new_secret, secret_key, signature, signed_headers


def test_the_specifications_example() -> None:
    # From the Standard Webhooks reference implementations' tests.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_new_secret_has_24_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_")
    assert a != b
    assert len(secret_key(a)) == 24


def test_headers_verify_with_the_receivers_computation() -> None:
    secret = new_secret()
    body = b'{"type":"alert.fired"}'
    headers = signed_headers(secret_key(secret), "msg_1", 1700000000, body)
    raw_key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(raw_key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"


@pytest.mark.parametrize("bad", ["", "whsec", "sk_abc", "whsec_not base64!"])
def test_anything_but_a_whsec_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_key(bad)
