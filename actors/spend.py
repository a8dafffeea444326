"""Submitting spends (engine/spend.py transfers) to the member shards and awaiting results.

A transfer is appended to its member shard's own stream `credits:{m}` (field `s`, with the
caller's reply stream in `r`), so it is durable before it is processed and ordered with the
credits. The shard applies it, records the result under its key and appends the result to
the reply stream, all in its fenced commit. `SpendClient` (asyncio: the gateway) runs one
reader task per client that resolves the waiting futures; `SyncSpendClient` (threads: the
actors) reads its own reply stream while it waits. If a reply does not come in time, the
durable record is read; if there is none yet, `SpendTimeout`: the transfer may still apply,
and resubmitting it with the same key is always safe.

No Ray here: gateway processes import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import msgspec
import redis
import redis.asyncio as aioredis

from actors.keys import Keys
from engine.routing import shard_of
from engine.spend import (
    Result,
    Transfer,
    digest,
    encode,
    record_decoder,
    replies_decoder,
    validate,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
"""Long enough for Ray to restart a killed member shard and for it to catch up."""
READ_BLOCK_MS = 1_000
READ_COUNT = 1_000
OUTBOX_MAX = 1_000
"""Most commands one pipeline carries."""


class SpendTimeout(Exception):
    """No result within the timeout: the transfer may still apply; resubmit the same key."""


def shard_stream(keys: Keys, member_shards: int, t: Transfer) -> str:
    """The stream of the member shard that owns the transfer's member."""
    return keys.credits(shard_of(f"{t.network}:{t.user_id}", member_shards))


def record_key(keys: Keys, t: Transfer) -> str:
    return keys.spend_record(f"{t.network}:{t.user_id}", t.key)


def _stamp(t: Transfer, clock: Callable[[], float]) -> Transfer:
    validate(t)
    return t if t.ts else msgspec.structs.replace(t, ts=clock())


def _from_record(raw: bytes | None, t: Transfer) -> Result | None:
    if raw is None:
        return None
    record = record_decoder.decode(raw)
    if record.digest != digest(t):
        return Result(t.key, "conflict", record.result.balance)
    return record.result


@dataclass(slots=True)
class _Outbox:
    """Commands queued by concurrent callers, sent in one pipeline."""

    commands: list[tuple[str, bytes, str]]
    sent: asyncio.Future[None]


CLOSE_WAIT_S = 2.0
"""How long close() waits, beyond one blocking read, for the reply reader to end."""


