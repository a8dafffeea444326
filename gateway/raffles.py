"""Raffle routes: admin lifecycle, member ticket purchases, and the public, verifiable record.

Admin routes are signed by an API key covering the network; a request with a JSON body
signs `"{METHOD} {target}\\n" + body` (a body-less one signs `"{METHOD} {target}"`, as
reads do). Members buy with their member token (or a key acting for them). Commands go to
the raffle actor's log (actors/raffle.py) and are answered once it has committed them;
everything public is read from the committed state in Redis and recomputed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, cast

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from msgspec import Meta

from actors.chain_beacon import BeaconError, ask_actor_async, not_configured, read_node
from actors.keys import Keys
from actors.raffle import Command, RaffleClient, RaffleKeys, RaffleTimeout, Reply, summary
from engine import raffle as eng
from engine.gating import required_tier, shortfall
from engine.member import state_decoder
from engine.rules import TierRules
from gateway.auth import check_network
from gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unauthorized,
    Unavailable,
    json_response,
)
from gateway.gating import CHAIN_GATE, ChainUnreadable
from gateway.reads import ACCESS, READER, parse_id, parse_int
from gateway.settings import ApiKey

MAX_BODY_BYTES = 64 * 1024
CACHE_RAFFLES = 8
"""Closed raffles whose entries a gateway process keeps (verify, record and proofs)."""
LIST_MAX = 200
IDEMPOTENCY_HEADER = "Idempotency-Key"


STATUS_OF = {
    "raffle_not_found": 404,
    "raffle_exists": 409,
    "raffle_not_open": 409,
    "raffle_open": 409,
    "raffle_closed": 409,
    "raffle_drawn": 409,
    "raffle_cancelled": 409,
    "ticket_limit": 409,
    "limit_reached": 409,
    "winner_cooldown": 409,
    "cooldown": 409,
    "insufficient_points": 409,
    "idempotency_conflict": 409,
    "conflict": 409,
    "tier_too_low": 403,
    "not_purchasable": 409,
    "keyword_only": 409,
    "not_keyword": 409,
    "chain_unavailable": 409,
    "beacon_not_ready": 409,
}
"""HTTP status of each raffle outcome code (the rest, bad input: 400)."""


class RaffleRefused(GatewayError):
    """The raffle actor refused the command: its code and field, as the actor said."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.message or reply.code, field=reply.field or None, code=reply.code)
        self.status = STATUS_OF.get(reply.code, 400)
        self.extra = dict(reply.body)  # e.g. the balance of insufficient_points


class Raffles:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        commands: RaffleClient,
        *,
        chain_rpc: str = "",
        chain_embedded: bool = False,
        confirmations: int = 1,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.rk = RaffleKeys(keys)
        self.commands = commands
        self.cache: dict[tuple[str, str, bytes], eng.Raffle] = {}
        self.chain_rpc = chain_rpc
        """Chain beacons: read from this node; "" = the embedded EVM if `chain_embedded`
        (the payout actor runs it), else no chain (actors/chain_beacon.py)."""
        self.chain_embedded = chain_embedded
        self.confirmations = confirmations

    async def send(self, cmd: Command) -> dict[str, Any]:
        try:
            reply = await self.commands.send(cmd)
        except RaffleTimeout as err:
            raise Unavailable(str(err)) from err
        if not reply.ok:
            raise RaffleRefused(reply)
        return reply.body

    async def meta(self, net: str, rid: str) -> tuple[eng.Raffle, bytes]:
        """A raffle without its holdings, and its stored bytes."""
        raw = await self.redis.get(self.rk.meta(net, rid))
        if raw is None:
            raise NotFound(f"no raffle {rid!r} in network {net!r}", field="raffle_id",
                           code="raffle_not_found")  # fmt: skip
        return eng.raffle_decoder.decode(raw), raw

    async def load(self, net: str, rid: str) -> eng.Raffle:
        """A raffle with every holding. Once closed its entries no longer change: the last
        few such raffles are kept, keyed by their stored meta (a draw or cancel changes it)."""
        raffle, raw = await self.meta(net, rid)
        key = (net, rid, hashlib.blake2b(raw, digest_size=16).digest())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        held = await self.redis.hgetall(self.rk.holdings(net, rid))
        raffle.holdings = {u.decode(): eng.holding_decoder.decode(h) for u, h in held.items()}
        if raffle.status in ("closed", "drawn", "cancelled"):
            if len(self.cache) >= CACHE_RAFFLES:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = raffle
        return raffle


