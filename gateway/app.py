"""The aiohttp gateway: authenticated ingest (HTTP batches, WebSocket) and reads, over Redis.

The gateway never talks to Ray: it appends to the ingest streams and reads committed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection

import msgspec
import redis.asyncio as aioredis
import uvloop
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.redisconn import connect, connect_async
from analytics.archive import LedgerArchive
from engine.events import BatchError, Event, decode_json_batch, encode_events
from gateway.admission import ADMISSION, Admission
from gateway.auth import Authenticator, ReadAccess, check_network, check_networks
from gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    error_of,
    error_response,
    json_response,
)
from gateway.gating import CHAIN_GATE, ChainGate
from gateway.ingest import Idempotency, IngestWriter
from gateway.metrics import METRICS, GatewayMetrics, get_metrics, get_readyz, new_metrics
from gateway.raffles import add_raffle_routes
from gateway.reads import ACCESS, READER, Reader, add_routes, parse_id
from gateway.redis_server import _die_with_parent
from gateway.routes import feed, payouts, referrals, vouchers, wallets, webhooks
from gateway.routes import web as web_routes
from gateway.routes.commands import add_command_routes
from gateway.routes_analytics import add_routes as add_analytics_routes
from gateway.routes_store import setup_store
from gateway.sessions import Sessions, session_middleware
from gateway.settings import ApiKey, Settings
from gateway.spends import SPENDS, install_spends
from gateway.vouchers import credit_through

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LEN = 128
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,128}")
"""A WebSocket handshake's ?nonce=: new for every socket (signing.stream_target makes one)."""
REDIS_TIMEOUT_S = 10.0
_json = msgspec.json.Encoder()
_record = msgspec.json.Decoder(dict[str, object])
GC_THRESHOLD_YOUNG = 20_000
"""Allocations between two collections of the young generation (CPython's default: 700)."""
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@dataclass
class Gateway:
    """Per-app state: plain values from the settings and the long-lived objects."""

    keys: Keys
    redis: aioredis.Redis
    auth: Authenticator
    writer: IngestWriter
    metrics: GatewayMetrics
    max_body_bytes: int
    max_batch_events: int
    max_ws_frame_bytes: int
    max_ws_inflight_frames: int
    idempotency_ttl_s: int


GATEWAY = web.AppKey("gateway", Gateway)


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error becomes a JSON body (never a traceback or an HTML page); counts requests."""
    gw = request.app[GATEWAY]
    try:
        response = await handler(request)
    except GatewayError as err:
        gw.metrics.observe_reject(err.code)
        response = error_of(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        gw.metrics.observe_reject(code)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        field = "body" if exc.status == 413 else None
        response = error_response(
            exc.status, code, exc.text or exc.reason, field=field, headers=headers
        )
    except Exception:
        log.exception("gateway_unhandled_error route=%s", _route_of(request))
        gw.metrics.observe_reject("internal")
        response = error_response(500, "internal", "internal server error")
    gw.metrics.observe_request(_route_of(request), request.method, response.status)
    return response


def decode_batch(body: bytes, max_events: int) -> list[Event]:
    """Decode a JSON batch, or raise the 4xx naming the field and index."""
    if not body.strip():
        raise BadRequest('empty body: send {"events": [...]}', field="body", code="empty_batch")
    try:
        events = decode_json_batch(body)
    except BatchError as err:
        cause = err.__cause__
        if isinstance(cause, msgspec.DecodeError) and not isinstance(
            cause, msgspec.ValidationError
        ):
            raise BadRequest(err.message, field="body", code="malformed_json") from err
        raise BadRequest(err.message, field=err.field, index=err.index, code=err.code) from err
    if not events:
        raise BadRequest("empty batch: no events", field="events", code="empty_batch")
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"{len(events)} events in one batch; at most {max_events}", field="events"
        )
    return events


def idempotency_key_of(headers: Mapping[str, str]) -> str | None:
    value = headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    ok = 0 < len(value) <= MAX_IDEMPOTENCY_KEY_LEN and value.isascii() and value.isprintable()
    if not ok or " " in value:
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters",
            field=IDEMPOTENCY_HEADER,
            code="bad_idempotency_key",
        )
    return value


async def post_events(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    length = request.content_length
    if length is not None and length > gw.max_body_bytes:
        raise PayloadTooLarge(f"body of {length} bytes; at most {gw.max_body_bytes}", field="body")
    body = await request.read()
    key = gw.auth.verify(request.headers, body)
    admission = request.app[ADMISSION]
    admission.shed("http")
    idem_key = idempotency_key_of(request.headers)
    events = decode_batch(body, gw.max_batch_events)
    check_networks(key, events)
    admission.check_times(events)
    accepted = {"accepted": len(events)}
    if idem_key is None:
        await gw.writer.append(events)
        return json_response(accepted, status=202)
    digest = hashlib.sha256(encode_events(events)).hexdigest()
    record = _json.encode({"digest": digest, "status": 202, "body": accepted})
    idem = Idempotency(gw.keys.idem(key.key, idem_key), record, gw.idempotency_ttl_s)
    previous = await gw.writer.append(events, idem)
    if previous is None:
        return json_response(accepted, status=202)
    first = _record.decode(previous)
    if first.get("digest") != digest:
        raise Conflict(
            f"{IDEMPOTENCY_HEADER} {idem_key!r} was used with a different batch",
            field=IDEMPOTENCY_HEADER,
        )
    status = first.get("status")
    return json_response(
        first.get("body"),
        status=status if isinstance(status, int) else 202,
        headers={"Idempotent-Replayed": "true"},
    )


async def _send(ws: web.WebSocketResponse, body: object) -> None:
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(_json.encode(body).decode())


def _frame_events(gw: Gateway, admission: Admission, key: ApiKey, data: bytes) -> list[Event]:
    """A frame's events, validated; raises the GatewayError to answer it with."""
    if len(data) > gw.max_ws_frame_bytes:
        raise PayloadTooLarge(f"frame of {len(data)} bytes", field="frame")
    events = decode_batch(data, gw.max_batch_events)
    check_networks(key, events)
    admission.check_times(events)
    return events


