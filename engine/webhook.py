"""Signed webhooks in the Standard Webhooks form (https://www.standardwebhooks.com, as Svix).

Each delivery carries three headers:
- `webhook-id`: the message id, the same on every retry (the receiver dedupes on it; for a
  payout, the payout id);
- `webhook-timestamp`: unix seconds of this attempt;
- `webhook-signature`: `v1,` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")).

The secret is written `whsec_` + base64(key bytes). A receiver refuses a timestamp more than
TOLERANCE_S (5 minutes) from its clock, so a captured delivery cannot be replayed later.
Several signatures may be sent separated by spaces (key rotation); one valid is enough.

Pure: the time is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

TOLERANCE_S = 300
PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class WebhookError(ValueError):
    """A delivery that does not verify: missing header, stale timestamp, bad signature."""


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (a bare base64 key is accepted too)."""
    raw = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as err:
        raise WebhookError("a webhook secret is whsec_ followed by base64") from err
    if len(key) < 16:
        raise WebhookError("a webhook secret holds at least 16 bytes")
    return key


def new_secret(entropy: bytes) -> str:
    assert len(entropy) >= 16
    return PREFIX + base64.b64encode(entropy).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of one delivery."""
    mac = hmac.digest(secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str, hdrs: Mapping[str, str], body: bytes, now: float, tolerance_s: int = TOLERANCE_S
) -> str:
    """The message id of a delivery that verifies; WebhookError otherwise."""
    msg_id = hdrs.get(ID_HEADER, "")
    ts_text = hdrs.get(TIMESTAMP_HEADER, "")
    sigs = hdrs.get(SIGNATURE_HEADER, "")
    if not msg_id or not ts_text or not sigs:
        raise WebhookError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(ts_text)
    except ValueError:
        raise WebhookError("webhook-timestamp is not an integer") from None
    if abs(now - ts) > tolerance_s:
        raise WebhookError(f"webhook-timestamp is more than {tolerance_s} s from now")
    want = sign(secret, msg_id, ts, body).encode()
    ok = False
    for sig in sigs.split(" "):
        ok |= hmac.compare_digest(sig.encode(), want)
    if not ok:
        raise WebhookError("no valid signature")
    return msg_id


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
