"""Prometheus metrics: the gateway's own counters, plus pipeline state read from Redis at scrape.

Every app has its own CollectorRegistry (tests build several apps in one process).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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

from actors.keys import LATENCY_BUCKETS_MS, Keys

log = logging.getLogger(__name__)

FLUSH_EVENT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000)
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
        self._request_children: dict[tuple[str, str, int], Any] = {}
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

    def observe_flush(self, events: int, requests: int, seconds: float) -> None:
        self.events_accepted.inc(events)
        self.flush_events.observe(events)
        self.flush_seconds.observe(seconds)


@dataclass
class RedisSnapshot:
    """Pipeline state read from Redis for one scrape."""

    up: bool = False
    streams: dict[str, int] = field(default_factory=dict)
    groups: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(stream, group, lag, pending)"""
    stats: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def scrape_redis(
    client: aioredis.Redis, keys: Keys, channel_shards: int, member_shards: int
) -> RedisSnapshot:
    """XLEN and consumer-group lag/pending of each stream, the stats and latency hashes."""
    streams = [f"ingest:{p}" for p in range(channel_shards)]
    streams += [f"credits:{m}" for m in range(member_shards)]
    snap = RedisSnapshot()
    try:
        async with client.pipeline(transaction=False) as pipe:
            for s in streams:
                pipe.xlen(keys.k(s))
                pipe.xinfo_groups(keys.k(s))
            pipe.hgetall(keys.stats)
            pipe.hgetall(keys.latency)
            replies = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as err:
        log.warning("metrics_redis_scrape_failed error=%r", err)
        return snap
    snap.up = True
    for i, s in enumerate(streams):
        length, groups = replies[2 * i], replies[2 * i + 1]
        snap.streams[s] = length if isinstance(length, int) else 0
        if isinstance(groups, list):
            for g in groups:
                info = {_text(k): v for k, v in g.items()}
                lag = info.get("lag")
                snap.groups.append(
                    (s, _text(info["name"]), int(lag or 0), int(info.get("pending") or 0))
                )
    stats, latency = replies[-2], replies[-1]
    if isinstance(stats, dict):
        snap.stats = {_text(k): int(v) for k, v in stats.items()}
    if isinstance(latency, dict):
        snap.latency = {_text(k): float(v) for k, v in latency.items()}
    return snap


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
        length = GaugeMetricFamily("rally_stream_length", "XLEN of a stream.", labels=["stream"])
        for s, n in snap.streams.items():
            length.add_metric([s], n)
        yield length
        lag = GaugeMetricFamily(
            "rally_stream_group_lag", "Entries not yet read by a group.", labels=["stream", "group"]
        )
        pending = GaugeMetricFamily(
            "rally_stream_group_pending",
            "Entries read by a group but not acknowledged.",
            labels=["stream", "group"],
        )
        for s, g, lag_n, pending_n in snap.groups:
            lag.add_metric([s, g], lag_n)
            pending.add_metric([s, g], pending_n)
        yield lag
        yield pending
        for name, value in sorted(snap.stats.items()):
            safe = _METRIC_NAME.sub("_", name)
            yield CounterMetricFamily(f"rally_{safe}", f"{name} (Redis stats hash).", value=value)
        yield latency_histogram(snap.latency)
        yield GaugeMetricFamily(
            "rally_ingest_to_credit_latency_max_ms",
            "Largest ingest-to-credit latency seen, in ms.",
            snap.latency.get("max_ms", 0.0),
        )


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