@dataclass(slots=True)
class _FrameGroup:
    """Frames of one socket read in one go: one durable append, then one ack per frame."""

    events: list[Event]
    frames: list[list[str]]
    """The event ids of each frame, in order."""


class _Stream:
    """One WebSocket's ingest. The frames read in one go (everything the socket had buffered)
    are appended together, in one request to the ingest writer, so one durable write and no
    task per frame; once that write is durable, every frame gets its own ack by event ids,
    all written at once, or with `bulk` (the handshake's `acks=bulk`) one ack for them all.
    At most `max_ws_inflight_frames` frames wait for their acks."""

    def __init__(
        self,
        gw: Gateway,
        admission: Admission,
        key: ApiKey,
        ws: web.WebSocketResponse,
        bulk: bool = False,
    ) -> None:
        self.gw = gw
        self.admission = admission
        self.key = key
        self.ws = ws
        self.bulk = bulk
        self.inflight = 0
        self.room = asyncio.Event()
        self.room.set()
        self.group: _FrameGroup | None = None
        self.acks: set[asyncio.Task[None]] = set()

    def add(self, data: bytes) -> None:
        """Take one frame into the current group (answered at once if it is refused)."""
        events = _frame_events(self.gw, self.admission, self.key, data)
        ids = [ev.id for ev in events]
        self.admission.shed("ws", ids)
        group = self.group
        if group is None:
            group = self.group = _FrameGroup([], [])
            asyncio.get_running_loop().call_soon(self.flush)  # once the reader has to wait
        group.events += events
        group.frames.append(ids)
        self.inflight += 1
        if self.inflight >= self.gw.max_ws_inflight_frames:
            self.room.clear()

    def flush(self) -> None:
        """Submit the current group to the ingest writer; its acks follow when durable."""
        group, self.group = self.group, None
        if group is None:
            return
        try:
            future = self.gw.writer.submit(group.events)
        except GatewayError as err:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(err)
        task = asyncio.create_task(self._ack(group, future))
        self.acks.add(task)
        task.add_done_callback(self.acks.discard)

    async def _ack(self, group: _FrameGroup, future: asyncio.Future[bytes | None]) -> None:
        answers: list[dict[str, object]]
        try:
            await future
        except GatewayError as err:
            self.gw.metrics.observe_reject(err.code)
            answers = [{**err.as_dict(), "ids": ids} for ids in self._frames(group)]
        except Exception as err:
            log.exception("ws_append_failed")
            answers = [{"error": "internal", "message": str(err), "ids": ids}
                       for ids in self._frames(group)]  # fmt: skip
        else:
            answers = [{"ack": ids} for ids in self._frames(group)]
        finally:
            self.inflight -= len(group.frames)
            if self.inflight < self.gw.max_ws_inflight_frames:
                self.room.set()
        for answer in answers:
            await _send(self.ws, answer)

    def _frames(self, group: _FrameGroup) -> list[list[str]]:
        """The event ids to answer, by message: one per frame, or all in one (bulk)."""
        if self.bulk and len(group.frames) > 1:
            return [[i for ids in group.frames for i in ids]]
        return group.frames

    async def close(self) -> None:
        """Submit what is grouped and wait for every ack to be sent."""
        self.flush()
        if self.acks:
            await asyncio.gather(*self.acks, return_exceptions=True)


