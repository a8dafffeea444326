"""What the gateway admits: events inside the event-time window, and no new ingest while the
pipeline lags beyond its bound.

Event time (README, "Event time", rule 1): a batch with an event whose `ts` lies outside
[now - max_event_age_s, now + max_future_s] of the gateway's clock is refused whole with 400
naming `ts` and the event's index. An older event could no longer be deduplicated (ids are
remembered for that window); a future-dated one would hold its channel's clock and its
member's chat points until that date.

Load shedding (README, "Overload"): `Admission` measures the pipeline's lag every
LAG_PROBE_S in the background (two pipelined Redis round trips, never per request):

- events: accepted by a gateway but not yet applied by a channel shard (the stats counters
  events_in - events_applied - events_dup), counted while an ingest stream has entries its
  shard has not applied (so an entry moved to the dead-letter stream leaves no phantom lag);
- seconds: the age, by the Redis clock, of the oldest entry of an ingest or credits stream
  that its shard has not applied (the offsets hash).

While either passes its bound ([limits] max_lag_events, max_lag_s; 0 = no bound), new ingest
is refused: HTTP 503 with Retry-After, a "slow_down" frame on a WebSocket. Everything
accepted before is still applied and credited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.redisconn import text
from engine.events import Event
from gateway.errors import BadRequest, Overloaded
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings

log = logging.getLogger(__name__)

LAG_PROBE_S = 0.2
"""How often the lag of the pipeline is measured."""
RETRY_AFTER_S = 1
"""What a shed request is told to wait before it retries (Retry-After, `retry_after`)."""
_COUNTERS = ("events_in", "events_applied", "events_dup")


def check_event_times(
    events: Sequence[Event], now: float, max_age_s: float, max_future_s: float
) -> None:
    """Raise BadRequest naming the first event whose ts is outside the window around `now`."""
    oldest, newest = now - max_age_s, now + max_future_s
    for i, ev in enumerate(events):
        ts = ev.ts
        if oldest <= ts <= newest:  # False for NaN too
            continue
        if not math.isfinite(ts):
            why = "is not a finite time"
        elif ts < oldest:
            why = (f"is {now - ts:,.0f} s before the server clock; at most max_event_age_s = "
                   f"{max_age_s:g} s is accepted")  # fmt: skip
        else:
            why = (f"is {ts - now:,.0f} s ahead of the server clock; at most max_future_s = "
                   f"{max_future_s:g} s is accepted")  # fmt: skip
        raise BadRequest(
            f"events[{i}].ts = {ts!r} {why}", field="ts", index=i, code="ts_out_of_window"
        )


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the pipeline is behind what the gateways accepted."""

    events: int = 0
    """Events accepted but not yet applied by a channel shard."""
    seconds: float = 0.0
    """Age of the oldest ingest or credits entry not yet applied by its shard."""


def _ms(entry_id: bytes | str) -> int:
    return int(text(entry_id).partition("-")[0])


async def measure_lag(
    client: aioredis.Redis, keys: Keys, channel_shards: int, member_shards: int
) -> Lag:
    """The pipeline's lag now, in three round trips (two of them pipelined)."""
    ingest = [keys.ingest(p) for p in range(channel_shards)]
    streams = ingest + [keys.credits(m) for m in range(member_shards)]
    async with client.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.stats, list(_COUNTERS))
        pipe.hmget(keys.offsets, streams)
        counts, offsets = await pipe.execute()
    now_s, now_us = await client.time()  # not in a pipeline: a cluster's pipeline refuses it
    async with client.pipeline(transaction=False) as pipe:
        for stream, applied in zip(streams, offsets, strict=True):
            start = "-" if applied is None else "(" + text(applied)
            pipe.xrange(stream, start, "+", count=1)
        firsts = await pipe.execute()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    unapplied = [_ms(first[0][0]) for first in firsts if first]
    seconds = max(0.0, (now_ms - min(unapplied)) / 1000) if unapplied else 0.0
    n_in, n_applied, n_dup = (int(c or 0) for c in counts)
    behind = any(firsts[: len(ingest)])
    return Lag(max(0, n_in - n_applied - n_dup) if behind else 0, seconds)


