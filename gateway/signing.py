"""Request signing shared by clients, the simulator, benchmarks and tests.

signature = hex HMAC-SHA256(secret, f"{ts}." + body), ts = unix seconds as a string.
A WebSocket handshake signs the body b"GET /v1/stream".
"""

from __future__ import annotations

import hmac
import time

KEY_HEADER = "X-Rally-Key"
TS_HEADER = "X-Rally-Timestamp"
SIG_HEADER = "X-Rally-Signature"
WS_BODY = b"GET /v1/stream"


def sign(secret: str, ts: str, body: bytes) -> str:
    return hmac.digest(secret.encode(), f"{ts}.".encode() + body, "sha256").hex()


def signed_headers(key: str, secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three auth headers for `body`, signed at `now` (default: the wall clock)."""
    ts = str(int(time.time() if now is None else now))
    return {KEY_HEADER: key, TS_HEADER: ts, SIG_HEADER: sign(secret, ts, body)}