async def verify_handshake(gw: Gateway, request: web.Request) -> ApiKey:
    """The key that signed this WebSocket handshake (GET /v1/stream?nonce=N); 401 unless the
    signature is good and the nonce is new. Nonces are remembered in Redis (shared by every
    gateway process) for twice the signature skew: as long as a signed timestamp is accepted."""
    key = gw.auth.verify_target(request.headers, request.method, request.raw_path)
    nonce = request.query.get("nonce", "")
    if not NONCE.fullmatch(nonce):
        raise Unauthorized(
            "the handshake must be a signed GET /v1/stream?nonce=N, N 16-128 characters of "
            "A-Z a-z 0-9 _ - and new for every socket",
            field="nonce",
        )
    try:
        fresh = await gw.redis.set(
            gw.keys.ws_nonce(key.key, nonce), b"1", nx=True, ex=2 * gw.auth.skew_s + 1
        )
    except (RedisError, OSError) as err:
        raise Unavailable("nonce store (redis) unavailable") from err
    if not fresh:
        raise Unauthorized("replayed handshake: this nonce was used already", field="nonce")
    return key


def ack_mode(request: web.Request) -> bool:
    """Whether the handshake asked for bulk acks (`acks=bulk`: one ack per durable write,
    naming the ids of every frame it holds) rather than one per frame (`acks=frame`, the
    default)."""
    acks = request.query.get("acks", "frame")
    if acks not in ("frame", "bulk"):
        raise BadRequest("acks is frame (one ack per frame, the default) or bulk", field="acks")
    return acks == "bulk"


async def ws_stream(request: web.Request) -> web.WebSocketResponse:
    """WebSocket ingest: each frame is a batch; acked by event ids once durable."""
    gw = request.app[GATEWAY]
    key = await verify_handshake(gw, request)
    bulk = ack_mode(request)
    ws = web.WebSocketResponse(max_msg_size=gw.max_ws_frame_bytes, heartbeat=30.0)
    await ws.prepare(request)
    stream = _Stream(gw, request.app[ADMISSION], key, ws, bulk)
    try:
        while True:
            if not stream.room.is_set():
                await stream.room.wait()
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                data = msg.data.encode()
            elif msg.type is WSMsgType.BINARY:
                data = msg.data
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            else:
                continue
            try:
                stream.add(data)
            except GatewayError as err:
                gw.metrics.observe_reject(err.code)
                await _send(ws, err.as_dict())
    finally:
        await stream.close()
    return ws


async def post_member_token(request: web.Request) -> web.Response:
    """A member token for {user_id} of ?network=, for a key covering that network; the
    request is signed like a read (over "POST {target}") and has no body."""
    gw = request.app[GATEWAY]
    body = await request.read()
    key = gw.auth.verify_target(request.headers, request.method, request.raw_path)
    if body:
        raise BadRequest("a token request has no body (the query carries network)", field="body")
    user_id = parse_id(request.match_info["user_id"], "user_id")
    network = request.app[READER].network_of(request.query)
    check_network(key, network)
    tokens = request.app[ACCESS].tokens
    if tokens is None:
        raise Forbidden(
            "member tokens are not enabled: set [auth] token_secret",
            field="token",
            code="tokens_disabled",
        )
    token, expires_at = tokens.issue(network, user_id)
    body_out = {"token": token, "network": network, "user_id": user_id, "expires_at": expires_at}
    return json_response(body_out, status=201)


async def healthz(request: web.Request) -> web.Response:
    """Liveness; `pid` tells the gateway processes sharing a port apart ([server] workers)."""
    return json_response({"status": "ok", "pid": os.getpid()})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY]
    gw.writer.start()
    yield
    await gw.writer.close()
    await gw.redis.aclose()
    app[READER].sync_redis.close()


