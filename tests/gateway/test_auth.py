"""Auth: HMAC signatures over the body (ingest) or the request target (reads, token requests,
WebSocket handshakes), key rotation, clock skew, per-network permission, member tokens,
public networks, Idempotency-Keys per API key and single-use handshakes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestClient

from actors.keys import Keys
from engine.channel import ChannelState, channel_encoder
from engine.member import MemberState, state_encoder
from gateway.auth import TokenSigner
from gateway.redis_server import RedisServer
from gateway.settings import SettingsError
from gateway.signing import bearer, sign, signed_headers, ws_handshake

from .helpers import (
    ADMIN_SECRET,
    OLD_SECRET,
    SECRET,
    body_of,
    chat,
    get,
    make_settings,
    post,
    serve,
    signed_get,
    stream_entries,
    stream_lengths,
    ws_connect,
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


# -- reads ------------------------------------------------------------------------------------
TOKEN_SECRET = "token-secret-0123456789abcdef"
MEMBER = "/v1/members/u1?network=demo"


class Clock:
    """The gateway's clock, moved by the test (token expiry)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _seed(r: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    for nu in ("demo:u1", "demo:u2", "other:u1"):
        r.hset(keys.mstate, nu, state_encoder.encode(MemberState(name=nu, balance=5)))
    for nc in ("demo:c1", "other:c1"):
        r.hset(keys.cstate, nc, channel_encoder.encode(ChannelState()))


def _read_headers(case: str, target: str) -> dict[str, str]:
    if case == "key":
        return signed_get(target)
    if case == "admin":
        return signed_get(target, key="admin", secret=ADMIN_SECRET)
    if case == "previous secret":
        return signed_get(target, secret=OLD_SECRET)
    if case == "unsigned":
        return {}
    if case == "signed for another target":
        return signed_get(target.replace("u1", "u2"))
    if case == "signed for another query":
        return signed_get(target + "&limit=1")
    if case == "signed as a POST":
        return signed_headers("k1", SECRET, target=target, method="POST")
    if case == "signed over an empty body":
        return signed_headers("k1", SECRET, b"")
    if case == "stale timestamp":
        return signed_get(target, now=time.time() - 301)
    assert case == "wrong secret"
    return signed_get(target, secret="not-the-secret-0123456789")


@pytest.mark.parametrize(
    ("case", "target", "status"),
    [
        ("key", MEMBER, 200),
        ("key", "/v1/members/u1/ledger?network=demo&limit=5", 200),
        ("key", "/v1/channels/c1/leaderboard?network=demo&period=week", 200),
        ("key", "/v1/channels/c1/stats?network=demo", 200),
        ("previous secret", MEMBER, 200),
        ("admin", "/v1/members/u1?network=other", 200),
        ("admin", "/v1/channels/c1/stats?network=other", 200),
        ("key", "/v1/members/u1?network=other", 403),
        ("key", "/v1/members/u1/ledger?network=other", 403),
        ("key", "/v1/channels/c1/leaderboard?network=other", 403),
        ("key", "/v1/channels/c1/stats?network=other", 403),
        ("unsigned", MEMBER, 401),
        ("unsigned", "/v1/members/u1/ledger?network=demo", 401),
        ("unsigned", "/v1/channels/c1/leaderboard?network=demo", 401),
        ("unsigned", "/v1/channels/c1/stats?network=demo", 401),
        ("signed for another target", MEMBER, 401),
        ("signed for another query", MEMBER, 401),
        ("signed as a POST", MEMBER, 401),
        ("signed over an empty body", MEMBER, 401),
        ("stale timestamp", MEMBER, 401),
        ("wrong secret", MEMBER, 401),
    ],
)
def test_reads_need_a_key_covering_the_network(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    namespace: str,
    case: str,
    target: str,
    status: int,
) -> None:
    _seed(redis_client, namespace)

    async def go() -> tuple[int, Any]:
        async with serve(make_settings(namespace), redis_server.url) as client:
            return await get(client, target, headers=_read_headers(case, target))

    code, body = asyncio.run(go())
    assert code == status, body
    if status == 401:
        assert body["error"] == "unauthorized"
    if status == 403:
        assert (body["error"], body["field"]) == ("forbidden", "network")


