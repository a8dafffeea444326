"""engine/webhook.py: Standard Webhooks signatures, checked against a hand-computed vector."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import webhook

SECRET = webhook.new_secret(b"k" * 24)


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    body = b'{"a":1}'
    want = base64.b64encode(hmac.digest(b"k" * 24, b"msg_1.1700000000." + body, hashlib.sha256))
    assert webhook.sign(SECRET, "msg_1", 1_700_000_000, body) == "v1," + want.decode()


@given(st.binary(max_size=200), st.integers(-300, 300))
def test_verify_accepts_within_tolerance(body: bytes, skew: int) -> None:
    h = webhook.headers(SECRET, "m", 1_000_000, body)
    assert webhook.verify(SECRET, h, body, 1_000_000 + skew) == "m"


@pytest.mark.parametrize(
    ("change", "now"),
    [({}, 1_000_301), ({"webhook-signature": "v1,AAAA"}, 1_000_000), ({"webhook-id": "n"}, 1_000_000),
     ({"webhook-timestamp": "x"}, 1_000_000), ({"webhook-id": ""}, 1_000_000)],
)  # fmt: skip
def test_verify_refuses_stale_tampered_or_missing(change: dict[str, str], now: int) -> None:
    h = webhook.headers(SECRET, "m", 1_000_000, b"{}") | change
    with pytest.raises(webhook.WebhookError):
        webhook.verify(SECRET, h, b"{}", now)


def test_rotation_any_listed_signature_verifies_and_bad_secrets_refused() -> None:
    h = webhook.headers(SECRET, "m", 5, b"x")
    h["webhook-signature"] = "v1,bm90LWl0 " + h["webhook-signature"]
    assert webhook.verify(SECRET, h, b"x", 5) == "m"
    for bad in ("whsec_!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(webhook.WebhookError):
            webhook.secret_bytes(bad)
