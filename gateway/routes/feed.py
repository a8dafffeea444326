"""GET /v1/feed: the notices stream as a WebSocket, per network (API key or admin session) or
per member (member token or portal session).

One reader per gateway process (FeedHub) follows the notices stream with XREAD BLOCK, decodes
each entry once (gateway.notices) and encodes its JSON once, then hands it to every client
whose filter it passes. A client resuming with ?after=ID first gets what it missed from
XRANGE (at most [feed] backlog_max entries looked at; further behind, a {"gap": ...} message
says so), then the live notices newer than the last one it was sent: nothing in between is
lost, nothing is sent twice. A client too slow to keep [feed] client_queue_max notices queued
is closed (code 4008) and resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from actors.keys import Keys
from gateway.auth import MemberToken
from gateway.errors import BadRequest, Unavailable
from gateway.metrics import METRICS
from gateway.notices import Notice, decode_notice, stream_id
from gateway.reads import ACCESS, READER
from gateway.settings import ApiKey, FeedSettings

log = logging.getLogger(__name__)

SLOW_CLIENT_CLOSE = 4008
PUBLIC_KINDS = ("raffle_",)
"""Notice kinds every member of the network sees (not only those they name)."""
_json = msgspec.json.Encoder()


@dataclass(eq=False)
class Client:
    """One connected feed socket: its filter and the notices queued for it."""

    network: str
    user_id: str | None
    queue: asyncio.Queue[tuple[tuple[int, int], bytes]]
    overflowed: bool = False

    def wants(self, notice: Notice) -> bool:
        if notice.network != self.network:
            return False
        if self.user_id is None:
            return True
        return self.user_id in notice.user_ids or notice.kind.startswith(PUBLIC_KINDS)


def frame_of(notice: Notice) -> bytes:
    return _json.encode(notice.body)


@dataclass
class FeedHub:
    """Follows the notices stream and fans each notice out to the clients it concerns."""

    redis: aioredis.Redis
    keys: Keys
    backlog_max: int
    max_clients: int
    client_queue_max: int
    block_ms: int
    clients: set[Client] = field(default_factory=set)
    last_id: str = "$"
    sent: Counter | None = None
    """rally_feed_messages_total: notices queued to clients (set by `install`)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, client: Client) -> None:
        if len(self.clients) >= self.max_clients:
            raise Unavailable(f"this gateway serves at most {self.max_clients} feed clients")
        self.clients.add(client)
        self._wake.set()

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def publish(self, notice: Notice) -> None:
        frame: bytes | None = None
        key = stream_id(notice.id)
        queued = 0
        for c in self.clients:
            if c.overflowed or not c.wants(notice):
                continue
            frame = frame if frame is not None else frame_of(notice)
            if c.queue.qsize() >= self.client_queue_max:
                c.overflowed = True
                c.queue.put_nowait(((0, 0), b""))  # wakes the sender, which closes
                continue
            c.queue.put_nowait((key, frame))
            queued += 1
        if queued and self.sent is not None:
            self.sent.inc(queued)

    async def run(self) -> None:
        """Read the stream while anyone listens; a Redis outage is retried every second."""
        while True:
            if not self.clients:
                self._wake.clear()
                await self._wake.wait()
            try:
                if self.last_id == "$":  # pin the position first, so no entry slips by
                    self.last_id = await self.tip()
                got = await self.redis.xread(
                    {self.keys.notices: self.last_id}, count=500, block=self.block_ms
                )
            except (RedisError, OSError):
                log.warning("feed_read_failed", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in got or []:
                for eid, fields in entries:
                    self.last_id = eid.decode()
                    notice = decode_notice(eid, fields)
                    if notice is not None:
                        self.publish(notice)

    async def pin(self) -> None:
        """Fix where the reader starts, before a first client registers: every entry after
        the position a client starts from is then read by the hub (none slips between)."""
        if self.last_id == "$":
            try:
                self.last_id = await self.tip()
            except (RedisError, OSError) as err:
                raise Unavailable("notices stream (redis) unavailable") from err

    async def tip(self) -> str:
        """The id of the newest notice ("0-0" when there is none)."""
        newest = await self.redis.xrevrange(self.keys.notices, count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def backlog(self, client: Client, after: str) -> tuple[list[bytes], str | None, bool]:
        """(frames after `after` for `client`, id of the last entry looked at, gap?)."""
        try:
            entries = await self.redis.xrange(
                self.keys.notices, min=f"({after}", max="+", count=self.backlog_max + 1
            )
            first = await self.redis.xrange(self.keys.notices, min="-", max="+", count=1)
        except (RedisError, OSError) as err:
            raise Unavailable("notices stream (redis) unavailable") from err
        gap = len(entries) > self.backlog_max
        entries = entries[: self.backlog_max]
        if first and stream_id(first[0][0]) > stream_id(after) and after != "0-0":
            gap = True  # the stream was trimmed past what the client had seen
        frames: list[bytes] = []
        last: str | None = None
        for eid, fields in entries:
            last = eid.decode()
            notice = decode_notice(eid, fields)
            if notice is not None and client.wants(notice):
                frames.append(frame_of(notice))
        return frames, last, gap


FEED = web.AppKey("feed", FeedHub)


def _after_of(request: web.Request) -> str | None:
    raw = request.query.get("after")
    if raw is None or raw == "":
        return None
    try:
        stream_id(raw)
    except ValueError:
        raise BadRequest(
            "after must be a notices stream id like 1733400000000-0", field="after"
        ) from None
    return raw


def _subscriber(request: web.Request) -> Client:
    """Whose feed this is: an API key (or admin session) reads a network it covers (?network=),
    a member token (or portal session) its own notices and its network's raffles."""
    access = request.app[ACCESS]
    who = access.principal(request.headers, request.method, request.raw_path)
    queue: asyncio.Queue[tuple[tuple[int, int], bytes]] = asyncio.Queue()  # bounded by publish
    if isinstance(who, MemberToken):
        return Client(who.network, who.user_id, queue)
    assert isinstance(who, ApiKey)
    network = request.app[READER].network_of(request.query)
    access.channel(who, network)
    return Client(network, None, queue)


async def get_feed(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[FEED]
    client = _subscriber(request)
    after = _after_of(request)
    await hub.pin()
    hub.add(client)  # before reading the backlog: what comes after it is queued
    try:
        frames: list[bytes] = []
        if after is None:
            try:
                sent_to = stream_id(await hub.tip())
            except (RedisError, OSError) as err:
                raise Unavailable("notices stream (redis) unavailable") from err
        else:
            frames, last, gap = await hub.backlog(client, after)
            if gap:
                frames.insert(0, _json.encode({"gap": True, "after": after}))
            sent_to = stream_id(last) if last else stream_id(after)
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        for frame in frames:
            await ws.send_frame(frame, WSMsgType.TEXT)
        await _pump(ws, client, sent_to)
    finally:
        hub.remove(client)
    return ws


async def _pump(ws: web.WebSocketResponse, client: Client, sent_to: tuple[int, int]) -> None:
    """Send queued notices newer than `sent_to` until the socket closes or overflows."""
    reader = asyncio.create_task(_drain_incoming(ws, client))
    try:
        while True:
            key, frame = await client.queue.get()
            if not frame:  # a sentinel: the socket closed, or the client overflowed
                if client.overflowed and not ws.closed:
                    await ws.close(code=SLOW_CLIENT_CLOSE, message=b"too slow: resume with ?after=")
                break
            if key <= sent_to:
                continue
            try:
                await ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                break
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _drain_incoming(ws: web.WebSocketResponse, client: Client) -> None:
    """Clients send nothing; read until the socket closes (pings are answered by aiohttp),
    then wake the sender with a sentinel."""
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        client.queue.put_nowait(((0, 0), b""))


def install(app: web.Application, client: aioredis.Redis, keys: Keys, cfg: FeedSettings) -> None:
    hub = FeedHub(client, keys, cfg.backlog_max, cfg.max_clients, cfg.client_queue_max,
                  cfg.block_ms)  # fmt: skip
    app[FEED] = hub
    registry = app[METRICS].metrics.registry
    Gauge("rally_feed_clients", "Feed WebSockets connected to this gateway process.",
          registry=registry).set_function(lambda: len(hub.clients))  # fmt: skip
    hub.sent = Counter("rally_feed_messages", "Notices queued to feed clients.", registry=registry)

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(running)
    app.router.add_get("/v1/feed", get_feed)