def test_public_networks_show_leaderboards_and_stats_unsigned_but_not_members(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    _seed(redis_client, namespace)
    settings = make_settings(namespace, auth={"public_networks": ["other"]})

    async def go() -> list[int]:
        async with serve(settings, redis_server.url) as client:
            return [
                (await get(client, target, headers={}))[0]
                for target in (
                    "/v1/channels/c1/leaderboard?network=other",
                    "/v1/channels/c1/stats?network=other",
                    "/v1/channels/c1/stats?network=demo",
                    "/v1/members/u1?network=other",
                    "/v1/members/u1/ledger?network=other",
                )
            ]

    assert asyncio.run(go()) == [200, 200, 401, 401, 401]


def test_public_networks_must_be_configured() -> None:
    with pytest.raises(SettingsError, match=r"auth\.public_networks\.0: no network 'nope'"):
        make_settings("x", auth={"public_networks": ["nope"]})
    with pytest.raises(SettingsError, match=r"auth\.token_secret"):
        make_settings("x", auth={"token_secret": "short"})


def _issue(target: str, key: str = "k1", secret: str = SECRET, **kw: Any) -> dict[str, str]:
    return signed_headers(key, secret, target=target, method="POST", **kw)


async def _token(client: TestClient, user: str = "u1", network: str = "demo") -> str:
    target = f"/v1/members/{user}/token?network={network}"
    async with client.post(target, headers=_issue(target)) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        assert (body["user_id"], body["network"]) == (user, network)
        return str(body["token"])


def test_a_member_token_reads_only_its_own_member_and_ledger(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    _seed(redis_client, namespace)
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET, "token_ttl_s": 60})

    async def go() -> dict[str, int]:
        async with serve(settings, redis_server.url) as client:
            me = bearer(await _token(client))
            targets = {
                "own member": MEMBER,
                "own ledger": "/v1/members/u1/ledger?network=demo",
                "own member, default network unset": "/v1/members/u1",
                "another member": "/v1/members/u2?network=demo",
                "another member's ledger": "/v1/members/u2/ledger?network=demo",
                "same id, another network": "/v1/members/u1?network=other",
                "leaderboard": "/v1/channels/c1/leaderboard?network=demo",
                "stats": "/v1/channels/c1/stats?network=demo",
            }
            return {name: (await get(client, t, headers=me))[0] for name, t in targets.items()}

    assert asyncio.run(go()) == {
        "own member": 200,
        "own ledger": 200,
        "own member, default network unset": 400,  # two networks configured: name one
        "another member": 403,
        "another member's ledger": 403,
        "same id, another network": 403,
        "leaderboard": 403,
        "stats": 403,
    }


def _forge(token: str, case: str) -> str:
    version, payload, mac = token.split(".")
    if case == "expired":
        return token
    if case == "mac of another secret":
        return TokenSigner("another-secret-0123456789", 60).issue("demo", "u1")[0]
    if case == "payload changed":
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["u"] = "u2"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"{version}.{forged}.{mac}"
    if case == "mac cut":
        return f"{version}.{payload}.{mac[:-2]}"
    if case == "not a token":
        return "hello"
    assert case == "other version"
    return f"rt0.{payload}.{mac}"


@pytest.mark.parametrize(
    "case",
    ["expired", "mac of another secret", "payload changed", "mac cut", "not a token",
     "other version"],
)  # fmt: skip
def test_expired_or_forged_tokens_get_401(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, case: str
) -> None:
    _seed(redis_client, namespace)
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET, "token_ttl_s": 60})
    clock = Clock()

    async def go() -> tuple[int, Any]:
        async with serve(settings, redis_server.url, clock=clock) as client:
            token = await _token(client)
            assert (await get(client, MEMBER, headers=bearer(token)))[0] == 200
            if case == "expired":
                clock.now += 60
            return await get(client, MEMBER, headers=bearer(_forge(token, case)))

    status, body = asyncio.run(go())
    assert (status, body["error"], body["field"]) == (401, "unauthorized", "Authorization")
    if case == "expired":
        assert "expired" in body["message"]


