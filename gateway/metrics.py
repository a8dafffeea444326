"""Prometheus metrics: the gateway's own counters, plus pipeline state read from Redis at scrape.

Every app has its own CollectorRegistry (tests build several apps in one process).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from actors.health import Health, aread_health, expected_shards, redis_down
from actors.keys import LATENCY_BUCKETS_MS, Keys
from actors.redisconn import text

log = logging.getLogger(__name__)

FLUSH_EVENT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000)
READYZ_TIMEOUT_S = 2.0
_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


class GatewayMetrics:
    """The gateway process's counters; `observe_*` are called on the hot path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rally_gateway_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "rally_gateway_events_accepted", "Events durably appended.", registry=registry
        )
        self.rejects = Counter(
            "rally_gateway_rejects", "Requests or frames refused, by error code.", ["code"],
            registry=registry,
        )  # fmt: skip
        self.queue_events = Gauge(
            "rally_ingest_queue_events", "Events waiting for the ingest writer.", registry=registry
        )
        self.flush_events = Histogram(
            "rally_ingest_flush_events",
            "Events written per ingest flush (one Redis transaction).",
            buckets=FLUSH_EVENT_BUCKETS,
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "rally_ingest_flush_seconds", "Duration of one ingest flush.", registry=registry
        )
        self.shed = Counter(
            "rally_gateway_shed",
            "Ingest requests (http) and frames (ws) refused because the pipeline lagged "
            "beyond [limits] max_lag_events or max_lag_s.",
            ["transport"],
            registry=registry,
        )
        self.lag_events = Gauge(
            "rally_pipeline_lag_events",
            "Events accepted but not yet applied by a channel shard (as last measured).",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "rally_pipeline_lag_seconds",
            "Age of the oldest ingest or credits entry not yet applied (as last measured).",
            registry=registry,
        )
        self.shedding = Gauge(
            "rally_gateway_shedding", "1 while this gateway sheds ingest.", registry=registry
        )
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._shed_children: dict[str, Any] = {}
        self._reject_children: dict[str, Any] = {}

    def observe_request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(route, method, str(status))
            self._request_children[key] = child
        child.inc()

    def observe_reject(self, code: str) -> None:
        child = self._reject_children.get(code)
        if child is None:
            child = self.rejects.labels(code)
            self._reject_children[code] = child
        child.inc()

    def observe_shed(self, transport: str) -> None:
        child = self._shed_children.get(transport)
        if child is None:
            child = self._shed_children[transport] = self.shed.labels(transport)
        child.inc()

    def observe_flush(self, events: int, requests: int, seconds: float) -> None:
        self.events_accepted.inc(events)
        self.flush_events.observe(events)
        self.flush_seconds.observe(seconds)


@dataclass
class RedisSnapshot:
    """Pipeline state read from Redis for one scrape."""

    up: bool = False
    health: Health | None = None
    """Shard health, stream lengths and every consumer group's lag (actors/health.py)."""
    stats: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    payouts: dict[str, int] = field(default_factory=dict)
    """Payout and event-webhook counters (postats, hkstats) and queue lengths."""


async def scrape_redis(
    client: aioredis.Redis, keys: Keys, channel_shards: int, member_shards: int
) -> RedisSnapshot:
    """Shard health with the lag of every group of every stream, the stats and latency hashes."""
    snap = RedisSnapshot()
    try:
        snap.health = await aread_health(
            client, keys, expected_shards(channel_shards, member_shards)
        )
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.stats)
            pipe.hgetall(keys.latency)
            for name in PAYOUT_HASHES:
                pipe.hgetall(keys.k(name))
            for name in PAYOUT_QUEUES:
                pipe.zcard(keys.k(name))
            stats, latency, *more = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as err:
        log.warning("metrics_redis_scrape_failed error=%r", err)
        return snap
    snap.up = True
    if isinstance(stats, dict):
        snap.stats = {text(k): int(v) for k, v in stats.items()}
    if isinstance(latency, dict):
        snap.latency = {text(k): float(v) for k, v in latency.items()}
    for name, got in zip((*PAYOUT_HASHES, *PAYOUT_QUEUES), more, strict=True):
        if isinstance(got, dict):
            snap.payouts.update({f"{name}.{text(k)}": int(v) for k, v in got.items()})
        elif isinstance(got, int):
            snap.payouts[name] = got
    return snap


