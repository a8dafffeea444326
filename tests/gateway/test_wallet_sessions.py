"""Signing in to the member portal with a linked wallet (Sign-In with Ethereum), through the
real gateway and Redis: a member-less nonce, the message checked as a link is (domain, URI,
chain id, nonce, expiry, signature), the address found in the wallet index (one member per
address and network), the nonce used once, and the session a member's like any other: no
admin route. Also: linking an address another member holds is refused, and wallets linked
before the index existed are indexed (at start, or lazily), ambiguous ones refused."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
import pytest
import redis
from aiohttp.test_utils import TestClient
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from actors.keys import Keys
from actors.wallets import index_done_key, index_key, link_wallet, wallets_key
from gateway.redis_server import RedisServer
from gateway.sessions import COOKIE
from gateway.signing import signed_headers

from .helpers import SECRET, make_settings, serve

TOKEN_SECRET = "wallet-sessions-token-secret-0123456789"


def settings(namespace: str, **wallets: Any) -> Any:
    s = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    return s.model_copy(update={"wallets": s.wallets.model_copy(update=wallets)})


def sign(acct: LocalAccount, text: str) -> str:
    return "0x" + acct.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


async def nonce(client: TestClient, network: str = "demo") -> dict[str, Any]:
    resp = await client.post("/v1/session/wallet/nonce", json={"network": network})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def wallet_sign_in(
    client: TestClient, message: str, signature: str, network: str = "demo"
) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/session/wallet", json={"message": message,
                             "signature": signature, "network": network})  # fmt: skip
    return resp.status, await resp.json()


async def signed_message(client: TestClient, acct: LocalAccount, network: str = "demo") -> str:
    return str((await nonce(client, network))["message"]).replace("0x{address}", acct.address)


def test_a_linked_wallet_signs_in_a_member_once_and_no_admin(
    redis_server: RedisServer, namespace: str
) -> None:
    acct = Account.create()
    r = redis.Redis.from_url(redis_server.url)
    link_wallet(r, Keys(namespace), "demo", "alice", acct.address)

    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            issued = await nonce(client)
            assert (issued["network"], issued["domain"]) == ("demo", "localhost")
            assert "Sign in to your Rallypoint member portal." in issued["message"]
            message = issued["message"].replace("0x{address}", acct.address)
            resp = await client.post("/v1/session/wallet",
                                     json={"message": message, "signature": sign(acct, message),
                                           "network": "demo"})  # fmt: skip
            s = await resp.json()
            assert (resp.status, s["scope"], s["network"], s["user_id"]) == (
                201, "member", "demo", "alice",
            ), s  # fmt: skip
            set_cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in set_cookie
            assert "SameSite=Strict" in set_cookie
            assert s["csrf"]
            # a replayed message (the same nonce) signs in no one
            status, err = await wallet_sign_in(client, message, sign(acct, message))
            assert (status, err["error"], err["field"]) == (409, "nonce_used", "message"), err
            # the session is alice's, a member's: herself only, no admin route
            who = await client.get("/v1/session")
            assert (await who.json())["user_id"] == "alice"
            assert (await client.get("/v1/members/alice?network=demo")).status == 404
            assert (await client.get("/v1/members/bob?network=demo")).status == 403
            assert (await client.get("/v1/admin/overview?network=demo")).status == 403
            assert (await client.get("/v1/raffles?network=demo")).status == 401
            assert (await client.get("/v1/payouts?network=demo")).status == 401
            h = {"X-CSRF-Token": s["csrf"]}
            put = await client.put("/v1/store/items/mug?network=demo", headers=h,
                                   json={"name": "Mug", "cost": 5})  # fmt: skip
            assert put.status in (401, 403)
            assert (await client.post("/v1/events", headers=h, json={"events": []})).status == 401
            wallets = await client.get("/v1/members/alice/wallets?network=demo")
            assert (await wallets.json())["wallets"] == [acct.address]
            # another origin may not sign in
            message = await signed_message(client, acct)
            cross = await client.post("/v1/session/wallet", headers={"Origin": "https://evil.example"},
                                      json={"message": message, "signature": sign(acct, message)})  # fmt: skip
            assert (cross.status, (await cross.json())["error"]) == (403, "csrf")

    asyncio.run(body())
    r.close()


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        (lambda m: m.replace("localhost wants", "evil.example wants"), 400, "domain"),
        (lambda m: m.replace("URI: http://localhost", "URI: https://evil.example"), 400, "uri"),
        (lambda m: m.replace("Chain ID: 31337", "Chain ID: 1"), 400, "chain_id"),
        (lambda m: m.replace("Nonce: ", "Nonce: 0"), 400, "nonce"),  # not one the gateway issued
        (lambda m: "hello", 400, "nonce"),
    ],
)
def test_a_message_not_as_issued_is_refused_naming_why(
    redis_server: RedisServer, namespace: str, tamper: Any, status: int, code: str
) -> None:
    acct = Account.create()
    r = redis.Redis.from_url(redis_server.url)
    link_wallet(r, Keys(namespace), "demo", "alice", acct.address)
    r.close()

    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            message = tamper(await signed_message(client, acct))
            got, err = await wallet_sign_in(client, message, sign(acct, message))
            assert (got, err["error"], err["field"]) == (status, code, "message"), err
            assert COOKIE not in client.session.cookie_jar.filter_cookies(client.make_url("/"))

    asyncio.run(body())


def test_bad_signature_expiry_other_network_and_unknown_wallet_are_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    acct, stranger = Account.create(), Account.create()
    r = redis.Redis.from_url(redis_server.url)
    link_wallet(r, Keys(namespace), "demo", "alice", acct.address)
    now = [time.time()]

    async def body() -> None:
        async with serve(settings(namespace), redis_server.url, clock=lambda: now[0]) as client:
            # signed by another key
            message = await signed_message(client, acct)
            status, err = await wallet_sign_in(client, message, sign(stranger, message))
            assert (status, err["error"]) == (400, "signature"), err
            status, err = await wallet_sign_in(client, message, "0x1234")
            assert (status, err["error"]) == (400, "signature"), err
            # a nonce issued for another network
            message = await signed_message(client, acct, network="other")
            status, err = await wallet_sign_in(client, message, sign(acct, message), "demo")
            assert (status, err["error"], err["field"]) == (400, "nonce", "message"), err
            # a wallet no member of the network linked (alice linked hers in demo only)
            status, err = await wallet_sign_in(client, message, sign(acct, message), "other")
            assert (status, err["error"], err["field"]) == (404, "unknown_wallet", "message"), err
            message = await signed_message(client, stranger)
            status, err = await wallet_sign_in(client, message, sign(stranger, message))
            assert (status, err["error"]) == (404, "unknown_wallet"), err
            # an unknown network, a missing field
            resp = await client.post("/v1/session/wallet/nonce", json={"network": "nowhere"})
            assert (resp.status, (await resp.json())["field"]) == (400, "network")
            resp = await client.post("/v1/session/wallet", json={"message": message})
            assert (resp.status, (await resp.json())["field"]) == (400, "signature")
            # an expired nonce ([wallets] nonce_ttl_s = 300)
            message = await signed_message(client, acct)
            now[0] += 301
            status, err = await wallet_sign_in(client, message, sign(acct, message))
            assert (status, err["error"], err["field"]) == (400, "expired", "message"), err
            # refusals used no nonce: a fresh one still signs alice in
            now[0] -= 301
            message = await signed_message(client, acct)
            status, s = await wallet_sign_in(client, message, sign(acct, message))
            assert (status, s["user_id"]) == (201, "alice"), s

    asyncio.run(body())
    r.close()


def test_a_wallet_links_to_one_member_and_legacy_links_are_indexed(
    redis_server: RedisServer, namespace: str
) -> None:
    keys = Keys(namespace)
    shared, mine, taken = Account.create(), Account.create(), Account.create()
    r = redis.Redis.from_url(redis_server.url)
    # linked before the index existed: carl and dana both linked `shared`; erin linked `mine`
    r.hset(wallets_key(keys, "demo"), mapping={
        "carl": json.dumps([shared.address]), "dana": json.dumps([shared.address.lower()]),
        "erin": json.dumps([mine.address]),
    })  # fmt: skip
    link_wallet(r, keys, "demo", "fred", taken.address)

    async def link(client: TestClient, user: str, acct: LocalAccount) -> tuple[int, Any]:
        target = f"/v1/members/{user}/wallets/nonce?network=demo"
        resp = await client.post(target, headers=signed_headers("k1", SECRET, b"", target=target,
                                                                method="POST"))  # fmt: skip
        message = (await resp.json())["message"].replace("0x{address}", acct.address)
        raw = msgspec.json.encode({"message": message, "signature": sign(acct, message)})
        target = f"/v1/members/{user}/wallets?network=demo"
        headers = signed_headers("k1", SECRET, raw, target=target, method="POST")
        resp = await client.post(target, data=raw,
                                 headers={**headers, "Content-Type": "application/json"})  # fmt: skip
        return resp.status, await resp.json()

    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            assert r.exists(index_done_key(keys, "demo"))  # indexed at start
            message = await signed_message(client, shared)
            status, err = await wallet_sign_in(client, message, sign(shared, message))
            assert (status, err["error"], err["field"]) == (409, "ambiguous_wallet", "message")
            message = await signed_message(client, mine)
            status, s = await wallet_sign_in(client, message, sign(mine, message))
            assert (status, s["user_id"]) == (201, "erin"), s
            # a wallet another member linked cannot be linked again; by its owner, it is a no-op
            status, err = await link(client, "gina", taken)
            assert (status, err["error"], err["field"]) == (409, "wallet_taken", "message"), err
            status, err = await link(client, "gina", shared)
            assert (status, err["error"]) == (409, "wallet_taken"), err
            assert (await link(client, "fred", taken)) == (200, {"wallets": [taken.address]})
            status, got = await link(client, "gina", Account.create())
            assert (status, len(got["wallets"])) == (200, 1)
            # lazily: an index lost (or never built at start) is built on the next sign-in
            r.delete(index_key(keys, "demo"), index_done_key(keys, "demo"))
            message = await signed_message(client, mine)
            status, s = await wallet_sign_in(client, message, sign(mine, message))
            assert (status, s["user_id"]) == (201, "erin"), s
            assert r.hget(index_key(keys, "demo"), shared.address.lower()) == b""

    asyncio.run(body())
    r.close()
