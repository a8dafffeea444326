"""Wallet linking with Sign-In with Ethereum (chain/siwe.py): a member links wallets that
chain payouts mint to (the first linked wallet, unless a payout names another).

POST /v1/members/{user_id}/wallets/nonce?network=N   -> {"nonce", "domain", "uri", "chain_id",
      "issued_at", "expiration_time", "message"}  (a message to sign once the address is set)
POST /v1/members/{user_id}/wallets?network=N  {"message", "signature"}  -> {"wallets": [...]}
GET  /v1/members/{user_id}/wallets?network=N   -> {"wallets": [...]}

The member's token (or a network API key) authenticates. A nonce is issued for one member,
used once (GETDEL) and expires after `[wallets] nonce_ttl_s`: a replayed message is refused
(409 nonce_used), an expired one too (400 expired), as are another domain, chain id or a
signature that is not by the message's address (400, with the code and field "message").
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import redis
from aiohttp import web

from actors.chain_sink import link_wallet, linked_wallets
from actors.keys import Keys
from chain.siwe import SiweError, SiweMessage, checksum, iso, verify
from gateway.errors import BadRequest, Conflict, json_response
from gateway.reads import ACCESS, READER, parse_id
from gateway.settings import Settings

MAX_BODY_BYTES = 16 * 1024


class _Link(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    signature: str


class Wallets:
    def __init__(
        self, r: redis.Redis, keys: Keys, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self.r = r
        self.keys = keys
        self.domain = settings.wallets.domain
        self.uri = settings.wallets.uri
        self.chain_id = settings.wallets.chain_id
        self.nonce_ttl_s = settings.wallets.nonce_ttl_s
        self.clock = clock

    def nonce_key(self, nonce: str) -> str:
        return self.keys.k("siwenonce", nonce)


WALLETS = web.AppKey("wallets", Wallets)


async def _member(request: web.Request, body: bytes = b"") -> tuple[str, str]:
    who = request.app[ACCESS].principal(request.headers, request.method, request.raw_path, body)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    network = request.app[READER].network_of(request.query)
    request.app[ACCESS].member(who, network, user_id)
    return network, user_id


async def post_nonce(request: web.Request) -> web.Response:
    w = request.app[WALLETS]
    network, user_id = await _member(request, await request.read())
    nonce = secrets.token_hex(12)
    now = w.clock()
    await asyncio.to_thread(w.r.set, w.nonce_key(nonce), f"{network}:{user_id}", ex=w.nonce_ttl_s)
    template = SiweMessage(domain=w.domain, address="0x{address}", uri=w.uri, chain_id=w.chain_id,
                           nonce=nonce, issued_at=iso(now), expiration_time=iso(now + w.nonce_ttl_s))  # fmt: skip
    return json_response({
        "nonce": nonce, "domain": w.domain, "uri": w.uri, "chain_id": w.chain_id,
        "issued_at": template.issued_at, "expiration_time": template.expiration_time,
        "message": template.text(),
    })  # fmt: skip


async def post_wallet(request: web.Request) -> web.Response:
    w = request.app[WALLETS]
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"body over {MAX_BODY_BYTES} bytes", field="body", code="too_large")
    body = await request.read()
    network, user_id = await _member(request, body)
    try:
        link = msgspec.json.decode(body, type=_Link)
    except msgspec.ValidationError as err:
        raise BadRequest(str(err), field="message", code="invalid_body") from None
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from None
    nonce = link.message.partition("\nNonce: ")[2].partition("\n")[0]
    if not nonce:
        raise BadRequest("the message has no Nonce line", field="message", code="malformed")
    owner = await asyncio.to_thread(w.r.getdel, w.nonce_key(nonce))
    if owner is None:
        raise Conflict("this nonce was used already or has expired: ask for a new one",
                       field="message", code="nonce_used")  # fmt: skip
    if owner.decode() != f"{network}:{user_id}":
        raise BadRequest("this nonce was issued to another member", field="message", code="nonce")
    try:
        msg = verify(link.message, link.signature, domain=w.domain, chain_id=w.chain_id,
                     nonce=nonce, now=w.clock(), max_age_s=w.nonce_ttl_s)  # fmt: skip
    except SiweError as err:
        raise BadRequest(str(err), field="message", code=err.code) from None
    have = await asyncio.to_thread(
        link_wallet, w.r, w.keys, network, user_id, checksum(msg.address)
    )
    return json_response({"wallets": have})


async def get_wallets(request: web.Request) -> web.Response:
    w = request.app[WALLETS]
    network, user_id = await _member(request)
    return json_response(
        {"wallets": await asyncio.to_thread(linked_wallets, w.r, w.keys, network, user_id)}
    )


def install(app: web.Application, settings: Settings, redis_url: str, keys: Keys,
            clock: Callable[[], float] = time.time) -> None:  # fmt: skip
    r = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=30)
    app[WALLETS] = Wallets(r, keys, settings, clock)

    async def running(app: web.Application) -> AsyncIterator[None]:
        yield
        r.close()

    app.cleanup_ctx.append(running)
    app.router.add_post("/v1/members/{user_id}/wallets/nonce", post_nonce)
    app.router.add_post("/v1/members/{user_id}/wallets", post_wallet)
    app.router.add_get("/v1/members/{user_id}/wallets", get_wallets)
