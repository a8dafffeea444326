"""GET /v1/feed: the notices stream as a WebSocket, per network (API key or admin session) or
per member (member token or portal session).

One reader per gateway process (FeedHub) follows the notices stream with XREAD BLOCK, decodes
each entry once (actors.notices) and encodes its JSON once, then hands it to every client
whose filter it passes. Each notice carries its `id`: its stream entry's, or "{entry}/{i}"
for the i-th of an entry holding several (actors.notices). A client resuming with ?after=ID
(the last id it got) first gets what it missed from
XRANGE (at most [feed] backlog_max entries looked at; further behind, a {"gap": ...} message
says so), then the live notices newer than the last one it was sent: nothing in between is
lost, nothing is sent twice. A client too slow to keep [feed] client_queue_max notices queued
is closed (code 4008) and resumes.

Earnings (`?earnings=1`, opt-in) come from the ledger log streams the member shards already
write (`ledgerlog:{m}`, one entry per commit batch, read by the ledger sink and projector
too): the member shard's hot path writes nothing more for the feed. While at least one
earnings client is connected, the hub adds those streams to its XREAD, decodes each entry
once, keeps the earnings (entries paid from a treasury) and flushes every EARNINGS_FLUSH_S:
- a member's feed gets one `earned` frame per flush with its own points (summed, channels);
- a network's feed gets one `earnings` frame per flush: points, credits, distinct members and
  the top earners of that interval: never one frame per credit, so 250k credits/s still make
  at most 1/EARNINGS_FLUSH_S frames per second per client.
Each earnings frame carries `ledger`, the position (one id per ledger log stream, comma
separated) it covers; a client resuming with `?ledger=` gets one catch-up frame for what it
missed (up to [feed] backlog_max log entries per stream; further behind, a `gap` says so),
then the live frames: none overlaps, none is missing. With no earnings client connected the
hub stops reading the logs and forgets its position (it re-pins at the tips).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.notices import Notice, decode_notices, notice_position
from engine.ledger import TREASURY_PREFIX
from engine.ledger import Entry as LedgerEntry
from engine.streamid import stream_id
from gateway.auth import MemberToken
from gateway.errors import BadRequest, Unavailable
from gateway.metrics import METRICS
from gateway.reads import ACCESS, READER
from gateway.settings import ApiKey, FeedSettings

log = logging.getLogger(__name__)

SLOW_CLIENT_CLOSE = 4008
PUBLIC_KINDS = ("raffle_",)
"""Notice kinds every member of the network sees (not only those they name)."""
_json = msgspec.json.Encoder()
_ledger = msgspec.msgpack.Decoder(list[LedgerEntry])
EARNINGS_FLUSH_S = 0.5
"""How often earnings read from the ledger logs are summed into frames."""
TOP_EARNERS = 3
Key = tuple[int, int] | None
"""A queued frame's notices stream id (sent once, in order) or None (an earnings frame)."""


