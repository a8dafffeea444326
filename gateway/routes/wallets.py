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
An address belongs to at most one member of a network (actors/wallets.py): linking one that
another member linked is refused (409 wallet_taken).

Signing in to the member portal with a linked wallet (no session needed; same origin):
POST /v1/session/wallet/nonce  {"network"?}  -> {"nonce", "network", "domain", "uri", "chain_id",
      "issued_at", "expiration_time", "message"}  (the message to sign once the address is set)
POST /v1/session/wallet  {"message", "signature", "network"?}  -> the session, as
      POST /v1/session/member answers (HttpOnly SameSite=Strict cookie, CSRF token)
The nonce is member-less and stateless (gateway.sessions.Sessions.wallet_nonce: its expiry and
a MAC, bound to the network), so asking for one writes nothing to Redis; a sign-in checks the
message as a link does (domain, URI, chain id, nonce, expiry, signature: 400 naming "message"
with the code), then the address: 404 unknown_wallet if no member of the network linked it,
409 ambiguous_wallet if several did before the index existed; only then is the nonce marked
used (SET NX until it expires): a replay is 409 nonce_used.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import redis
from aiohttp import web

from actors.keys import Keys
from actors.redisconn import connect
from actors.wallets import (
    AMBIGUOUS,
    WalletTaken,
    build_index,
    link_wallet,
    linked_wallets,
    wallet_owner,
)
from chain.siwe import SIGN_IN_STATEMENT, SiweError, SiweMessage, checksum, iso, verify
from gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    json_response,
)
from gateway.reads import ACCESS, READER, parse_id
from gateway.routes.web import sign_in_body, signed_in, text_field
from gateway.sessions import SESSIONS
from gateway.settings import Settings

log = logging.getLogger(__name__)

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

    def used_key(self, nonce: str) -> str:
        """A wallet sign-in nonce already used."""
        return self.keys.k("siweused", nonce)

    def link(self, network: str, user_id: str, address: str) -> list[str]:
        build_index(self.r, self.keys, network)  # a no-op once built (at start, normally)
        return link_wallet(self.r, self.keys, network, user_id, address)

    def owner(self, network: str, address: str) -> str | None:
        build_index(self.r, self.keys, network)
        return wallet_owner(self.r, self.keys, network, address)


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
        msg = await asyncio.to_thread(  # ecrecover in pure Python: ~6 ms, off the event loop
            verify, link.message, link.signature, domain=w.domain, chain_id=w.chain_id,
            nonce=nonce, now=w.clock(), max_age_s=w.nonce_ttl_s, uri=w.uri,
        )  # fmt: skip
    except SiweError as err:
        raise BadRequest(str(err), field="message", code=err.code) from None
    try:
        have = await asyncio.to_thread(w.link, network, user_id, checksum(msg.address))
    except WalletTaken as err:
        raise Conflict(f"{err}: a wallet signs in one member, so it is linked to one only",
                       field="message", code="wallet_taken") from None  # fmt: skip
    return json_response({"wallets": have})


async def get_wallets(request: web.Request) -> web.Response:
    w = request.app[WALLETS]
    network, user_id = await _member(request)
    return json_response(
        {"wallets": await asyncio.to_thread(linked_wallets, w.r, w.keys, network, user_id)}
    )


# -- signing in with a linked wallet --------------------------------------------------------
def _sign_in_network(request: web.Request, body: dict[str, object]) -> str:
    network = body.get("network") or request.app[READER].default_network
    if not isinstance(network, str) or not network:
        raise BadRequest("network is required (several networks are configured)", field="network")
    if network not in request.app[SESSIONS].networks:
        raise BadRequest(f"no network {parse_id(network, 'network')!r}", field="network")
    return network