class SpendClient:
    """Submit transfers from asyncio code and await their results (one per gateway process)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        member_shards: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.member_shards = member_shards
        self.timeout_s = timeout_s
        self.clock = clock
        self._reply_to = ""
        self._waiting: dict[str, list[asyncio.Future[Result]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._outbox: _Outbox | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, t: Transfer, timeout_s: float | None = None) -> Result:
        """Apply `t` (exactly once per key) and return its result; raises SpendTimeout, or
        engine.spend.SpendError for a transfer that can never apply."""
        return (await self.submit_many([t], timeout_s))[0]

    async def submit_many(
        self, transfers: Sequence[Transfer], timeout_s: float | None = None
    ) -> list[Result]:
        """Submit several transfers in one round trip; results in the same order."""
        stamped = [_stamp(t, self.clock) for t in transfers]
        reply_to = self.reply_to
        self._ensure_reader()
        loop = asyncio.get_running_loop()
        rkeys = [record_key(self.keys, t) for t in stamped]
        futures: list[asyncio.Future[Result]] = []
        for rkey in rkeys:
            fut: asyncio.Future[Result] = loop.create_future()
            self._waiting.setdefault(rkey, []).append(fut)
            futures.append(fut)
        try:
            await self._append(
                [(shard_stream(self.keys, self.member_shards, t), encode(t)) for t in stamped],
                reply_to,
            )
            timeout = self.timeout_s if timeout_s is None else timeout_s
            done, _ = await asyncio.wait(futures, timeout=timeout)
            out: list[Result] = []
            for t, rkey, fut in zip(stamped, rkeys, futures, strict=True):
                if fut in done:
                    out.append(fut.result())
                    continue
                got = _from_record(cast("bytes | None", await self.redis.get(rkey)), t)
                if got is None:
                    raise SpendTimeout(f"no result for transfer {t.key!r} in {timeout} s")
                out.append(got)
            return out
        finally:
            for rkey, fut in zip(rkeys, futures, strict=True):
                waiting = self._waiting.get(rkey)
                if waiting is not None:
                    with contextlib.suppress(ValueError):
                        waiting.remove(fut)
                    if not waiting:
                        del self._waiting[rkey]

    async def _append(self, commands: list[tuple[str, bytes]], reply_to: str) -> None:
        """Append commands to their streams; concurrent callers share one round trip (the
        outbox is sent once the callers queued in this loop iteration have added theirs)."""
        box = self._outbox
        if box is None:
            box = self._outbox = _Outbox([], asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_soon(self._send_soon, box)
        box.commands.extend((stream, blob, reply_to) for stream, blob in commands)
        await asyncio.shield(box.sent)

    def _send_soon(self, box: _Outbox) -> None:
        self._outbox = None
        task = asyncio.ensure_future(self._send(box))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, box: _Outbox) -> None:
        try:
            for start in range(0, len(box.commands), OUTBOX_MAX):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for stream, blob, reply_to in box.commands[start : start + OUTBOX_MAX]:
                        pipe.xadd(stream, {"s": blob, "r": reply_to, "n": 1})
                    await pipe.execute()
        except Exception as err:
            box.sent.set_exception(err)
            box.sent.exception()  # retrieved here too: every caller re-raises it
        else:
            box.sent.set_result(None)

    @property
    def reply_to(self) -> str:
        """This client's reply stream (named on first use: one per client, never shared)."""
        if not self._reply_to:
            self._reply_to = self.keys.spend_reply(uuid.uuid4().hex)
        return self._reply_to

    async def result_of(self, t: Transfer) -> Result | None:
        """The recorded result of `t`'s key, if it applied (None: not applied, or forgotten)."""
        return _from_record(cast("bytes | None", await self.redis.get(record_key(self.keys, t))), t)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="spend-replies")

    async def _read(self) -> None:
        last = "0-0"
        while not self._closing:
            try:
                got = await self.redis.xread(
                    {self.reply_to: last}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except Exception as err:  # Redis away: the waiters fall back to the records
                log.warning("spend_reply_read_failed error=%r", err)
                await asyncio.sleep(0.2)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    for rkey, result in replies_decoder.decode(fields[b"rs"]):
                        for fut in self._waiting.pop(rkey, []):
                            if not fut.done():
                                fut.set_result(result)
            if got:
                with contextlib.suppress(Exception):
                    await self.redis.xtrim(self.reply_to, minid=last)

    async def close(self) -> None:
        """Stop the reply reader and drop the reply stream.

        The reader is asked to stop and ends when its blocking XREAD returns (at most
        READ_BLOCK_MS). It is not cancelled unless that fails: a cancelled blocking XREAD can
        leave redis-py's task pending for good (redis/redis-py#2579), and `asyncio.run` then
        waits on it forever when it tears its loop down."""
        self._closing = True
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.wait({reader}, timeout=READ_BLOCK_MS / 1000 + CLOSE_WAIT_S)
            if not reader.done():
                reader.cancel()
        if self._reply_to:
            with contextlib.suppress(Exception):
                await self.redis.delete(self._reply_to)


class SyncSpendClient:
    """Submit transfers from threaded code (actors: raffle refunds and prizes) and wait.

    One call at a time per client (a lock serialises them); each reads its own reply stream.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        member_shards: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.member_shards = member_shards
        self.timeout_s = timeout_s
        self.clock = clock
        self.reply_to = keys.spend_reply(uuid.uuid4().hex)
        self._last = "0-0"
        self._lock = threading.Lock()

    def submit(self, t: Transfer, timeout_s: float | None = None) -> Result:
        return self.submit_many([t], timeout_s)[0]

    def submit_many(
        self, transfers: Sequence[Transfer], timeout_s: float | None = None
    ) -> list[Result]:
        """Submit transfers in one round trip and wait for every result (same order)."""
        stamped = [_stamp(t, self.clock) for t in transfers]
        rkeys = [record_key(self.keys, t) for t in stamped]
        with self._lock:
            pipe = self.redis.pipeline(transaction=False)
            for t in stamped:
                stream = shard_stream(self.keys, self.member_shards, t)
                pipe.xadd(stream, {"s": encode(t), "r": self.reply_to, "n": 1})
            pipe.execute()
            timeout = self.timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + timeout
            wanted = set(rkeys)
            got: dict[str, Result] = {}
            while wanted - got.keys():
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                reply = self.redis.xread(
                    {self.reply_to: self._last}, count=READ_COUNT, block=min(left_ms, READ_BLOCK_MS)
                )
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        self._last = entry_id.decode()
                        for rkey, result in replies_decoder.decode(fields[b"rs"]):
                            if rkey in wanted:
                                got[rkey] = result
            out: list[Result] = []
            for t, rkey in zip(stamped, rkeys, strict=True):
                result = got.get(rkey)
                if result is None:
                    result = _from_record(cast("bytes | None", self.redis.get(rkey)), t)
                if result is None:
                    raise SpendTimeout(f"no result for transfer {t.key!r} in {timeout} s")
                out.append(result)
            self.redis.xtrim(self.reply_to, minid=self._last)
            return out

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(self.reply_to)