PAYOUT_HASHES = ("postats", "hkstats")
"""Counters kept by the payout actor (actors/payout.py, actors/event_hooks.py)."""
PAYOUT_QUEUES = ("poreq", "poq", "porefund", "podead", "hkq", "hkdead")


def payout_metrics(got: dict[str, int]) -> Iterator[Metric]:
    """Payouts and event webhooks: outcomes so far, what waits, mean latency to settle."""
    out = CounterMetricFamily("rally_payouts", "Payout outcomes (settled, retries, dead, "
                              "reserved, refused, refunded).", labels=["outcome"])  # fmt: skip
    hooks = CounterMetricFamily("rally_event_webhooks", "Event webhook outcomes (delivered, "
                                "retries, dead).", labels=["outcome"])  # fmt: skip
    for key, value in sorted(got.items()):
        name, _, field_ = key.partition(".")
        if not field_ or field_.startswith("latency"):
            continue
        (out if name == "postats" else hooks).add_metric([field_], value)
    yield out
    yield hooks
    queued = GaugeMetricFamily("rally_payouts_queued", "Payouts waiting, by state: requested "
                               "(points not reserved), queued (reserved or sending), refund "
                               "(refund owed), dead.", labels=["state"])  # fmt: skip
    for state, name in (("requested", "poreq"), ("queued", "poq"), ("refund", "porefund"),
                        ("dead", "podead")):  # fmt: skip
        queued.add_metric([state], got.get(name, 0))
    yield queued
    hq = GaugeMetricFamily("rally_event_webhooks_queued", "Event webhooks waiting, by state.",
                           labels=["state"])  # fmt: skip
    hq.add_metric(["pending"], got.get("hkq", 0))
    hq.add_metric(["dead"], got.get("hkdead", 0))
    yield hq
    for name, metric, what in (("postats", "rally_payout_settle_seconds", "a payout"),
                               ("hkstats", "rally_event_webhook_deliver_seconds", "an event")):  # fmt: skip
        n = got.get(f"{name}.latency_count", 0)
        mean = got.get(f"{name}.latency_ms_sum", 0) / n / 1000 if n else 0.0
        yield GaugeMetricFamily(f"{metric}_mean", f"Mean time from {what} created to its 2xx, "
                                "in seconds.", mean)  # fmt: skip


def latency_histogram(latency: dict[str, float]) -> HistogramMetricFamily:
    """The {ns}:latency hash (a count per bucket, non-cumulative) as a Prometheus histogram."""
    buckets: list[tuple[str, float]] = []
    total = 0.0
    for bound in LATENCY_BUCKETS_MS:
        total += latency.get(str(bound), 0.0)
        buckets.append((str(float(bound)), total))
    total += latency.get("inf", 0.0)
    buckets.append(("+Inf", total))
    return HistogramMetricFamily(
        "rally_ingest_to_credit_latency_ms",
        "Latency from ingest (gateway append) to credit (member shard commit), in ms.",
        buckets=buckets,
        sum_value=latency.get("sum_ms", 0.0),
    )