def create_app(
    settings: Settings, redis_url: str, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """The gateway app; Redis connections open lazily, the ingest writer runs while it serves."""
    lim = settings.limits
    keys = Keys.of(settings.namespace, redis_url)
    client = connect_async(
        redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    ctx = new_metrics(client, keys, settings.shards.channel, settings.shards.member)
    writer = IngestWriter(
        client,
        keys,
        channel_shards=settings.shards.channel,
        coalesce_window_ms=lim.coalesce_window_ms,
        max_coalesce_events=lim.max_coalesce_events,
        max_queue_events=lim.max_queue_events,
        on_flush=ctx.metrics.observe_flush,
    )
    ctx.metrics.queue_events.set_function(lambda: writer.queued_events)
    app = web.Application(
        client_max_size=lim.max_body_bytes, middlewares=[edge_middleware, session_middleware]
    )
    auth = Authenticator.from_settings(settings, clock)
    app[GATEWAY] = Gateway(
        keys=keys,
        redis=client,
        auth=auth,
        writer=writer,
        metrics=ctx.metrics,
        max_body_bytes=lim.max_body_bytes,
        max_batch_events=lim.max_batch_events,
        max_ws_frame_bytes=lim.max_ws_frame_bytes,
        max_ws_inflight_frames=lim.max_ws_inflight_frames,
        idempotency_ttl_s=lim.idempotency_ttl_s,
    )
    app[METRICS] = ctx
    app[ADMISSION] = Admission.from_settings(settings, client, keys, ctx.metrics, clock)
    app[ACCESS] = ReadAccess.from_settings(settings, auth, clock)
    app[READER] = Reader(
        client,
        keys,
        settings.rulebook(),
        page_max=lim.page_max,
        default_network=settings.default_network(),
        clock=clock,
        archive=LedgerArchive(settings.archive_path()),
        sync_redis=connect(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        ),
        member_shards=settings.shards.member,
    )
    app[CHAIN_GATE] = ChainGate(client, keys, settings.rulebook(), rpc=settings.chain.rpc,
                                token_address=settings.chain.token_address, redis_url=redis_url)  # fmt: skip
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(app[ADMISSION].running)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/stream", ws_stream)
    app.router.add_post("/v1/members/{user_id}/token", post_member_token)
    add_routes(app)
    add_analytics_routes(app, settings)
    add_raffle_routes(app, client, keys, chain_rpc=settings.chain.rpc,
                      chain_embedded=settings.payouts.enabled,
                      confirmations=settings.chain.confirmations)  # fmt: skip
    install_spends(app, settings, redis_url, keys, clock)
    setup_store(app, settings, clock)
    add_command_routes(app)
    vouchers.install(app, settings, client, keys, clock, credit=credit_through(app[SPENDS]))
    payouts.install(app, settings, redis_url, keys, clock)
    webhooks.install(app, settings, redis_url, keys, clock)
    wallets.install(app, settings, redis_url, keys, clock)
    referrals.install(app, app[GATEWAY].writer, clock)
    feed.install(app, client, keys, settings.feed, settings.shards.member)
    web_routes.install(app, Sessions.from_settings(settings, clock))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    return app


def quiet_gc() -> None:
    """Once the gateway serves: move every object that exists now (modules, settings, the
    app) out of the collector's reach, and collect the young generation less often. A
    request allocates a few hundred short-lived objects; without this the periodic full
    collections walk every long-lived object again (seen in profiles as time spent at the
    allocation sites of the request path)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_YOUNG, 20, 20)


# -- one process of a gateway pool ([server] workers > 1, see runtime.GatewayPool) -----------
def serve_worker(
    settings: Settings, redis_url: str, host: str, port: int, ready: Connection
) -> None:
    """Serve host:port with SO_REUSEPORT until SIGTERM/SIGINT, then write what is queued.
    Sends ("ready", pid) or ("error", message) on `ready` once it listens (or cannot).
    Lives here, not in runtime.py, so that a spawned worker does not import Ray."""
    _die_with_parent()
    uvloop.run(_serve_worker(settings, redis_url, host, port, ready))


async def _serve_worker(
    settings: Settings, redis_url: str, host: str, port: int, ready: Connection
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings, redis_url), access_log=None)
    await runner.setup()
    quiet_gc()
    try:
        await web.TCPSite(runner, host, port, backlog=2048, reuse_port=True).start()
    except OSError as err:
        ready.send(("error", f"cannot listen on {host}:{port}: {err.strerror or err}"))
        await runner.cleanup()
        return
    ready.send(("ready", os.getpid()))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