RAFFLES = web.AppKey("raffles", Raffles)
_object = msgspec.json.Decoder(dict[str, Any])


class DrawBeacon(msgspec.Struct, forbid_unknown_fields=True):
    """A draw's beacon as asked: an admin raffle's value, or {"source": "chain"} (a chain
    raffle's value is read from the chain, never taken from the request)."""

    source: Literal["admin", "chain"]
    value: str = ""
    ref: Annotated[str, Meta(max_length=128, pattern=r"^[^\n]*$")] = ""


class DrawBody(msgspec.Struct, forbid_unknown_fields=True):
    beacon: DrawBeacon | None = None


class BuyBody(msgspec.Struct, forbid_unknown_fields=True):
    tickets: int = 1
    user_id: str = ""
    """Only with an API key: the member bought for."""
    subscriber: bool = False
    """Only with an API key: the member subscribes to the channel (luck)."""


_draw = msgspec.json.Decoder(DrawBody)
_buy = msgspec.json.Decoder(BuyBody)


def terms_of(body: bytes, network: str) -> eng.Terms:
    """A create request's terms; `network` defaults to the ?network= and must equal it."""
    data = _decode(_object, body)
    data.setdefault("network", network)
    terms: eng.Terms = _decode(lambda _: msgspec.convert(data, eng.Terms), body)
    if terms.network != network:
        raise BadRequest(f"terms.network must be {network!r} (the ?network=)", field="network")
    return terms


def _decode(decoder: Any, body: bytes) -> Any:
    """decoder.decode(body) (or decoder(body)), its errors as 400s naming the field."""
    decode = decoder.decode if hasattr(decoder, "decode") else decoder
    try:
        return decode(body or b"{}")
    except msgspec.ValidationError as err:
        text = str(err)
        path = text.rsplit("`$.", 1)[1].rstrip("`") if "`$." in text else ""
        named = text.split("field `", 1)[1].split("`", 1)[0] if "field `" in text else ""
        field = ".".join(x for x in (path, named) if x)
        raise BadRequest(text, field=field or "body", code="invalid_body") from err
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from err
    except ValueError as err:  # __post_init__ of the terms
        raise BadRequest(str(err), field="terms", code="invalid_body") from err


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"body over {MAX_BODY_BYTES} bytes", field="body", code="too_large")
    return await request.read()


def _admin_key(request: web.Request, body: bytes, network: str) -> ApiKey:
    """The API key that signed "{METHOD} {target}[\n{body}]" and covers `network`."""
    key = request.app[ACCESS].auth.verify_target(
        request.headers, request.method, request.raw_path, body
    )
    check_network(key, network)
    return key


def _network(request: web.Request) -> str:
    return request.app[READER].network_of(request.query)


def _raffle_id(request: web.Request) -> str:
    return parse_id(request.match_info["raffle_id"], "raffle_id")


async def chain_beacon(raffles: Raffles, closed_at: int) -> eng.Beacon:
    """A chain raffle's beacon: the hash of the first block whose timestamp is after
    `closed_at` (value "0x...", ref "chain ID block N"), read from `[chain] rpc` (409
    beacon_not_ready while the newest block is not after close), or from the embedded EVM
    through the payout actor (which mines a block if none is after close); 409
    chain_unavailable when neither is configured, 503 when the chain cannot be read."""
    try:
        if raffles.chain_rpc:
            return await asyncio.to_thread(read_node, raffles.chain_rpc, closed_at,
                                           raffles.confirmations)  # fmt: skip
        if raffles.chain_embedded:
            return await ask_actor_async(raffles.redis, raffles.keys, closed_at,
                                         raffles.commands.timeout_s)  # fmt: skip
        raise not_configured()
    except BeaconError as err:
        if err.status >= 500:
            raise ChainUnreadable(err.message, field="beacon") from err
        raise RaffleRefused(Reply("", err.code, err.message, "beacon")) from err


