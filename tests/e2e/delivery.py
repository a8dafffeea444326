"""Clients that deliver events to a gateway as a careful producer would: retry what failed
(connection lost, 5xx, 503) with the same ids until it is acknowledged, over HTTP batches or
a WebSocket that reconnects and resends its unacknowledged frames.

`deliver` sends items (batches or frames) with a bounded number in flight, and never lets an
item start while an earlier one, older by more than `span_s` of event time, is still in
flight: concurrency reorders arrival, but only within the allowed lateness.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import msgspec

from gateway.signing import signed_headers, ws_handshake

RETRY_S = 0.05
GIVE_UP_S = 120.0
"""A request still failing after this long fails the test."""
_encode = msgspec.json.encode


class Rejected(AssertionError):
    """The gateway refused events that the test meant to be valid (a 4xx)."""


def _transient(status: int) -> bool:
    return status >= 500 or status == 429


async def post_batch(
    session: aiohttp.ClientSession,
    url: Callable[[], str],
    auth: tuple[str, str],
    events: Sequence[dict],
    idempotency_key: str | None = None,
    body: bytes | None = None,
) -> dict[str, Any]:
    """POST /v1/events until a 2xx; returns the JSON answer. `body` overrides the encoding."""
    data = body if body is not None else _encode({"events": list(events)})
    deadline = time.monotonic() + GIVE_UP_S
    while True:
        headers = {"Content-Type": "application/json", **signed_headers(*auth, data)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with session.post(url() + "/v1/events", data=data, headers=headers) as resp:
                text = await resp.read()
                if resp.status < 300:
                    return json.loads(text or b"{}")
                if not _transient(resp.status):
                    raise Rejected(f"{resp.status}: {text[:500]!r}")
                problem = f"{resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            problem = repr(err)
        if time.monotonic() > deadline:
            raise AssertionError(f"batch never acknowledged: {problem}")
        await asyncio.sleep(RETRY_S)


class WsLink:
    """One logical WebSocket producer: `send` resolves once the frame is acknowledged, across
    reconnects (a dropped socket is reopened and every unacknowledged frame sent again)."""

    def __init__(
        self, session: aiohttp.ClientSession, url: Callable[[], str], auth: tuple[str, str]
    ) -> None:
        self.session = session
        self.url = url
        self.auth = auth
        self.pending: dict[tuple[str, ...], tuple[bytes, asyncio.Future[None]]] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self.reconnects = -1

    async def __aenter__(self) -> WsLink:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.ws is not None:
            await self.ws.close()

    async def send(self, frame: bytes, ids: Sequence[str]) -> None:
        key = tuple(ids)
        assert key not in self.pending, "a frame is in flight twice"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[key] = (frame, future)
        if self.ws is not None and not self.ws.closed:
            try:
                await self.ws.send_bytes(frame)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass  # the reader sees the socket close and resends
        try:
            await future
        finally:
            self.pending.pop(key, None)

    async def _run(self) -> None:
        deadline = time.monotonic() + GIVE_UP_S
        while True:
            try:
                target, headers = ws_handshake(*self.auth)  # single use: one per connection
                self.ws = await self.session.ws_connect(self.url() + target, headers=headers)
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                if time.monotonic() > deadline:
                    self._fail(AssertionError(f"websocket never reconnected: {err!r}"))
                    return
                await asyncio.sleep(RETRY_S)
                continue
            self.reconnects += 1
            try:
                for frame, _ in list(self.pending.values()):
                    await self.ws.send_bytes(frame)
                await self._read(self.ws)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
            deadline = time.monotonic() + GIVE_UP_S

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            answer = json.loads(msg.data)
            ids = tuple(answer.get("ack") or answer.get("ids") or ())
            found = self.pending.get(ids)
            if "ack" in answer:
                if found is not None and not found[1].done():
                    found[1].set_result(None)
            elif found is not None:  # decoded and valid, but not appended: send it again
                await asyncio.sleep(RETRY_S)
                await ws.send_bytes(found[0])
            elif not ids:  # a frame refused as invalid (errors name no ids)
                self._fail(Rejected(f"websocket error frame: {answer}"))

    def _fail(self, err: Exception) -> None:
        for _, future in list(self.pending.values()):
            if not future.done():
                future.set_exception(err)


def ts_range(events: Sequence[dict]) -> tuple[float, float]:
    stamps = [e["ts"] for e in events]
    return min(stamps), max(stamps)


class Gate:
    """Keeps producers that deliver concurrently to one deployment within `span_s` of event
    time of each other (the deployment's watermark follows the newest of them): a producer
    starts an item only when no other still has to send anything older than the item's
    newest event minus span_s."""

    def __init__(self, producers: int, span_s: float) -> None:
        self.producers = producers
        self.span_s = span_s
        self.low: dict[int, float] = {}
        self.changed = asyncio.Condition()

    def join(self, first_ts: float) -> int:
        """Register a producer; none starts before all `producers` have joined."""
        key = len(self.low)
        assert key < self.producers, "more producers than the gate was made for"
        self.low[key] = first_ts
        return key

    def is_open(self, key: int, newest: float) -> bool:
        if len(self.low) < self.producers:
            return False
        others = (v for k, v in self.low.items() if k != key)
        return min(others, default=float("inf")) >= newest - self.span_s

    async def move(self, key: int, low: float) -> None:
        async with self.changed:
            self.low[key] = low
            self.changed.notify_all()

    async def wait(self, key: int, newest: float) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.is_open(key, newest))


async def deliver(
    items: Sequence[Sequence[dict]],
    send: Callable[[int, Sequence[dict]], Awaitable[None]],
    *,
    max_inflight: int = 1,
    span_s: float = float("inf"),
    after: Callable[[int], Awaitable[None]] | None = None,
    gate: Gate | None = None,
) -> None:
    """`send(i, item)` every item, in order, at most `max_inflight` at once; an item starts
    only when every item still in flight is at most `span_s` older in event time (and, with
    a `gate`, when the other producers have caught up). `after(n)` runs once n items have
    been acknowledged (e.g. to kill a process mid-run)."""
    ranges = [ts_range(item) for item in items]
    inflight: dict[int, asyncio.Task[None]] = {}
    done_count = itertools.count(1)
    me = gate.join(ranges[0][0] if ranges else float("inf")) if gate is not None else 0

    async def settle(block: bool) -> None:
        if not inflight:
            return
        done, _ = await asyncio.wait(
            inflight.values(), return_when=asyncio.FIRST_COMPLETED, timeout=None if block else 0
        )
        for i in [i for i, t in inflight.items() if t in done]:
            inflight.pop(i).result()
            if after is not None:
                await after(next(done_count))

    async def pass_gate(i: int) -> None:
        assert gate is not None
        await gate.move(me, min([ranges[i][0], *(ranges[j][0] for j in inflight)]))
        if not gate.is_open(me, ranges[i][1]):
            while inflight:  # others wait on what this producer still has to send: finish it
                await settle(block=True)
            await gate.move(me, ranges[i][0])
            await gate.wait(me, ranges[i][1])

    try:
        for i, item in enumerate(items):
            await settle(block=False)
            while inflight and (
                len(inflight) >= max_inflight
                or min(ranges[j][0] for j in inflight) < ranges[i][1] - span_s
            ):
                await settle(block=True)
            if gate is not None:
                await pass_gate(i)
            inflight[i] = asyncio.create_task(send(i, item))
        while inflight:
            await settle(block=True)
        if gate is not None:
            await gate.move(me, float("inf"))
    finally:
        for task in inflight.values():
            task.cancel()


def chunks(events: Sequence[dict], size: int) -> list[list[dict]]:
    return [list(events[i : i + size]) for i in range(0, len(events), size)]


def chunks_within(events: Sequence[dict], size: int, span_s: float) -> list[list[dict]]:
    """Chunks of at most `size` events spanning at most `span_s` of event time each."""
    out: list[list[dict]] = []
    for e in events:
        if out and len(out[-1]) < size and e["ts"] - out[-1][0]["ts"] <= span_s:
            out[-1].append(e)
        else:
            out.append([e])
    return out
