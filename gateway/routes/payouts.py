"""Payout routes: a network requests payouts; its admins list, retry and void them.

Every route is signed with a network API key (like the raffle admin routes) that covers
`?network=`. A request records the payouts (admitted by engine/payout.py: minimum, daily
limit, idempotency key) and answers at once; the payout actor reserves their points, sends
them and retries them (actors/payout.py). A payout is read back with GET /v1/payouts/{id}.

POST /v1/payouts?network=N         {"payouts": [{"user_id", "points", "sink", "destination", "key"}]}
                                    -> 200 {"results": [{"key", "code", "id", "status"}]}
GET  /v1/payouts?network=N[&status=S][&limit=L]   -> {"payouts": [...], "counts": {...}}
GET  /v1/payouts/{id}?network=N
POST /v1/payouts/{id}/retry?network=N   (a dead payout: sent again)
POST /v1/payouts/{id}/void?network=N    (a reserved or dead payout: its points go back)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web

from actors.keys import Keys
from actors.payout import PayoutNotFound, PayoutStore
from actors.redisconn import connect
from engine import payout as eng
from engine.payout import Payout, PayoutError, Request
from gateway.auth import check_network
from gateway.errors import BadRequest, Conflict, NotFound, Unavailable, json_response
from gateway.reads import ACCESS, READER, parse_id, parse_int
from gateway.settings import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024
REDIS_TIMEOUT_S = 30.0


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str
    points: int
    key: str
    sink: str = "webhook"
    destination: str = ""


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    payouts: list[_Item]


_body_decoder = msgspec.json.Decoder(_Body)


class Payouts:
    """What the routes share: the store (sync Redis, used from a thread) and the limits."""

    def __init__(self, store: PayoutStore, settings: Settings, clock: Callable[[], float]) -> None:
        self.store = store
        self.enabled = settings.payouts.enabled
        self.webhooks = bool(settings.payouts.webhook_secret)
        self.max_items = settings.payouts.max_request_payouts
        self.clock = clock


PAYOUTS = web.AppKey("payouts", Payouts)


def view(p: Payout) -> dict[str, Any]:
    """A payout as the API and the CLI show it."""
    return {
        "id": p.id,
        "network": p.network,
        "user_id": p.user_id,
        "points": p.points,
        "units": p.amount,
        "sink": p.sink,
        "destination": p.destination,
        "key": p.key,
        "status": p.status,
        "attempts": p.attempts,
        "next_at": p.next_at,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "reason": p.reason,
        "refund_owed": p.refund,
    }


async def _signed(request: web.Request) -> tuple[str, bytes]:
    """The network of a request signed by a key that covers it, and the body."""
    network = request.app[READER].network_of(request.query)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"body over {MAX_BODY_BYTES} bytes", field="body", code="too_large")
    body = await request.read()
    key = request.app[ACCESS].auth.verify_target(
        request.headers, request.method, request.raw_path, body
    )
    check_network(key, network)
    return network, body


def _requests(pay: Payouts, network: str, body: bytes) -> list[Request]:
    try:
        items = _body_decoder.decode(body).payouts
    except msgspec.ValidationError as err:
        raise BadRequest(str(err), field="payouts", code="invalid_body") from err
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from err
    if not 1 <= len(items) <= pay.max_items:
        raise BadRequest(f"give 1 to {pay.max_items} payouts", field="payouts")
    reqs = []
    for i, it in enumerate(items):
        req = Request(network=network, user_id=it.user_id, points=it.points, key=it.key,
                      sink=it.sink, destination=it.destination)  # fmt: skip
        try:
            eng.validate(req)
        except PayoutError as err:
            raise BadRequest(str(err), field=f"payouts.{err.field}", index=i) from None
        if req.sink == "webhook" and not pay.webhooks:
            raise BadRequest("webhook payouts need [payouts] webhook_secret", field="payouts.sink",
                             index=i, code="sink_unavailable")  # fmt: skip
        reqs.append(req)
    return reqs


async def post_payouts(request: web.Request) -> web.Response:
    pay = request.app[PAYOUTS]
    network, body = await _signed(request)
    if not pay.enabled:
        raise Unavailable("payouts are disabled ([payouts] enabled = false)")
    reqs = _requests(pay, network, body)
    out = await asyncio.to_thread(pay.store.create, reqs, pay.clock())
    results = [
        {
            "key": q.key,
            "code": code,
            "id": p.id if p else eng.payout_id(network, q.key),
            "status": p.status if p else None,
        }
        for q, (code, p) in zip(reqs, out, strict=True)
    ]
    return json_response({"results": results})


async def _one(request: web.Request) -> tuple[Payouts, str, str]:
    pay = request.app[PAYOUTS]
    network, _ = await _signed(request)
    pid = parse_id(request.match_info["payout_id"], "payout_id")
    return pay, network, pid


async def _load(pay: Payouts, network: str, pid: str) -> Payout:
    p = await asyncio.to_thread(pay.store.get, pid)
    if p is None or p.network != network:
        raise NotFound(f"no payout {pid!r} in network {network!r}", field="payout_id",
                       code="payout_not_found")  # fmt: skip
    return p


async def get_payout(request: web.Request) -> web.Response:
    pay, network, pid = await _one(request)
    return json_response(view(await _load(pay, network, pid)))


async def list_payouts(request: web.Request) -> web.Response:
    pay = request.app[PAYOUTS]
    network, _ = await _signed(request)
    status = request.query.get("status", "")
    if status and status not in eng.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(eng.STATUSES)}", field="status")
    limit = parse_int(request.query, "limit", 100, 1, 1_000)
    got = await asyncio.to_thread(pay.store.list, status, limit * 4)
    mine = [view(p) for p in got if p.network == network][:limit]
    return json_response({"payouts": mine})


def _admin(change: Callable[[Payout, float], Payout]) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        pay, network, pid = await _one(request)
        await _load(pay, network, pid)
        try:
            p = await asyncio.to_thread(pay.store.update, pid, change, pay.clock())
        except PayoutNotFound as err:
            raise NotFound(str(err), field="payout_id", code="payout_not_found") from None
        except PayoutError as err:
            raise Conflict(str(err), field="status", code=err.code) from None
        return json_response(view(p))

    return handler


def install(app: web.Application, settings: Settings, redis_url: str, keys: Keys,
            clock: Callable[[], float] = time.time) -> None:  # fmt: skip
    r = connect(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    app[PAYOUTS] = Payouts(PayoutStore(r, keys, settings.payouts.rules()), settings, clock)

    async def running(app: web.Application) -> AsyncIterator[None]:
        yield
        r.close()

    app.cleanup_ctx.append(running)
    app.router.add_post("/v1/payouts", post_payouts)
    app.router.add_get("/v1/payouts", list_payouts)
    app.router.add_get("/v1/payouts/{payout_id}", get_payout)
    app.router.add_post("/v1/payouts/{payout_id}/retry", _admin(eng.retried))
    app.router.add_post("/v1/payouts/{payout_id}/void", _admin(eng.voided))
