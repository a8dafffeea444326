"""Auth: HMAC signatures over the body, key rotation, clock skew, per-network permission."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from gateway.redis_server import RedisServer
from gateway.signing import sign, signed_headers

from .helpers import (
    ADMIN_SECRET,
    OLD_SECRET,
    SECRET,
    body_of,
    chat,
    make_settings,
    post,
    serve,
    stream_lengths,
)

BODY = body_of({"events": [chat(1)]})
OTHER_NET = body_of({"events": [chat(1), chat(2, network="other")]})


def test_sign_is_hmac_sha256_of_ts_dot_body() -> None:
    import hashlib
    import hmac

    want = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", BODY) == want
    headers = signed_headers("k", "s3cret", BODY, now=1_700_000_000.9)
    assert headers == {
        "X-Rally-Key": "k",
        "X-Rally-Timestamp": "1700000000",
        "X-Rally-Signature": want,
    }


def _headers(case: str) -> dict[str, str]:
    now = time.time()
    if case == "good":
        return signed_headers("k1", SECRET, BODY)
    if case == "previous secret":
        return signed_headers("k1", OLD_SECRET, BODY)
    if case == "wrong secret":
        return signed_headers("k1", "not-the-secret-0123456789", BODY)
    if case == "other key's secret":
        return signed_headers("k1", ADMIN_SECRET, BODY)
    if case == "unknown key":
        return signed_headers("nobody", SECRET, BODY)
    if case == "stale timestamp":
        return signed_headers("k1", SECRET, BODY, now=now - 301)
    if case == "future timestamp":
        return signed_headers("k1", SECRET, BODY, now=now + 301)
    if case == "signature of another body":
        return signed_headers("k1", SECRET, BODY + b" ")
    if case == "timestamp not a number":
        return {**signed_headers("k1", SECRET, BODY), "X-Rally-Timestamp": "soon"}
    if case == "timestamp of unicode digits":
        return {**signed_headers("k1", SECRET, BODY), "X-Rally-Timestamp": "\u00b2"}
    if case == "signature not ascii":
        return {**signed_headers("k1", SECRET, BODY), "X-Rally-Signature": "\u00e9" * 64}
    h = signed_headers("k1", SECRET, BODY)
    missing = {"missing key": "X-Rally-Key", "missing signature": "X-Rally-Signature"}
    if case in missing:
        del h[missing[case]]
        return h
    assert case == "no headers"
    return {}


@pytest.mark.parametrize(
    ("case", "status", "field"),
    [
        ("good", 202, None),
        ("previous secret", 202, None),
        ("wrong secret", 401, "X-Rally-Signature"),
        ("other key's secret", 401, "X-Rally-Signature"),
        ("signature of another body", 401, "X-Rally-Signature"),
        ("unknown key", 401, "X-Rally-Key"),
        ("stale timestamp", 401, "X-Rally-Timestamp"),
        ("future timestamp", 401, "X-Rally-Timestamp"),
        ("timestamp not a number", 401, "X-Rally-Timestamp"),
        ("timestamp of unicode digits", 401, "X-Rally-Timestamp"),
        ("signature not ascii", 401, "X-Rally-Signature"),
        ("missing key", 401, "headers"),
        ("missing signature", 401, "headers"),
        ("no headers", 401, "headers"),
    ],
)
def test_auth_table(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    namespace: str,
    case: str,
    status: int,
    field: str | None,
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            code, body = await post(client, BODY, headers=_headers(case))
            assert code == status, body
            if status == 202:
                assert body == {"accepted": 1}
            else:
                assert body["error"] == "unauthorized"
                assert body["field"] == field

    asyncio.run(go())
    written = sum(stream_lengths(redis_client, namespace))
    assert written == (1 if status == 202 else 0)


def test_key_not_allowed_for_a_network_gets_403_naming_the_event(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            code, body = await post(client, OTHER_NET)
            assert code == 403
            assert body["error"] == "forbidden"
            assert (body["field"], body["index"]) == ("network", 1)
            code, body = await post(client, OTHER_NET, key="admin", secret=ADMIN_SECRET)
            assert (code, body) == (202, {"accepted": 2})

    asyncio.run(go())
    assert sum(stream_lengths(redis_client, namespace)) >= 1
