"""The durable append: accepted batches go to the Redis streams ingest:{p}, all or nothing.

`IngestWriter` coalesces concurrent requests: each request enqueues its events (grouped by
partition) and awaits a future; one flusher task takes everything queued (up to
max_coalesce_events, waiting at most coalesce_window_ms for more) and writes it in ONE
MULTI/EXEC pipeline, then resolves every future, or fails them all if Redis failed.

Within a flush, requests without an Idempotency-Key share the stream entries of each
partition, at most EVENTS_PER_ENTRY events an entry, so a channel shard can commit a
backlog in bounded runs (the flush is one transaction, so each request is still all or
nothing); a request with an
Idempotency-Key goes through `IDEMPOTENT_APPEND`, a Lua script in the same transaction that
appends its parts only if the key is new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.stream import EVENTS_PER_ENTRY
from engine.events import Event, encode_events, routing_key
from engine.routing import shard_of
from gateway.errors import Unavailable

log = logging.getLogger(__name__)

IDEMPOTENT_APPEND = """
local prev = redis.call('GET', KEYS[1])
if prev then return prev end
local parts = #KEYS - 2
for i = 3, #KEYS do
  redis.call('XADD', KEYS[i], '*', 'e', ARGV[i + 1], 'n', ARGV[i + 1 + parts])
end
redis.call('HINCRBY', KEYS[2], 'events_in', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'batches_in', 1)
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
"""KEYS: idem key, stats, ingest streams...; ARGV: record, ttl_s, n events, payloads...,
then the event count of each payload (every ingest entry carries its count in `n`).
Returns the stored record of an earlier request with that key, or nil after appending."""


def partition_of(network: str, channel: str, channel_shards: int) -> int:
    return shard_of(f"{network}:{channel}", channel_shards)


def split_by_partition(events: Sequence[Event], channel_shards: int) -> dict[int, list[Event]]:
    """The batch split by ingest partition, each part in batch order."""
    parts: dict[int, list[Event]] = {}
    placed: dict[tuple[str, str, type], int] = {}  # routing_key(ev) is a function of these
    for ev in events:
        where = (ev.network, ev.channel, type(ev))  # a batch holds few: one hash each
        p = placed.get(where, -1)
        if p < 0:
            p = placed[where] = shard_of(routing_key(ev), channel_shards)
        part = parts.get(p)
        if part is None:
            parts[p] = [ev]
        else:
            part.append(ev)
    return parts


def entry_chunks(events: list[Event]) -> list[list[Event]]:
    """A partition's events as ingest entries of at most EVENTS_PER_ENTRY events, in order
    (actors/stream.py: a shard's commit never splits an entry)."""
    return [events[i : i + EVENTS_PER_ENTRY] for i in range(0, len(events), EVENTS_PER_ENTRY)]


@dataclass(frozen=True, slots=True)
class Idempotency:
    """Append only if `key` (a full Redis key) is new; then store `record` for `ttl_s`."""

    key: str
    record: bytes
    ttl_s: int


@dataclass(slots=True)
class _Pending:
    parts: dict[int, list[Event]]
    events: int
    idem: Idempotency | None
    future: asyncio.Future[bytes | None]


