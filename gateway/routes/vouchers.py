"""Voucher routes: admins mint batches and read the attempts; members scan codes.

| route | who |
|---|---|
| `POST /v1/vouchers/batches?network=N` | an API key covering N (signed over target + body) |
| `GET /v1/vouchers/batches?network=N` | an API key covering N |
| `GET /v1/vouchers/attempts?network=N&limit=&before=` | an API key covering N |
| `GET /v1/vouchers/keys` | anyone: the public keys that verify codes |
| `POST /v1/members/{user_id}/vouchers?network=N` | the member's token, or an API key covering N |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.vouchers import VoucherStore
from gateway.auth import MemberToken, check_network
from gateway.errors import BadRequest, PayloadTooLarge, Unavailable, json_response
from gateway.gating import CHAIN_GATE
from gateway.reads import ACCESS, READER, parse_id
from gateway.routes_store import STORE
from gateway.settings import Settings
from gateway.voucher_keys import VoucherKeys
from gateway.vouchers import (
    MINT_DECODER,
    SCAN_DECODER,
    Credit,
    Scan,
    VoucherService,
    batch_json,
    decode_body,
)

log = logging.getLogger(__name__)

VOUCHERS = web.AppKey("vouchers", VoucherService)
MAX_BODY_BYTES = 4_096
"""A mint request or a scan is a small JSON object."""
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


async def _body(request: web.Request) -> bytes:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"at most {MAX_BODY_BYTES} bytes", field="body")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"at most {MAX_BODY_BYTES} bytes", field="body")
    return body


def _admin_network(request: web.Request, body: bytes = b"") -> str:
    """The network of an admin request, whose API key must cover it (401, 400, 403)."""
    key = request.app[ACCESS].auth.verify_target(
        request.headers, request.method, request.raw_path, body
    )
    network = request.app[READER].network_of(request.query)
    check_network(key, network)
    return network


async def post_batch(request: web.Request) -> web.Response:
    svc = request.app[VOUCHERS]
    body = await _body(request)
    network = _admin_network(request, body)
    try:
        batch, codes = await svc.mint(network, decode_body(MINT_DECODER, body))
    except (RedisError, OSError) as err:
        raise Unavailable("the voucher store (redis) is unavailable") from err
    out = {"batch": batch_json(batch, 0), "codes": codes, "public_keys": svc.keys.public_keys()}
    return json_response(out, status=201)


async def get_batches(request: web.Request) -> web.Response:
    network = _admin_network(request)
    batches = await request.app[VOUCHERS].store.batches(network)
    return json_response({"network": network, "batches": [batch_json(b, n) for b, n in batches]})


async def get_attempts(request: web.Request) -> web.Response:
    network = _admin_network(request)
    limit = request.app[READER].limit_of(request.query)
    before = request.query.get("before") or None
    if before is not None and not _STREAM_ID.fullmatch(before):
        raise BadRequest("before must be an attempt id (next_before of a page)", field="before")
    attempts, more = await request.app[VOUCHERS].store.attempts(network, limit=limit, before=before)
    return json_response({"network": network, "attempts": attempts, "next_before": more})


async def get_keys(request: web.Request) -> web.Response:
    return json_response({"keys": request.app[VOUCHERS].keys.public_keys()})


async def post_scan(request: web.Request) -> web.Response:
    """A member scans a code: credited once, or refused with its own 4xx (see README)."""
    access = request.app[ACCESS]
    body = await _body(request)
    who = access.principal(request.headers, request.method, request.raw_path, body)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    network = request.app[READER].network_of(request.query)
    access.member(who, network, user_id)
    req = decode_body(SCAN_DECODER, body)
    by = "token" if isinstance(who, MemberToken) else f"key:{who.key}"
    scan = Scan(network, user_id, req.code, by, request.remote or "")
    try:
        return json_response(await request.app[VOUCHERS].scan(scan))
    except (RedisError, OSError) as err:
        raise Unavailable("the voucher store (redis) is unavailable: scan again") from err


async def _sweeper(svc: VoucherService) -> None:
    while True:
        await asyncio.sleep(svc.sweep_interval_s)
        try:
            await svc.sweep()
        except Exception:
            log.exception("voucher_sweep_failed")


async def _running(app: web.Application) -> AsyncIterator[None]:
    """Load (or generate) the signing key before serving (a bad key stops the start); sweep
    stale claims while serving."""
    svc = app[VOUCHERS]
    await asyncio.to_thread(svc.keys.load)
    task = None
    if svc.sweep_interval_s > 0:
        task = asyncio.create_task(_sweeper(svc), name="voucher-sweep")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def install(
    app: web.Application,
    settings: Settings,
    client: aioredis.Redis,
    keys: Keys,
    clock: Callable[[], float],
    credit: Credit | None,
) -> None:
    """The voucher service and routes, on `app`."""
    vs = settings.vouchers
    app[VOUCHERS] = VoucherService(
        VoucherKeys.from_settings(vs.signing_key, settings.data_dir, vs.verify_keys),
        VoucherStore(client, keys, attempts_kept=vs.attempts_kept),
        max_batch_codes=vs.max_batch_codes,
        resume_after_s=vs.resume_after_s,
        sweep_interval_s=vs.sweep_interval_s,
        clock=clock,
        credit=credit,
        shop=app.get(STORE),
        tiers_of=lambda network: tuple(app[READER].rules.network(network).tiers.names),
        standing=app[CHAIN_GATE].standing if CHAIN_GATE in app else None,
    )
    app.cleanup_ctx.append(_running)
    app.router.add_post("/v1/vouchers/batches", post_batch)
    app.router.add_get("/v1/vouchers/batches", get_batches)
    app.router.add_get("/v1/vouchers/attempts", get_attempts)
    app.router.add_get("/v1/vouchers/keys", get_keys)
    app.router.add_post("/v1/members/{user_id}/vouchers", post_scan)