async def draw_beacon(raffles: Raffles, network: str, rid: str, body: bytes) -> eng.Beacon | None:
    """The beacon to draw with: an admin raffle's from the body (its value required); a
    chain raffle's read from the chain (the body may only say {"source": "chain"}). None
    when the raffle is not closed (the raffle actor answers why)."""
    asked = cast("DrawBody", _decode(_draw, body)).beacon
    raffle, _ = await raffles.meta(network, rid)
    if raffle.terms.beacon == "chain":
        if asked is not None and (asked.source != "chain" or asked.value or asked.ref):
            raise BadRequest(
                "this raffle draws with the hash of the first block after close, read from the "
                'chain: send {"beacon": {"source": "chain"}} or no body, without a value',
                field="beacon", code="bad_beacon",
            )  # fmt: skip
        if raffle.status != "closed":
            return None
        return await chain_beacon(raffles, raffle.closed_at)
    if asked is None or asked.source != "admin" or not asked.value:
        raise BadRequest(
            'draw needs {"beacon": {"source": "admin", "value", "ref"}} (a value fixed after '
            "close)",
            field="beacon", code="bad_beacon",
        )  # fmt: skip
    return eng.Beacon("admin", asked.value, asked.ref)


# -- admin ------------------------------------------------------------------------------------
async def create_raffle(request: web.Request) -> web.Response:
    network = _network(request)
    body = await _body(request)
    _admin_key(request, body, network)
    terms = terms_of(body, network)
    cmd = Command(op="create", network=network, raffle=terms.id, ts=0.0, terms=terms)
    return json_response(await request.app[RAFFLES].send(cmd), status=201)


async def raffle_op(request: web.Request) -> web.Response:
    network = _network(request)
    rid = _raffle_id(request)
    body = await _body(request)
    _admin_key(request, body, network)
    op = request.match_info["op"]
    if op not in ("open", "close", "cancel", "draw"):
        raise NotFound(f"no raffle operation {op!r}", field="op")
    beacon = None
    if op == "draw":
        beacon = await draw_beacon(request.app[RAFFLES], network, rid, body)
    elif body:
        raise BadRequest(f"{op} takes no body", field="body")
    cmd = Command(op=op, network=network, raffle=rid, ts=0.0, beacon=beacon)  # type: ignore[arg-type]
    return json_response(await request.app[RAFFLES].send(cmd))


async def list_raffles(request: web.Request) -> web.Response:
    network = _network(request)
    _admin_key(request, b"", network)
    limit = parse_int(request.query, "limit", 50, 1, LIST_MAX)
    raffles = request.app[RAFFLES]
    ids = await raffles.redis.zrevrange(raffles.rk.index(network), 0, limit - 1)
    out = [summary((await raffles.meta(network, rid.decode()))[0]) for rid in ids]
    return json_response({"network": network, "raffles": out})


# -- members ------------------------------------------------------------------------------------
def _idempotency_key(request: web.Request) -> str:
    value = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not (0 < len(value) <= 128 and value.isascii() and value.isprintable()) or " " in value:
        raise BadRequest(f"{IDEMPOTENCY_HEADER} is required: 1-128 visible ASCII characters",
                         field=IDEMPOTENCY_HEADER, code="bad_idempotency_key")  # fmt: skip
    return value


def _buyer(request: web.Request, body: bytes, network: str, buy: BuyBody) -> tuple[str, bool]:
    """(user_id, subscriber) of a purchase: the member token's member, or, for an API key
    covering the network, the body's user_id."""
    authorization = request.headers.get("Authorization")
    if authorization is None:
        _admin_key(request, body, network)
        if not buy.user_id:
            raise BadRequest("user_id is required with an api key", field="user_id")
        return parse_id(buy.user_id, "user_id"), buy.subscriber
    who = request.app[ACCESS].principal(request.headers, request.method, request.raw_path)
    if isinstance(who, ApiKey):  # pragma: no cover - principal() returns a token here
        raise Unauthorized("sign with the api key, not a bearer token", field="Authorization")
    if who.network != network:
        raise Forbidden("the member token is for another network", field="network")
    if buy.user_id and buy.user_id != who.user_id:
        raise Forbidden("a member token buys only for its own member", field="user_id")
    if buy.subscriber:
        raise Forbidden("subscriber status is given by the network's api key",
                        field="subscriber")  # fmt: skip
    return who.user_id, False