class RedisCollector(Collector):
    """Renders the snapshot taken just before `generate_latest`."""

    def __init__(self) -> None:
        self.snapshot = RedisSnapshot()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily("rally_redis_up", "Redis answered the scrape.", int(snap.up))
        if snap.health is not None:
            yield from health_metrics(snap.health)
        for name, value in sorted(snap.stats.items()):
            safe = _METRIC_NAME.sub("_", name)
            yield CounterMetricFamily(f"rally_{safe}", f"{name} (Redis stats hash).", value=value)
        yield latency_histogram(snap.latency)
        yield from payout_metrics(snap.payouts)
        yield GaugeMetricFamily(
            "rally_ingest_to_credit_latency_max_ms",
            "Largest ingest-to-credit latency seen, in ms.",
            snap.latency.get("max_ms", 0.0),
        )


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def health_metrics(h: Health) -> Iterator[Metric]:
    """Shard health and stream lag as gauges (one sample per shard, stream or group)."""
    yield GaugeMetricFamily("rally_ready", "1 when every started shard is healthy.", int(h.ready))
    per_shard = {
        "rally_shard_up": ("1 while the shard's loop heartbeats.", lambda s: int(s.alive)),
        "rally_shard_fenced": ("1 when a newer instance fenced it.", lambda s: int(s.fenced)),
        "rally_shard_starts": ("Instances started (the fencing epoch).", lambda s: s.starts),
        "rally_shard_restarts": ("Instances started after the first.", lambda s: s.restarts),
        "rally_shard_errors": ("Failed batches of the current instance.", lambda s: s.errors),
        "rally_shard_batches": ("Batches committed by the current instance.", lambda s: s.batches),
        "rally_shard_lag_entries": ("Entries of its stream not yet applied.", lambda s: s.lag),
        "rally_shard_behind_seconds": (
            "Newest entry time minus last applied entry time.", lambda s: s.behind_s),
        "rally_shard_dead_letters": ("Dead letters held from its stream.",
                                     lambda s: s.dead_letters),
        "rally_shard_heartbeat_age_seconds": (
            "Seconds since the last heartbeat (-1: never).",
            lambda s: -1.0 if s.heartbeat_age_s is None else s.heartbeat_age_s),
    }  # fmt: skip
    for name, (doc, value) in per_shard.items():
        family = _gauge(name, doc, ["shard"])
        for sh in h.shards:
            family.add_metric([sh.shard], value(sh))
        yield family
    length = _gauge("rally_stream_length", "XLEN of a stream.", ["stream"])
    lag = _gauge("rally_stream_group_lag", "Entries not yet read by a group.", ["stream", "group"])
    pending = _gauge(
        "rally_stream_group_pending",
        "Entries read by a group but not acknowledged.",
        ["stream", "group"],
    )
    dead = _gauge("rally_dead_letters_held", "Dead letters held, by source stream.", ["stream"])
    for st in h.streams:
        length.add_metric([st.stream], st.length)
        dead.add_metric([st.stream], st.dead_letters)
        for g in st.groups:
            lag.add_metric([st.stream, g.group], g.lag)
            pending.add_metric([st.stream, g.group], g.pending)
    yield from (length, lag, pending, dead)


@dataclass
class MetricsContext:
    metrics: GatewayMetrics
    collector: RedisCollector
    client: aioredis.Redis
    keys: Keys
    channel_shards: int
    member_shards: int


METRICS = web.AppKey("metrics", MetricsContext)


def new_metrics(
    client: aioredis.Redis, keys: Keys, channel_shards: int, member_shards: int
) -> MetricsContext:
    registry = CollectorRegistry()
    collector = RedisCollector()
    registry.register(collector)
    return MetricsContext(
        GatewayMetrics(registry), collector, client, keys, channel_shards, member_shards
    )


async def get_metrics(request: web.Request) -> web.Response:
    ctx = request.app[METRICS]
    ctx.collector.snapshot = await scrape_redis(
        ctx.client, ctx.keys, ctx.channel_shards, ctx.member_shards
    )
    body = generate_latest(ctx.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_readyz(request: web.Request) -> web.Response:
    """Ready: Redis answers and every shard that has started is alive (not dead, not fenced
    for longer than actors.health.FENCED_GRACE_S). 200 or 503, with the health report."""
    ctx = request.app[METRICS]
    shards = expected_shards(ctx.channel_shards, ctx.member_shards)
    try:
        async with asyncio.timeout(READYZ_TIMEOUT_S):
            report = await aread_health(ctx.client, ctx.keys, shards)
    except (RedisError, OSError, TimeoutError) as err:
        report = redis_down(time.time(), repr(err))
    body = {"status": "ready" if report.ready else "not_ready", **msgspec.to_builtins(report)}
    return web.Response(
        body=msgspec.json.encode(body),
        status=200 if report.ready else 503,
        content_type="application/json",
    )