class IngestWriter:
    """Coalesces concurrent appends into one Redis transaction per flush."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        channel_shards: int,
        coalesce_window_ms: float,
        max_coalesce_events: int,
        max_queue_events: int,
        on_flush: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._shards = channel_shards
        self._window_s = coalesce_window_ms / 1000
        self._max_flush = max_coalesce_events
        self._max_queue = max_queue_events
        self._on_flush = on_flush
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def start(self) -> None:
        assert self._task is None, "IngestWriter started twice"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-writer")

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(
        self, events: Sequence[Event], idem: Idempotency | None = None
    ) -> asyncio.Future[bytes | None]:
        """Queue `events`; the future resolves once they are durable (None), or to the record
        stored by an earlier request with the same Idempotency-Key (nothing appended).
        Raises Unavailable when the queue is full or the writer is closing."""
        n = len(events)
        assert n > 0, "empty batch"
        if self._closing or self._task is None:
            raise Unavailable("gateway is shutting down", retry_after_s=1)
        if self._queue and self._queued_events + n > self._max_queue:
            raise Unavailable("ingest queue is full", retry_after_s=1)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(split_by_partition(events, self._shards), n, idem, future))
        self._queued_events += n
        self._wake.set()
        return future

    async def append(
        self, events: Sequence[Event], idem: Idempotency | None = None
    ) -> bytes | None:
        return await self.submit(events, idem)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._collect(loop)
            await self._flush(batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        batch: list[_Pending] = []
        n = 0
        deadline = loop.time() + self._window_s
        while True:
            while self._queue and (not batch or n + self._queue[0].events <= self._max_flush):
                item = self._queue.popleft()
                batch.append(item)
                n += item.events
            remaining = deadline - loop.time()
            if self._queue or n >= self._max_flush or remaining <= 0 or self._closing:
                return batch
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return batch

    async def _flush(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        n = sum(p.events for p in batch)
        try:
            results = await self._write(batch)
        except (RedisError, OSError, TimeoutError) as err:
            log.warning("ingest_flush_failed requests=%d events=%d error=%r", len(batch), n, err)
            self._fail(batch, lambda: Unavailable("event log (redis) unavailable", retry_after_s=1))
        except Exception as err:
            log.exception("ingest_flush_crashed requests=%d events=%d", len(batch), n)
            reason = f"ingest flush failed: {err!r}"
            self._fail(batch, lambda: RuntimeError(reason))
        else:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
            if self._on_flush is not None:
                self._on_flush(n, len(batch), time.perf_counter() - started)
        finally:
            self._queued_events -= n

    @staticmethod
    def _fail(batch: list[_Pending], error: Callable[[], BaseException]) -> None:
        """Nothing of a failed flush is acknowledged: every request of it gets the error."""
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error())

    async def _write(self, batch: list[_Pending]) -> list[bytes | None]:
        """One MULTI/EXEC for the whole flush; returns, per request, an earlier record or None."""
        keys = self._keys
        pipe = self._redis.pipeline(transaction=True)
        merged: dict[int, list[Event]] = {}
        plain_events = plain_requests = 0
        slots: list[int | None] = []
        for pending in batch:
            idem = pending.idem
            if idem is None:
                for p, part in pending.parts.items():
                    merged.setdefault(p, []).extend(part)
                plain_events += pending.events
                plain_requests += 1
                slots.append(None)
                continue
            chunks = [(p, c) for p, part in pending.parts.items() for c in entry_chunks(part)]
            slots.append(len(pipe))
            pipe.eval(
                IDEMPOTENT_APPEND,
                2 + len(chunks),
                idem.key,
                keys.stats,
                *[keys.ingest(p) for p, _ in chunks],
                idem.record,
                idem.ttl_s,
                pending.events,
                *[encode_events(c) for _, c in chunks],
                *[len(c) for _, c in chunks],
            )
        for p in sorted(merged):
            for chunk in entry_chunks(merged[p]):
                pipe.xadd(keys.ingest(p), {"e": encode_events(chunk), "n": len(chunk)})
        # the flush's event-time frontier, marked in every partition after its events: each
        # channel shard's watermark follows the whole deployment's event time (see README,
        # "Event time"), so quiet partitions do not hold members' credits back
        newest = max((ev.ts for pending in batch for part in pending.parts.values() for ev in part),
                     default=None)  # fmt: skip
        if newest is not None:
            frontier = repr(min(newest, time.time()))
            for p in range(self._shards):
                pipe.xadd(keys.ingest(p), {"f": frontier})
        if plain_requests:
            pipe.hincrby(keys.stats, "events_in", plain_events)
            pipe.hincrby(keys.stats, "batches_in", plain_requests)
        replies = await pipe.execute()
        return [None if slot is None else replies[slot] for slot in slots]