def test_rally_token_matches_the_gateway(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    from gateway.cli import main

    _seed(redis_client, namespace)
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    config = tmp_path / "rally.toml"
    config.write_text(
        f'[auth]\ntoken_secret = "{TOKEN_SECRET}"\n[networks.demo]\n[networks.other]\n'
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["token", "u1", "--network", "demo", "--config", str(config)]) == 0
    token = out.getvalue().strip()

    async def go() -> list[int]:
        async with serve(settings, redis_server.url) as client:
            return [
                (await get(client, t, headers=bearer(token)))[0]
                for t in (MEMBER, "/v1/members/u2?network=demo")
            ]

    assert asyncio.run(go()) == [200, 403]
    no_secret = tmp_path / "plain.toml"
    no_secret.write_text("[networks.demo]\n")
    assert main(["token", "u1", "--config", str(no_secret)]) == 2
    assert main(["token", "bad id!", "--config", str(config), "--network", "demo"]) == 2


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("good", 201, None),
        ("unsigned", 401, "unauthorized"),
        ("signed for another member", 401, "unauthorized"),
        ("signed as a GET", 401, "unauthorized"),
        ("key not covering the network", 403, "forbidden"),
        ("with a body", 400, "bad_request"),
        ("tokens off", 403, "tokens_disabled"),
    ],
)
def test_token_requests(
    redis_server: RedisServer, namespace: str, case: str, status: int, error: str | None
) -> None:
    auth = {} if case == "tokens off" else {"token_secret": TOKEN_SECRET}
    settings = make_settings(namespace, auth=auth)
    network = "other" if case == "key not covering the network" else "demo"
    target = f"/v1/members/u1/token?network={network}"
    body = b"{}" if case == "with a body" else b""
    headers = {
        "unsigned": {},
        "signed for another member": _issue(target.replace("u1", "u2")),
        "signed as a GET": signed_get(target),
    }.get(case, _issue(target))

    async def go() -> tuple[int, Any]:
        async with (
            serve(settings, redis_server.url) as client,
            client.post(target, data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    code, answer = asyncio.run(go())
    assert code == status, answer
    assert answer.get("error") == error


def test_bearer_without_tokens_enabled_is_401(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    _seed(redis_client, namespace)
    token = TokenSigner(TOKEN_SECRET, 60).issue("demo", "u1")[0]

    async def go() -> list[tuple[int, Any]]:
        async with serve(make_settings(namespace), redis_server.url) as client:
            return [
                await get(client, MEMBER, headers=bearer(token)),
                await get(client, MEMBER, headers={"Authorization": "Basic dTE6cHc="}),
            ]

    for status, body in asyncio.run(go()):
        assert (status, body["field"]) == (401, "Authorization")


# -- Idempotency-Key per API key --------------------------------------------------------------
def test_idempotency_keys_are_scoped_to_the_api_key(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    idem = {"Idempotency-Key": "batch-1"}

    async def go() -> list[tuple[int, Any]]:
        async with serve(make_settings(namespace), redis_server.url) as client:
            return [
                await post(client, {"events": [chat(1)]}, **idem),
                await post(client, {"events": [chat(2)]}, key="admin", secret=ADMIN_SECRET, **idem),
                await post(client, {"events": [chat(3)]}, **idem),  # k1's key, another batch
            ]

    first, other_key, conflict = asyncio.run(go())
    assert first == other_key == (202, {"accepted": 1})
    assert conflict[0] == 409
    ids = sorted(e.id for part in stream_entries(redis_client, namespace).values() for e in part)
    assert ids == ["e1", "e2"]


# -- single-use WebSocket handshakes ----------------------------------------------------------
def test_a_replayed_handshake_is_refused_by_every_gateway_process(
    redis_server: RedisServer, namespace: str
) -> None:
    settings = make_settings(namespace)

    async def go() -> None:
        async with (
            serve(settings, redis_server.url) as one,
            serve(settings, redis_server.url) as two,  # another worker, the same Redis
        ):
            target, headers = ws_handshake("k1", SECRET)
            ws = await one.ws_connect(target, headers=headers)
            await ws.send_str(body_of([chat(1)]).decode())
            assert await ws.receive_json() == {"ack": ["e1"]}
            for client in (one, two):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await client.ws_connect(target, headers=headers)
                assert info.value.status == 401
            await ws.close()
            again = await ws_connect(two)  # a fresh handshake still opens a socket
            await again.close()

    asyncio.run(go())