@dataclass(eq=False)
class Client:
    """One connected feed socket: its filter and the notices queued for it."""

    network: str
    user_id: str | None
    queue: asyncio.Queue[tuple[Key, bytes]]
    earnings: bool = False
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
class Earnings:
    """Earnings summed from ledger entries, for one frame per network and per member. The
    per-credit loop only sums into one dict (decode + sum: about 560,000 credits/s on one
    core of the shared machine, so 250k credits/s cost the gateway about half a core while
    someone watches earnings); the frames are built once per flush."""

    sums: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(member account, channel) -> [points, credits, newest ts]"""

    def add(self, blob: bytes) -> None:
        sums = self.sums
        for e in _ledger.decode(blob):
            if e.debit.startswith(TREASURY_PREFIX):
                k = (e.credit, e.channel)
                v = sums.get(k)
                if v is None:
                    sums[k] = [e.amount, 1, e.ts]
                else:
                    v[0] += e.amount
                    v[1] += 1
                    v[2] = e.ts

    def frames(self, cursor: str) -> tuple[dict[str, bytes], dict[tuple[str, str], bytes]]:
        """(network -> `earnings` frame, (network, user) -> `earned` frame)."""
        per_member: dict[tuple[str, str], list[Any]] = {}
        for (account, channel), (points, credits, ts) in self.sums.items():
            if not account.startswith("member:"):
                continue
            network, _, user = account[7:].partition(":")
            m = per_member.get((network, user))
            if m is None:
                per_member[(network, user)] = [
                    int(points),
                    int(credits),
                    ts,
                    {channel: int(points)},
                ]
            else:
                m[0] += int(points)
                m[1] += int(credits)
                m[2] = max(m[2], ts)
                m[3][channel] = m[3].get(channel, 0) + int(points)
        members: dict[tuple[str, str], bytes] = {}
        totals: dict[str, list[Any]] = {}
        for (network, user), (points, credits, ts, by_channel) in per_member.items():
            members[(network, user)] = _json.encode(
                {"kind": "earned", "network": network, "user_id": user, "points": points,
                 "credits": credits, "channels": by_channel, "ts": ts, "ledger": cursor}
            )  # fmt: skip
            t = totals.setdefault(network, [0, 0, 0.0, []])
            t[0] += points
            t[1] += credits
            t[2] = max(t[2], ts)
            t[3].append((points, user))
        networks: dict[str, bytes] = {}
        for network, (points, credits, ts, earners) in totals.items():
            top = sorted(earners, key=lambda pu: (-pu[0], pu[1]))[:TOP_EARNERS]
            networks[network] = _json.encode(
                {"kind": "earnings", "network": network, "points": points, "credits": credits,
                 "members": len(earners), "ts": ts,
                 "top": [{"user_id": u, "points": p} for p, u in top], "ledger": cursor}
            )  # fmt: skip
        return networks, members


@dataclass
class FeedHub:
    """Follows the notices stream and fans each notice out to the clients it concerns."""

    redis: aioredis.Redis
    keys: Keys
    backlog_max: int
    max_clients: int
    client_queue_max: int
    block_ms: int
    member_shards: int = 1
    clients: set[Client] = field(default_factory=set)
    last_id: str = "$"
    sent: Counter | None = None
    """rally_feed_messages_total: notices queued to clients (set by `install`)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    earners: int = 0
    """Connected clients that asked for earnings: the ledger logs are read while > 0."""
    ledger_pos: list[str] | None = None
    """Last entry read from each ledger log stream (None: not following them)."""
    flushed: list[str] | None = None
    """The ledger position the earnings frames sent so far cover."""
    pending: Earnings = field(default_factory=Earnings)
    last_flush: float = 0.0
    generation: int = 0

    def add(self, client: Client) -> None:
        if len(self.clients) >= self.max_clients:
            raise Unavailable(f"this gateway serves at most {self.max_clients} feed clients")
        self.clients.add(client)
        if client.earnings:
            self.earners += 1
        self._wake.set()

    def remove(self, client: Client) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        if client.earnings:
            self.earners -= 1
            if self.earners == 0:  # stop following the logs; re-pin at the tips next time
                self.ledger_pos = self.flushed = None
                self.pending = Earnings()
                self.generation += 1

    def ledger_streams(self) -> list[str]:
        return [self.keys.ledgerlog(m) for m in range(self.member_shards)]

    async def pin_ledger(self) -> None:
        """Start following the ledger logs at their tips (if not already following)."""
        if self.ledger_pos is not None:
            return
        tips: list[str] = []
        try:
            for stream in self.ledger_streams():
                newest = await self.redis.xrevrange(stream, count=1)
                tips.append(newest[0][0].decode() if newest else "0-0")
        except (RedisError, OSError) as err:
            raise Unavailable("ledger log (redis) unavailable") from err
        if self.ledger_pos is None:
            self.ledger_pos, self.flushed = tips, list(tips)
            self.pending = Earnings()
            self.last_flush = asyncio.get_running_loop().time()

    def flush(self) -> None:
        """Send the earnings summed since the last flush to the clients they concern."""
        if self.ledger_pos is None:
            return
        self.last_flush = asyncio.get_running_loop().time()
        pending, self.pending = self.pending, Earnings()
        self.flushed = list(self.ledger_pos)
        if not pending.sums:
            return
        networks, members = pending.frames(",".join(self.flushed))
        queued = 0
        for c in self.clients:
            if not c.earnings or c.overflowed:
                continue
            frame = networks.get(c.network) if c.user_id is None else members.get(
                (c.network, c.user_id))  # fmt: skip
            if frame is None:
                continue
            if c.queue.qsize() >= self.client_queue_max:
                c.overflowed = True
                c.queue.put_nowait(((0, 0), b""))
                continue
            c.queue.put_nowait((None, frame))
            queued += 1
        if queued and self.sent is not None:
            self.sent.inc(queued)

    def publish(self, notice: Notice) -> None:
        frame: bytes | None = None
        key = stream_id(notice.entry_id)
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
                streams: dict[str, str] = {self.keys.notices: self.last_id}
                block = self.block_ms
                generation, following = self.generation, self.ledger_pos
                if following is not None:
                    streams.update(zip(self.ledger_streams(), following, strict=True))
                    block = min(block, int(EARNINGS_FLUSH_S * 1000))
                got = await self.redis.xread(streams, count=500, block=block)
            except (RedisError, OSError):
                log.warning("feed_read_failed", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            current = generation == self.generation and self.ledger_pos is not None
            for raw_stream, entries in got or []:
                stream = raw_stream.decode()
                if stream != self.keys.notices:
                    if current:
                        self._earned(stream, entries)
                    continue
                for eid, fields in entries:
                    self.last_id = eid.decode()
                    for notice in decode_notices(eid, fields):
                        self.publish(notice)
            if current and (
                asyncio.get_running_loop().time() - self.last_flush >= EARNINGS_FLUSH_S
            ):
                self.flush()

    def _earned(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        assert self.ledger_pos is not None
        m = int(stream.rpartition(":")[2])
        for eid, fields in entries:
            self.ledger_pos[m] = eid.decode()
            blob = fields.get(b"l")
            if blob is None:
                continue
            try:
                self.pending.add(blob)
            except (msgspec.DecodeError, ValueError):
                log.warning("ledger_entry_undecodable stream=%s id=%s", stream, eid)

    async def ledger_backlog(
        self, client: Client, after: list[str], upto: list[str]
    ) -> tuple[bytes | None, bool]:
        """One frame summing `client`'s earnings in the ledger logs after `after` up to
        `upto` (inclusive), and whether some were skipped (too far behind, or trimmed)."""
        summed = Earnings()
        gap = False
        try:
            for m, stream in enumerate(self.ledger_streams()):
                if stream_id(after[m]) >= stream_id(upto[m]):
                    continue
                got = await self.redis.xrange(
                    stream, min=f"({after[m]}", max=upto[m], count=self.backlog_max + 1
                )
                if len(got) > self.backlog_max:
                    gap, got = True, got[-self.backlog_max :]
                first = await self.redis.xrange(stream, min="-", max="+", count=1)
                if first and stream_id(first[0][0]) > stream_id(after[m]) != (0, 0):
                    gap = True
                for _eid, fields in got:
                    blob = fields.get(b"l")
                    if blob is not None:
                        summed.add(blob)
        except (RedisError, OSError) as err:
            raise Unavailable("ledger log (redis) unavailable") from err
        networks, members = summed.frames(",".join(upto))
        if client.user_id is None:
            return networks.get(client.network), gap
        return members.get((client.network, client.user_id)), gap

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
        """(frames after `after` for `client`, id of the last entry looked at, gap?).
        `after` is a notice id: an entry's, or "{entry}/{i}" (the rest of that entry's
        array comes first)."""
        entry, index = notice_position(after)
        try:
            entries = await self.redis.xrange(
                self.keys.notices, min=entry if index >= 0 else f"({entry}", max="+",
                count=self.backlog_max + 1,
            )  # fmt: skip
            first = await self.redis.xrange(self.keys.notices, min="-", max="+", count=1)
        except (RedisError, OSError) as err:
            raise Unavailable("notices stream (redis) unavailable") from err
        gap = len(entries) > self.backlog_max
        entries = entries[: self.backlog_max]
        if first and stream_id(first[0][0]) > stream_id(entry) and entry != "0-0":
            gap = True  # the stream was trimmed past what the client had seen
        frames: list[bytes] = []
        last: str | None = None
        for eid, fields in entries:
            last = eid.decode()
            for n in decode_notices(eid, fields):
                if last == entry and notice_position(n.id)[1] <= index:
                    continue  # the client had it
                if client.wants(n):
                    frames.append(frame_of(n))
        return frames, last, gap


FEED = web.AppKey("feed", FeedHub)


def _after_of(request: web.Request) -> str | None:
    """?after=: the id of the last notice the client got (a stream id, or one with "/i")."""
    raw = request.query.get("after")
    if raw is None or raw == "":
        return None
    try:
        notice_position(raw)
    except ValueError:
        raise BadRequest(
            "after must be a notice id like 1733400000000-0 or 1733400000000-0/3", field="after"
        ) from None
    return raw


def _ledger_after(request: web.Request, shards: int) -> list[str] | None:
    raw = request.query.get("ledger")
    if raw is None or raw == "":
        return None
    ids = raw.split(",")
    try:
        if len(ids) != shards:
            raise ValueError
        for i in ids:
            stream_id(i)
    except ValueError:
        raise BadRequest(
            f"ledger must be {shards} comma-separated ledger log ids, as the `ledger` of the "
            "last earnings frame seen",
            field="ledger",
        ) from None
    return ids


def _wants_earnings(request: web.Request) -> bool:
    raw = request.query.get("earnings", "0")
    if raw not in ("0", "1", "true", "false"):
        raise BadRequest("earnings must be 1 or 0", field="earnings")
    return raw in ("1", "true")


def _subscriber(request: web.Request) -> Client:
    """Whose feed this is: an API key (or admin session) reads a network it covers (?network=),
    a member token (or portal session) its own notices and its network's raffles."""
    access = request.app[ACCESS]
    who = access.principal(request.headers, request.method, request.raw_path)
    queue: asyncio.Queue[tuple[Key, bytes]] = asyncio.Queue()  # bounded by publish
    earnings = _wants_earnings(request)
    if isinstance(who, MemberToken):
        return Client(who.network, who.user_id, queue, earnings)
    assert isinstance(who, ApiKey)
    network = request.app[READER].network_of(request.query)
    access.channel(who, network)
    return Client(network, None, queue, earnings)


async def get_feed(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[FEED]
    client = _subscriber(request)
    after = _after_of(request)
    ledger_after = _ledger_after(request, hub.member_shards) if client.earnings else None
    await hub.pin()
    if client.earnings:
        await hub.pin_ledger()
    hub.add(client)  # before reading the backlog: what comes after it is queued
    # no await since pin_ledger: what the next earnings frame covers starts right here
    ledger_upto = list(hub.flushed) if client.earnings and hub.flushed is not None else None
    try:
        frames: list[bytes] = []
        if ledger_after is not None and ledger_upto is not None:
            caught_up, ledger_gap = await hub.ledger_backlog(client, ledger_after, ledger_upto)
            if ledger_gap:
                frames.append(_json.encode({"gap": True, "ledger": ",".join(ledger_after)}))
            if caught_up is not None:
                frames.append(caught_up)
        if after is None:
            try:
                sent_to = stream_id(await hub.tip())
            except (RedisError, OSError) as err:
                raise Unavailable("notices stream (redis) unavailable") from err
        else:
            missed, last, gap = await hub.backlog(client, after)
            if gap:
                frames.append(_json.encode({"gap": True, "after": after}))
            frames += missed
            sent_to = stream_id(last if last else notice_position(after)[0])
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
            if key is not None and key <= sent_to:
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


def install(
    app: web.Application,
    client: aioredis.Redis,
    keys: Keys,
    cfg: FeedSettings,
    member_shards: int = 1,
) -> None:
    hub = FeedHub(client, keys, cfg.backlog_max, cfg.max_clients, cfg.client_queue_max,
                  cfg.block_ms, member_shards)  # fmt: skip
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