class Admission:
    """The event-time window and load shedding, for HTTP batches and WebSocket frames."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        metrics: GatewayMetrics,
        *,
        channel_shards: int,
        member_shards: int,
        max_event_age_s: float,
        max_future_s: float,
        max_lag_events: int,
        max_lag_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._metrics = metrics
        self._shards = (channel_shards, member_shards)
        self._max_age_s = max_event_age_s
        self._max_future_s = max_future_s
        self._max_lag_events = max_lag_events
        self._max_lag_s = max_lag_s
        self._clock = clock
        self.lag = Lag()
        self.overload: str | None = None
        """Why ingest is shed now (None: it is not)."""
        metrics.lag_events.set_function(lambda: self.lag.events)
        metrics.lag_seconds.set_function(lambda: self.lag.seconds)
        metrics.shedding.set_function(lambda: int(self.overload is not None))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        client: aioredis.Redis,
        keys: Keys,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.time,
    ) -> Admission:
        lim = settings.limits
        return cls(
            client, keys, metrics,
            channel_shards=settings.shards.channel, member_shards=settings.shards.member,
            max_event_age_s=lim.max_event_age_s, max_future_s=lim.max_future_s,
            max_lag_events=lim.max_lag_events, max_lag_s=lim.max_lag_s, clock=clock,
        )  # fmt: skip

    def check_times(self, events: Sequence[Event]) -> None:
        """400 unless every event's ts lies in the window around the gateway's clock."""
        check_event_times(events, self._clock(), self._max_age_s, self._max_future_s)

    def shed(self, transport: str, ids: list[str] | None = None) -> None:
        """Raise Overloaded (counted by transport) while the pipeline lags beyond its bound;
        on a WebSocket ("ws") the frame says "slow_down" and names the ids not accepted."""
        if self.overload is None:
            return
        self._metrics.observe_shed(transport)
        raise Overloaded(
            f"{self.overload}: retry after {RETRY_AFTER_S} s",
            retry_after_s=RETRY_AFTER_S,
            code="slow_down" if transport == "ws" else None,
            ids=ids,
        )

    def update(self, lag: Lag) -> None:
        """Take a new measurement: shed while it passes a bound."""
        self.lag = lag
        reason = None
        if self._max_lag_events and lag.events > self._max_lag_events:
            reason = (f"pipeline overloaded: {lag.events:,} events wait for the channel "
                      f"shards (max_lag_events = {self._max_lag_events:,})")  # fmt: skip
        elif self._max_lag_s and lag.seconds > self._max_lag_s:
            reason = (f"pipeline overloaded: {lag.seconds:,.1f} s behind "
                      f"(max_lag_s = {self._max_lag_s:g})")  # fmt: skip
        if (reason is None) != (self.overload is None):
            if reason is None:
                log.info("ingest_shedding_stopped lag_events=%d lag_s=%.1f", lag.events,
                         lag.seconds)  # fmt: skip
            else:
                log.warning("ingest_shedding_started %s", reason)
        self.overload = reason

    async def _probe(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                self.update(await measure_lag(self._redis, self._keys, *self._shards))
                failing = False
            except Exception as err:  # whatever it is, the probe lives on: it is admission's
                if not failing:  # only eyes. Keep the last measurement; ingest fails meanwhile
                    log.warning("pipeline_lag_probe_failed error=%r", err,
                                exc_info=not isinstance(err, RedisError | OSError))  # fmt: skip
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_PROBE_S)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the lag probe runs while the app serves."""
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._probe(stop), name="pipeline-lag")
        yield
        stop.set()  # also ends a probe whose cancellation a Redis call turned into a timeout
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


ADMISSION = web.AppKey("admission", Admission)
