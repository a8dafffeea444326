"""Request signing shared by clients, the simulator, benchmarks and tests.

A signed request carries X-Rally-Key, X-Rally-Timestamp (unix seconds, as a string) and
X-Rally-Signature = hex HMAC-SHA256(secret, f"{ts}." + message), where message is
- for `POST /v1/events`: the body, byte for byte;
- for every other request (reads, token requests, the WebSocket handshake): the method and
  the request target as sent, path and query string: b"GET /v1/members/u1?network=acme";
  with a body (the store's writes), then a newline and the body byte for byte.
  (A batch body is a JSON object and never starts with a method, so neither signature can be
  passed off as the other.)
The WebSocket handshake is a signed `GET /v1/stream?nonce=N`: the gateway refuses a nonce it
has seen (for the skew window), so copied handshake headers open no second socket.
"""

from __future__ import annotations

import hmac
import secrets
import time

KEY_HEADER = "X-Rally-Key"
TS_HEADER = "X-Rally-Timestamp"
SIG_HEADER = "X-Rally-Signature"
STREAM_PATH = "/v1/stream"


def sign(secret: str, ts: str, body: bytes) -> str:
    return hmac.digest(secret.encode(), f"{ts}.".encode() + body, "sha256").hex()


def request_message(method: str, target: str, body: bytes = b"") -> bytes:
    """What a request signs besides a batch: b"GET /v1/members/u1?network=acme"; a request
    with a JSON body (the store's, raffles', vouchers' writes) adds a newline and the body
    byte for byte: b"PUT /v1/store/items/i1?network=acme\n{...}" (a target has no newline)."""
    head = f"{method.upper()} {target}".encode()
    return head + b"\n" + body if body else head


def signed_headers(
    key: str,
    secret: str,
    body: bytes = b"",
    now: float | None = None,
    *,
    target: str | None = None,
    method: str = "GET",
) -> dict[str, str]:
    """The three auth headers, signed at `now` (default: the wall clock): over `body` (a POST
    of events), or, given `target` (path and query string as sent), over `method target`
    (and, when `body` is given too, a newline and the body)."""
    if target is not None:
        body = request_message(method, target, body)
    ts = str(int(time.time() if now is None else now))
    return {KEY_HEADER: key, TS_HEADER: ts, SIG_HEADER: sign(secret, ts, body)}


def stream_target(
    nonce: str | None = None, path: str = STREAM_PATH, acks: str | None = None
) -> str:
    """The WebSocket handshake's target, with a fresh random nonce unless one is given, and
    the ack mode if one is (`bulk`: one ack per durable write, for all the frames in it)."""
    target = f"{path}?nonce={nonce or secrets.token_urlsafe(18)}"
    return f"{target}&acks={acks}" if acks else target


def ws_handshake(
    key: str,
    secret: str,
    now: float | None = None,
    path: str = STREAM_PATH,
    acks: str | None = None,
) -> tuple[str, dict[str, str]]:
    """(target, headers) of a single-use WebSocket handshake: connect to `target` with them."""
    target = stream_target(path=path, acks=acks)
    return target, signed_headers(key, secret, now=now, target=target)


def bearer(token: str) -> dict[str, str]:
    """The header that presents a member token (`POST /v1/members/{id}/token`, `rally token`)."""
    return {"Authorization": f"Bearer {token}"}