def _gate(
    request: web.Request, network: str, terms: eng.Terms, tier: int, lifetime: int,
    tiers: TierRules,
) -> None:  # fmt: skip
    """403 tier_too_low, with the tier required and the lifetime points (or, gated on chain,
    tokens) still needed, when the raffle's min_tier or its channel's
    ([networks.N.channels.C] min_tier) is above the member's tier (engine/gating.py)."""
    book = request.app[READER].rules
    names = tiers.names
    own = names[min(terms.min_tier, len(names) - 1)] if terms.min_tier else ""
    channel = book.earn(network, terms.channel).min_tier if terms.channel else ""
    need = required_tier(names, own, channel)
    short = shortfall(tiers, need, tier, lifetime) if need else None
    if short is not None:
        err = Forbidden(f"this raffle needs tier {short.tier_required} or higher", field="tier",
                        code="tier_too_low")  # fmt: skip
        err.extra.update(tier_required=short.tier_required, points_needed=short.points_needed)
        raise err


async def buy_tickets(request: web.Request) -> web.Response:
    network = _network(request)
    rid = _raffle_id(request)
    body = await _body(request)
    buy: BuyBody = _decode(_buy, body)
    user_id, subscriber = _buyer(request, body, network, buy)
    key = _idempotency_key(request)
    if not 1 <= buy.tickets <= eng.MAX_TICKETS_PER_MEMBER:
        raise BadRequest(f"tickets must be 1 to {eng.MAX_TICKETS_PER_MEMBER}", field="tickets",
                         code="bad_tickets")  # fmt: skip
    raffles = request.app[RAFFLES]
    async with raffles.redis.pipeline(transaction=False) as pipe:
        pipe.hget(raffles.keys.mstate, f"{network}:{user_id}")
        pipe.hget(raffles.rk.subscribers(network), user_id)
        pipe.get(raffles.rk.meta(network, rid))
        raw, sub_until, meta = await pipe.execute()
    state = state_decoder.decode(raw) if raw else None
    tiers, tier, amount = await request.app[CHAIN_GATE].standing(
        network, user_id, state.tier if state is not None else 0,
        state.lifetime if state is not None else 0,
    )  # fmt: skip
    if meta is not None:
        _gate(request, network, eng.raffle_decoder.decode(meta).terms, tier, amount, tiers)
    subscriber = subscriber or (sub_until is not None and float(sub_until) > time.time())
    cmd = Command(op="buy", network=network, raffle=rid, ts=0.0, user_id=user_id, key=key,
                  tickets=buy.tickets, tier=tier, subscriber=subscriber)  # fmt: skip
    return json_response(await raffles.send(cmd), status=201)


async def member_tickets(request: web.Request) -> web.Response:
    """A member's tickets in the newest raffles of the network (token or api key), and the
    open ticket raffles among them (`open`: price, limit, tickets held) it may buy into."""
    network = _network(request)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    access = request.app[ACCESS]
    access.member(access.principal(request.headers, request.method, request.raw_path),
                  network, user_id)  # fmt: skip
    limit = parse_int(request.query, "limit", 50, 1, LIST_MAX)
    raffles = request.app[RAFFLES]
    ids = [
        i.decode() for i in await raffles.redis.zrevrange(raffles.rk.index(network), 0, limit - 1)
    ]
    async with raffles.redis.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hget(raffles.rk.holdings(network, rid), user_id)
            pipe.get(raffles.rk.meta(network, rid))
        got = await pipe.execute()
    out, open_ = [], []
    for i, rid in enumerate(ids):
        held, meta = got[2 * i], got[2 * i + 1]
        if meta is None:
            continue
        m = eng.raffle_decoder.decode(meta)
        h = eng.holding_decoder.decode(held) if held is not None else None
        if m.status == "open" and m.terms.kind == "ticket":  # what the member may buy into
            open_.append({"raffle": rid, "title": m.terms.title, "channel": m.terms.channel,
                          "price_points": m.terms.price_points,
                          "max_tickets_per_member": m.terms.max_tickets_per_member,
                          "tickets": h.tickets if h is not None else 0,
                          "close_at": m.terms.close_at})  # fmt: skip
        if h is None:
            continue
        out.append({"raffle": rid, "title": m.terms.title, "status": m.status,
                    "tickets": h.tickets, "paid_points": h.paid_points, "luck_pct": h.luck_pct,
                    "won": any(w.user_id == user_id for w in m.winners)})  # fmt: skip
    return json_response({"network": network, "user_id": user_id, "raffles": out, "open": open_})


