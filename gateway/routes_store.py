"""The reward store's routes: the catalog (admins write it, members and keys read it),
redemptions (members redeem with an Idempotency-Key and list their own; admins list, fulfil
and refund). The rules are in engine/store.py, the Redis side in gateway/store.py.

Admin routes need an API key covering the network (a body, when there is one, is signed
too: gateway/signing.py). Member routes take the member's token (`Authorization: Bearer`)
or such an API key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web

from actors.spend import SpendTimeout
from engine.spend import CONFLICT, COOLDOWN, INSUFFICIENT_POINTS, LIMIT_REACHED, Result
from engine.store import (
    UNLIMITED,
    Item,
    Redemption,
    StoreError,
    build_item,
    check_item_id,
    check_redeemable,
    decode_spec,
    redeem_transfer,
    redemption_id,
    stock_of,
)
from gateway.auth import MemberToken, Principal, check_network
from gateway.errors import BadRequest, Forbidden, GatewayError, json_response
from gateway.gating import CHAIN_GATE
from gateway.reads import ACCESS, READER, parse_id, parse_int
from gateway.settings import Settings
from gateway.spends import SPENDS
from gateway.store import Store, StoreRefused

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BODY_BYTES = 16 * 1024
STATUSES = ("reserving", "pending", "fulfilled", "refunding", "refunded", "failed")
STORE = web.AppKey("store", Store)


class StoreHTTPError(GatewayError):
    """A store outcome with its own status and code, and maybe when to retry."""

    def __init__(
        self, status: int, code: str, message: str, field: str, retry_at: float | None = None
    ) -> None:
        headers = None
        if retry_at is not None:
            headers = {"Retry-After": str(max(1, int(retry_at - time.time() + 0.999)))}
        super().__init__(message, field=field, code=code, headers=headers)
        self.status = status
        if retry_at is not None:
            self.extra["retry_at"] = retry_at


REFUSALS: dict[str, tuple[int, str]] = {
    "out_of_stock": (409, "item_id"),
    "item_cooldown": (429, "item_id"),
    "stream_limit_reached": (409, "item_id"),
    "not_live": (409, "item_id"),
    "item_not_found": (404, "item_id"),
    "redemption_not_found": (404, "redemption_id"),
    "item_disabled": (409, "item_id"),
    "not_available_yet": (409, "item_id"),
    "no_longer_available": (409, "item_id"),
    "tier_too_low": (403, "min_tier"),
    INSUFFICIENT_POINTS: (409, "cost"),
    "member_limit_reached": (409, "per_member_limit"),
    "member_cooldown": (429, "member_cooldown_s"),
    "idempotency_conflict": (409, IDEMPOTENCY_HEADER),
}
"""Every refusal of the store: its HTTP status and the field it names."""
SPEND_CODES = {
    LIMIT_REACHED: "member_limit_reached",
    COOLDOWN: "member_cooldown",
    CONFLICT: "idempotency_conflict",
}
MESSAGES = {
    INSUFFICIENT_POINTS: "not enough points for this item",
    "member_limit_reached": "this member has redeemed this item as often as allowed",
    "member_cooldown": "this member redeemed this item too recently",
    "idempotency_conflict": f"this {IDEMPOTENCY_HEADER} was used for another redemption",
}


def refused(code: str, message: str | None = None, retry_at: float | None = None) -> GatewayError:
    status, field = REFUSALS[code]
    return StoreHTTPError(status, code, message or MESSAGES.get(code, code), field, retry_at)


def _store_error(err: StoreError) -> GatewayError:
    if err.code in REFUSALS:
        out = refused(err.code, err.message)
        out.extra.update(err.extra)
        return out
    return BadRequest(err.message, field=err.field, code=err.code)


def item_json(item: Item, stock: int) -> dict[str, Any]:
    out = msgspec.structs.asdict(item)
    out["stock"] = None if stock == UNLIMITED else stock
    return out


def redemption_json(red: Redemption) -> dict[str, Any]:
    return msgspec.structs.asdict(red)


# -- who asks -----------------------------------------------------------------------------
async def _body(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadRequest(f"body of {length} bytes; at most {MAX_BODY_BYTES}", field="body")
    return await request.read()


def _principal(request: web.Request, body: bytes) -> Principal:
    return request.app[ACCESS].principal(request.headers, request.method, request.raw_path, body)


def _admin(request: web.Request, body: bytes = b"") -> str:
    """The network of an admin request signed by an API key covering it (401, 403)."""
    network = request.app[READER].network_of(request.query)
    who = _principal(request, body)
    if isinstance(who, MemberToken):
        raise Forbidden("store administration needs an api key", field="Authorization")
    check_network(who, network)
    return network


def _member(request: web.Request, body: bytes = b"") -> tuple[str, str, Principal]:
    """(network, user_id, who) of a member request (401, 400, 403)."""
    network = request.app[READER].network_of(request.query)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    who = _principal(request, body)
    request.app[ACCESS].member(who, network, user_id)
    return network, user_id, who


def _tiers(request: web.Request, network: str) -> tuple[str, ...]:
    return tuple(request.app[READER].rules.network(network).tiers.names)


def _item_id(request: web.Request) -> str:
    try:
        return check_item_id(request.match_info["item_id"])
    except StoreError as err:
        raise _store_error(err) from err


# -- catalog ------------------------------------------------------------------------------
async def put_item(request: web.Request) -> web.Response:
    """Create an item (201) or update the fields given (200)."""
    body = await _body(request)
    network = _admin(request, body)
    store = request.app[STORE]
    item_id = _item_id(request)
    try:
        spec = decode_spec(body)
        old = await store.item(network, item_id)
        item = build_item(
            item_id, network, spec, _tiers(request, network), store.clock(),
            None if old is None else old[0],
        )  # fmt: skip
        stock = stock_of(spec, creating=old is None)
    except StoreError as err:
        raise _store_error(err) from err
    await store.put_item(item, stock)
    left = stock if stock is not None else (old[1] if old is not None else UNLIMITED)
    return json_response(item_json(item, left), status=201 if old is None else 200)


async def get_items(request: web.Request) -> web.Response:
    """The catalog of a network; ?channel=C: the items of channel C and the network-wide
    ones. A member token sees what is enabled; an API key sees everything."""
    network = request.app[READER].network_of(request.query)
    access = request.app[ACCESS]
    admin = False
    if not access.is_public(network) or "Authorization" in request.headers:
        who = _principal(request, b"")
        if isinstance(who, MemberToken):
            if who.network != network:
                raise Forbidden("a member token reads its own network's store", field="network")
        else:
            check_network(who, network)
            admin = True
    channel = request.query.get("channel")
    if channel:
        parse_id(channel, "channel")
    items = [
        item_json(item, stock)
        for item, stock in await request.app[STORE].items(network)
        if (admin or item.enabled) and (not channel or item.channel in ("", channel))
    ]
    return json_response({"network": network, "items": items})


async def get_item(request: web.Request) -> web.Response:
    network = _admin(request)
    found = await request.app[STORE].item(network, _item_id(request))
    if found is None:
        raise refused("item_not_found", "no such item")
    return json_response(item_json(*found))


# -- redemptions --------------------------------------------------------------------------
class RedeemBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    item_id: str


_redeem_decoder = msgspec.json.Decoder(RedeemBody)


def _idempotency_key(request: web.Request) -> str:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        raise BadRequest(
            f"a redemption needs an {IDEMPOTENCY_HEADER} header (a retry with it is safe)",
            field=IDEMPOTENCY_HEADER,
            code="missing_idempotency_key",
        )
    if not 0 < len(value) <= 128 or not value.isascii() or not value.isprintable() or " " in value:
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1-128 visible ASCII characters",
            field=IDEMPOTENCY_HEADER,
            code="bad_idempotency_key",
        )
    return value


def _answer(red: Redemption, created: bool, balance: int | None = None) -> web.Response:
    """A redemption as the redeem route answers it: created (201), replayed (200), or the
    refusal it ended with (its own code, again on every retry)."""
    if red.status == "failed":
        raise refused(SPEND_CODES.get(red.reason, red.reason))
    body: dict[str, Any] = {"redemption": redemption_json(red)}
    if balance is not None:
        body["balance"] = balance
    headers = None if created else {"Idempotent-Replayed": "true"}
    return json_response(body, status=201 if created else 200, headers=headers)


async def post_redemption(request: web.Request) -> web.Response:
    """Redeem one item: POST /v1/members/{user_id}/redemptions {"item_id": "..."}."""
    body = await _body(request)
    network, user_id, _ = _member(request, body)
    idem = _idempotency_key(request)
    try:
        item_id = check_item_id(_redeem_decoder.decode(body).item_id)
    except msgspec.ValidationError as err:
        raise BadRequest(str(err), field="item_id", code="invalid_body") from err
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from err
    except StoreError as err:
        raise _store_error(err) from err
    store = request.app[STORE]
    rid = redemption_id(network, user_id, idem)
    try:
        before = await store.redemption(network, rid)
        if before is not None:
            return await _replay(store, before, item_id)
        found = await store.item(network, item_id)
        if found is None:
            raise refused("item_not_found", f"no item {item_id!r} in network {network!r}")
        item = found[0]
        book = request.app[READER].rules
        rank, lifetime = await store.member_standing(network, user_id)
        rules, rank, lifetime = await request.app[CHAIN_GATE].standing(
            network, user_id, rank, lifetime
        )
        tiers = tuple(rules.names)
        tier = tiers[min(rank, len(tiers) - 1)]
        gate = book.earn(network, item.channel).min_tier
        check_redeemable(item, tier, tiers, store.clock(), rules, lifetime, gate)
        red, created, result = await store.redeem(item, user_id, rid)
    except StoreError as err:
        raise _store_error(err) from err
    except StoreRefused as err:
        raise refused(err.code, err.message, err.retry_at) from err
    except SpendTimeout as err:
        raise _pending() from err
    if not created:
        return await _replay(store, red, item_id)
    if red.status == "failed":
        return await _failed(store, red, result)
    return _answer(red, created=True, balance=None if result is None else result.balance)


async def _failed(store: Store, red: Redemption, result: Result | None = None) -> web.Response:
    """The refusal a failed redemption ended with (on every retry: its own code)."""
    code = SPEND_CODES.get(red.reason, red.reason)
    if code == "member_cooldown" and result is None:
        found = await store.item(red.network, red.item_id)
        if found is not None:
            result = await store.spends.result_of(redeem_transfer(found[0], red))
    retry_at = result.retry_at if code == "member_cooldown" and result is not None else None
    raise refused(code, None, retry_at)


async def _replay(store: Store, red: Redemption, item_id: str) -> web.Response:
    if red.item_id != item_id:
        raise refused("idempotency_conflict")
    if red.status == "reserving":  # a retry drives a redemption left half done
        found = await store.item(red.network, red.item_id)
        if found is not None:
            try:
                red, _ = await store.drive(found[0], red)
            except SpendTimeout as err:
                raise _pending() from err
    if red.status == "failed":
        return await _failed(store, red)
    return _answer(red, created=False)


def _pending() -> GatewayError:
    return StoreHTTPError(
        503, "spend_pending",
        f"the debit is not confirmed yet; retry with the same {IDEMPOTENCY_HEADER}",
        IDEMPOTENCY_HEADER, retry_at=time.time() + 1,
    )  # fmt: skip


def _page_args(request: web.Request) -> tuple[int, int, str | None]:
    reader = request.app[READER]
    limit = reader.limit_of(request.query)
    cursor = parse_int(request.query, "cursor", 0, 0, 10**12)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    return limit, cursor, status


async def get_member_redemptions(request: web.Request) -> web.Response:
    network, user_id, _ = _member(request)
    limit, cursor, status = _page_args(request)
    store = request.app[STORE]
    key = store.keys_of(network).member(user_id)
    reds, nxt = await store.page(key, network, cursor, limit, status)
    return json_response({"redemptions": [redemption_json(r) for r in reds], "next_cursor": nxt})


async def get_redemptions(request: web.Request) -> web.Response:
    network = _admin(request)
    limit, cursor, status = _page_args(request)
    store = request.app[STORE]
    reds, nxt = await store.page(store.keys_of(network).all, network, cursor, limit, status)
    return json_response({"redemptions": [redemption_json(r) for r in reds], "next_cursor": nxt})


async def _admin_redemption(request: web.Request) -> tuple[Store, Redemption]:
    network = _admin(request, await _body(request))
    rid = parse_id(request.match_info["redemption_id"], "redemption_id")
    store = request.app[STORE]
    red = await store.redemption(network, rid)
    if red is None or red.status in ("reserving", "failed"):
        raise refused("redemption_not_found", f"no redemption {rid!r}")
    return store, red


async def post_fulfil(request: web.Request) -> web.Response:
    """pending -> fulfilled (200); fulfilled again: the same answer; refunded: 409."""
    store, red = await _admin_redemption(request)
    if red.status == "pending":
        _, red = await store.set_status(red, "fulfilled", notice="item_fulfilled")
    if red.status != "fulfilled":
        raise StoreHTTPError(
            409, f"already_{red.status}", f"redemption {red.id} is {red.status}", "redemption_id"
        )
    return json_response({"redemption": redemption_json(red)})


async def post_refund(request: web.Request) -> web.Response:
    """pending -> refunded: the points back (spend path) and the item back to its stock."""
    store, red = await _admin_redemption(request)
    try:
        red = await store.refund(red, "")
    except SpendTimeout as err:
        raise _pending() from err
    if red.status != "refunded":
        raise StoreHTTPError(
            409, f"already_{red.status}", f"redemption {red.id} is {red.status}", "redemption_id"
        )
    return json_response({"redemption": redemption_json(red)})


# -- wiring -------------------------------------------------------------------------------
async def _sweeper(store: Store, interval_s: float, stale_after_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await store.sweep(stale_after_s)
        except Exception:
            log.exception("store_sweep_failed")


def setup_store(app: web.Application, settings: Settings, clock: Callable[[], float]) -> None:
    """Add the store to an app whose SPENDS is installed: its object, routes and sweeper."""
    spends = app[SPENDS]
    cfg = settings.store
    store = Store(
        spends.redis, spends.keys, spends, failed_ttl_s=cfg.failed_ttl_s,
        sweep_interval_s=cfg.sweep_interval_s, stale_after_s=cfg.stale_after_s, clock=clock,
    )  # fmt: skip
    app[STORE] = store

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = None
        if store.sweep_interval_s > 0:
            task = asyncio.create_task(
                _sweeper(store, store.sweep_interval_s, store.stale_after_s), name="store-sweep"
            )
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(running)
    r = app.router
    r.add_put("/v1/store/items/{item_id}", put_item)
    r.add_get("/v1/store/items", get_items)
    r.add_get("/v1/store/items/{item_id}", get_item)
    r.add_get("/v1/store/redemptions", get_redemptions)
    r.add_post("/v1/store/redemptions/{redemption_id}/fulfil", post_fulfil)
    r.add_post("/v1/store/redemptions/{redemption_id}/refund", post_refund)
    r.add_post("/v1/members/{user_id}/redemptions", post_redemption)
    r.add_get("/v1/members/{user_id}/redemptions", get_member_redemptions)
