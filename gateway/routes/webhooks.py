"""Event webhook routes: a network's admins list and change its subscriptions and read, and
retry, its deliveries (the payout actor sends them: actors/event_hooks.py).

Signed with a network API key covering `?network=`, like the payout routes.

GET    /v1/webhooks?network=N                    -> {"subscriptions": [...], "counts": {...}}
POST   /v1/webhooks?network=N   {"id", "url", "events", "secret"}  -> the subscription
DELETE /v1/webhooks/{sub_id}?network=N           (an added one; a configured one: 409)
GET    /v1/webhooks/deliveries?network=N[&status=pending|dead][&limit=L]
GET    /v1/webhooks/deliveries/{id}?network=N
POST   /v1/webhooks/deliveries/{id}/retry?network=N   (a dead delivery: sent again)

Secrets are never shown: a subscription says only whether it has its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web

from actors.event_hooks import DeliveryNotFound, HookStore
from actors.keys import Keys
from actors.redisconn import connect
from engine import event_hooks as eng
from engine.event_hooks import Delivery, HookError, Subscription
from engine.webhook import WebhookError, secret_bytes
from gateway.errors import BadRequest, Conflict, NotFound, json_response
from gateway.reads import parse_id, parse_int
from gateway.routes.payouts import REDIS_TIMEOUT_S, _signed
from gateway.settings import Settings


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    url: str
    events: list[str] = []
    secret: str = ""


_body_decoder = msgspec.json.Decoder(_Body)


class Hooks:
    def __init__(self, store: HookStore, max_subscriptions: int, clock: Callable[[], float]):
        self.store = store
        self.max_subscriptions = max_subscriptions
        self.clock = clock


HOOKS = web.AppKey("hooks", Hooks)


def sub_view(s: Subscription, configured: bool) -> dict[str, Any]:
    return {"id": s.id, "network": s.network, "url": s.url, "events": list(s.events or eng.EVENT_TYPES),
            "own_secret": bool(s.secret), "configured": configured}  # fmt: skip


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "subscription": d.sub_id, "network": d.network, "url": d.url,
            "event": d.event, "notice_id": d.notice_id, "status": d.status,
            "attempts": d.attempts, "next_at": d.next_at, "created_at": d.created_at,
            "updated_at": d.updated_at, "reason": d.reason,
            "body": msgspec.json.decode(d.body)}  # fmt: skip


async def list_subscriptions(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    network, _ = await _signed(request)
    subs = await asyncio.to_thread(hooks.store.subscriptions)
    mine = [sub_view(s, s.id in hooks.store.configured) for s in subs if s.network == network]
    counts = await asyncio.to_thread(hooks.store.counts)
    return json_response({"subscriptions": mine, "counts": counts})


async def add_subscription(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    network, body = await _signed(request)
    try:
        b = _body_decoder.decode(body)
    except msgspec.ValidationError as err:
        raise BadRequest(str(err), field="body", code="invalid_body") from err
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from err
    sub = Subscription(id=b.id, network=network, url=b.url, events=tuple(b.events),
                       secret=b.secret)  # fmt: skip
    try:
        eng.validate(sub)
        if sub.secret:
            secret_bytes(sub.secret)
    except HookError as err:
        raise BadRequest(str(err), field=err.field) from None
    except WebhookError as err:
        raise BadRequest(str(err), field="secret") from None
    existing = await asyncio.to_thread(hooks.store.subscriptions)
    other = next((s for s in existing if s.id == sub.id), None)
    if other is not None and other.network != network:
        raise Conflict(f"subscription id {sub.id!r} is taken", field="id", code="id_taken")
    added = [s for s in existing if s.id not in hooks.store.configured]
    if other is None and len(added) >= hooks.max_subscriptions:
        raise Conflict(f"at most {hooks.max_subscriptions} subscriptions ([events] "
                       "max_subscriptions)", field="id", code="too_many")  # fmt: skip
    if not await asyncio.to_thread(hooks.store.subscribe, sub):
        raise Conflict(f"{sub.id!r} is configured in [events]: change it there", field="id",
                       code="configured")  # fmt: skip
    return json_response(sub_view(sub, False))


async def delete_subscription(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    network, _ = await _signed(request)
    sid = parse_id(request.match_info["sub_id"], "sub_id")
    subs = await asyncio.to_thread(hooks.store.subscriptions)
    sub = next((s for s in subs if s.id == sid and s.network == network), None)
    if sub is None:
        raise NotFound(f"no subscription {sid!r}", field="sub_id", code="subscription_not_found")
    if sid in hooks.store.configured:
        raise Conflict(f"{sid!r} is configured in [events]: remove it there", field="sub_id",
                       code="configured")  # fmt: skip
    await asyncio.to_thread(hooks.store.unsubscribe, sid)
    return json_response({"deleted": sid})


async def list_deliveries(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    network, _ = await _signed(request)
    status = request.query.get("status", "pending")
    if status not in ("pending", "dead"):
        raise BadRequest("status must be pending or dead", field="status")
    limit = parse_int(request.query, "limit", 100, 1, 1_000)
    got = await asyncio.to_thread(hooks.store.list, status, 1_000)
    mine = [delivery_view(d) for d in got if d.network == network][:limit]
    return json_response({"deliveries": mine})


async def _delivery(request: web.Request) -> tuple[Hooks, Delivery]:
    hooks = request.app[HOOKS]
    network, _ = await _signed(request)
    did = parse_id(request.match_info["delivery_id"], "delivery_id")
    d = await asyncio.to_thread(hooks.store.get, did)
    if d is None or d.network != network:
        raise NotFound(f"no delivery {did!r} in network {network!r}", field="delivery_id",
                       code="delivery_not_found")  # fmt: skip
    return hooks, d


async def get_delivery(request: web.Request) -> web.Response:
    _, d = await _delivery(request)
    return json_response(delivery_view(d))


async def retry_delivery(request: web.Request) -> web.Response:
    hooks, d = await _delivery(request)
    try:
        new = await asyncio.to_thread(hooks.store.retry, d.id, hooks.clock())
    except DeliveryNotFound as err:
        raise NotFound(str(err), field="delivery_id", code="delivery_not_found") from None
    except HookError as err:
        raise Conflict(str(err), field="status", code=err.code) from None
    return json_response(delivery_view(new))


def install(app: web.Application, settings: Settings, redis_url: str, keys: Keys,
            clock: Callable[[], float] = time.time) -> None:  # fmt: skip
    r = connect(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    ev = settings.events
    configured = [msgspec.convert(s, Subscription) for s in ev.subscriptions]
    store = HookStore(r, keys, configured, ev.retention_s)
    app[HOOKS] = Hooks(store, ev.max_subscriptions, clock)

    async def running(app: web.Application) -> AsyncIterator[None]:
        yield
        r.close()

    app.cleanup_ctx.append(running)
    app.router.add_get("/v1/webhooks", list_subscriptions)
    app.router.add_post("/v1/webhooks", add_subscription)
    app.router.add_get("/v1/webhooks/deliveries", list_deliveries)
    app.router.add_get("/v1/webhooks/deliveries/{delivery_id}", get_delivery)
    app.router.add_post("/v1/webhooks/deliveries/{delivery_id}/retry", retry_delivery)
    app.router.add_delete("/v1/webhooks/{sub_id}", delete_subscription)