# -- public ---------------------------------------------------------------------------------------
async def get_raffle(request: web.Request) -> web.Response:
    raffle, _ = await request.app[RAFFLES].meta(_network(request), _raffle_id(request))
    return json_response(summary(raffle))


async def get_record(request: web.Request) -> web.Response:
    """The whole published record (leaves included): what `rally raffle verify` checks."""
    raffle = await request.app[RAFFLES].load(_network(request), _raffle_id(request))
    record = await asyncio.to_thread(eng.publish, raffle)
    return web.Response(body=eng.published_encoder.encode(record), content_type="application/json")


async def verify_raffle(request: web.Request) -> web.Response:
    raffle = await request.app[RAFFLES].load(_network(request), _raffle_id(request))
    record = eng.published_decoder.decode(eng.published_encoder.encode(eng.publish(raffle)))
    result = await asyncio.to_thread(eng.verify, record)
    return json_response(verification_json(record, result))


def verification_json(record: eng.Published, result: eng.Verification) -> dict[str, Any]:
    return {
        "raffle": record.raffle,
        "network": record.terms.network,
        "ok": result.ok,
        "winners": [msgspec.to_builtins(w) for w in result.winners],
        "published_winners": [msgspec.to_builtins(w) for w in record.winners],
        "checks": [msgspec.to_builtins(c) for c in result.checks],
    }


async def member_proof(request: web.Request) -> web.Response:
    """The Merkle proof that `user_id`'s tickets were in the draw (once closed)."""
    raffle = await request.app[RAFFLES].load(_network(request), _raffle_id(request))
    user_id = parse_id(request.match_info["user_id"], "user_id")
    if not raffle.root:
        raise Conflict("the entries freeze at close; no proof before", field="status",
                       code="raffle_not_closed")  # fmt: skip
    leaves = eng.leaves_of(raffle.holdings)
    index = next((i for i, leaf in enumerate(leaves) if leaf.user_id == user_id), None)
    if index is None:
        raise NotFound(f"{user_id!r} holds no ticket in this raffle", field="user_id",
                       code="not_entered")  # fmt: skip
    path = await asyncio.to_thread(eng.merkle_proof, leaves, index)
    leaf = leaves[index]
    return json_response({
        "raffle": raffle.terms.id, "root": raffle.root, "count": raffle.count, "index": index,
        "leaf": {"user_id": leaf.user_id, "first": leaf.first, "tickets": leaf.tickets,
                 "weight": leaf.weight},
        "path": [{"hash": h, "side": side} for h, side in path],
        "valid": eng.verify_proof(leaf, path, raffle.root),
    })  # fmt: skip


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RAFFLES].commands.close()


def add_raffle_routes(
    app: web.Application,
    client: aioredis.Redis,
    keys: Keys,
    timeout_s: float = 30.0,
    *,
    chain_rpc: str = "",
    chain_embedded: bool = False,
    confirmations: int = 1,
) -> None:
    app[RAFFLES] = Raffles(client, keys, RaffleClient(client, keys, timeout_s=timeout_s),
                           chain_rpc=chain_rpc, chain_embedded=chain_embedded,
                           confirmations=confirmations)  # fmt: skip
    app.cleanup_ctx.append(_lifecycle)
    r = app.router
    r.add_post("/v1/raffles", create_raffle)
    r.add_get("/v1/raffles", list_raffles)
    r.add_get("/v1/raffles/{raffle_id}", get_raffle)
    r.add_get("/v1/raffles/{raffle_id}/record", get_record)
    r.add_get("/v1/raffles/{raffle_id}/verify", verify_raffle)
    r.add_get("/v1/raffles/{raffle_id}/proof/{user_id}", member_proof)
    r.add_post("/v1/raffles/{raffle_id}/tickets", buy_tickets)
    r.add_post("/v1/raffles/{raffle_id}/{op}", raffle_op)
    r.add_get("/v1/members/{user_id}/raffles", member_tickets)