async def post_session_nonce(request: web.Request) -> web.Response:
    w, sessions = request.app[WALLETS], request.app[SESSIONS]
    network = _sign_in_network(request, await sign_in_body(request))
    nonce, exp = sessions.wallet_nonce(network, w.nonce_ttl_s)
    template = SiweMessage(domain=w.domain, address="0x{address}", uri=w.uri, chain_id=w.chain_id,
                           nonce=nonce, issued_at=iso(w.clock()), expiration_time=iso(exp),
                           statement=SIGN_IN_STATEMENT)  # fmt: skip
    return json_response({
        "nonce": nonce, "network": network, "domain": w.domain, "uri": w.uri,
        "chain_id": w.chain_id, "issued_at": template.issued_at,
        "expiration_time": template.expiration_time, "message": template.text(),
    })  # fmt: skip


async def post_session(request: web.Request) -> web.Response:
    w, sessions = request.app[WALLETS], request.app[SESSIONS]
    body = await sign_in_body(request)
    message, signature = text_field(body, "message"), text_field(body, "signature")
    network = _sign_in_network(request, body)
    if request.app[ACCESS].tokens is None:
        raise Forbidden("the member portal needs [auth] token_secret", field="message")
    nonce = message.partition("\nNonce: ")[2].partition("\n")[0]
    exp = sessions.wallet_nonce_expiry(nonce, network)
    if exp is None:
        raise BadRequest(f"the nonce was not issued for a wallet sign-in to {network!r}: ask "
                         "POST /v1/session/wallet/nonce for one", field="message", code="nonce")  # fmt: skip
    now = w.clock()
    if now >= exp:
        raise BadRequest(
            "the nonce has expired: ask for a new one", field="message", code="expired"
        )
    try:
        msg = await asyncio.to_thread(
            verify, message, signature, domain=w.domain, chain_id=w.chain_id, nonce=nonce,
            now=now, max_age_s=w.nonce_ttl_s, uri=w.uri,
        )  # fmt: skip
    except SiweError as err:
        raise BadRequest(str(err), field="message", code=err.code) from None
    address = checksum(msg.address)
    try:
        owner = await asyncio.to_thread(w.owner, network, address)
        if owner is None:
            raise NotFound(f"no member of {network!r} linked wallet {address}: sign in with your "
                           "network's link and link the wallet first",
                           field="message", code="unknown_wallet")  # fmt: skip
        if owner == AMBIGUOUS:
            raise Conflict(f"wallet {address} was linked by several members of {network!r}: "
                           "sign in with your network's link", field="message",
                           code="ambiguous_wallet")  # fmt: skip
        fresh = await asyncio.to_thread(
            w.r.set, w.used_key(nonce), b"1", nx=True, ex=max(1, exp - int(now) + 1)
        )
    except (redis.RedisError, OSError) as err:
        raise Unavailable("wallet store (redis) unavailable") from err
    if not fresh:
        raise Conflict("this nonce was used already: ask for a new one", field="message",
                       code="nonce_used")  # fmt: skip
    log.info("wallet_sign_in network=%s user=%s address=%s", network, owner, address)
    return signed_in(sessions, "member", network, owner)


def install(app: web.Application, settings: Settings, redis_url: str, keys: Keys,
            clock: Callable[[], float] = time.time) -> None:  # fmt: skip
    r = connect(redis_url, socket_timeout=30, socket_connect_timeout=30)
    app[WALLETS] = Wallets(r, keys, settings, clock)

    async def running(app: web.Application) -> AsyncIterator[None]:
        for network in settings.networks:  # wallets linked before the index (once; else lazily)
            try:
                await asyncio.to_thread(build_index, r, keys, network)
            except (redis.RedisError, OSError) as err:
                log.warning("wallet_index_deferred network=%s error=%s", network, err)
        yield
        r.close()

    app.cleanup_ctx.append(running)
    app.router.add_post("/v1/members/{user_id}/wallets/nonce", post_nonce)
    app.router.add_post("/v1/members/{user_id}/wallets", post_wallet)
    app.router.add_get("/v1/members/{user_id}/wallets", get_wallets)
    app.router.add_post("/v1/session/wallet/nonce", post_session_nonce)
    app.router.add_post("/v1/session/wallet", post_session)
