"""Operations: health, readiness and Prometheus metrics (gateway counters + Redis state)."""

from __future__ import annotations

import asyncio

import redis
from prometheus_client.parser import text_string_to_metric_families

from actors.keys import Keys
from gateway.redis_server import RedisServer

from .helpers import chat, make_settings, post, serve


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_health_readiness_and_metrics(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)

    async def go() -> str:
        async with serve(make_settings(namespace), redis_server.url) as client:
            for path, status in [("/healthz", 200), ("/readyz", 200)]:
                async with client.get(path) as resp:
                    assert resp.status == status
            assert (await post(client, [chat(1), chat(2), chat(3)]))[0] == 202
            assert (await post(client, [{"kind": "nope"}]))[0] == 400
            redis_client.xgroup_create(keys.ingest(0), "channel-shards", id="0", mkstream=True)
            redis_client.hset(
                keys.latency,
                mapping={"5": 3, "100": 1, "inf": 1, "sum_ms": 40_070, "max_ms": 40_000},
            )
            async with client.get("/metrics") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/plain"
                return await resp.text()

    text = asyncio.run(go())
    m = _samples(text)
    route = (("method", "POST"), ("route", "/v1/events"))
    assert m[("rally_gateway_requests_total", (*route, ("status", "202")))] == 1
    assert m[("rally_gateway_requests_total", (*route, ("status", "400")))] == 1
    assert m[("rally_gateway_rejects_total", (("code", "invalid_event"),))] == 1
    assert m[("rally_gateway_events_accepted_total", ())] == 3
    assert m[("rally_ingest_queue_events", ())] == 0
    assert m[("rally_ingest_flush_events_count", ())] == 1
    assert m[("rally_redis_up", ())] == 1
    assert m[("rally_events_in_total", ())] == 3
    assert m[("rally_batches_in_total", ())] == 1
    total = sum(redis_client.xlen(keys.ingest(p)) for p in range(2))
    assert sum(m[("rally_stream_length", (("stream", f"ingest:{p}"),))] for p in range(2)) == total
    assert m[("rally_stream_length", (("stream", "credits:1"),))] == 0
    lag = m[("rally_stream_group_lag", (("group", "channel-shards"), ("stream", "ingest:0")))]
    assert lag == redis_client.xlen(keys.ingest(0))
    assert (
        m[("rally_stream_group_pending", (("group", "channel-shards"), ("stream", "ingest:0")))]
        == 0
    )
    hist = "rally_ingest_to_credit_latency_ms"
    assert m[(f"{hist}_bucket", (("le", "2.0"),))] == 0
    assert m[(f"{hist}_bucket", (("le", "5.0"),))] == 3
    assert m[(f"{hist}_bucket", (("le", "100.0"),))] == 4
    assert m[(f"{hist}_bucket", (("le", "30000.0"),))] == 4
    assert m[(f"{hist}_bucket", (("le", "+Inf"),))] == 5
    assert m[(f"{hist}_count", ())] == 5
    assert m[(f"{hist}_sum", ())] == 40_070
    assert m[("rally_ingest_to_credit_latency_max_ms", ())] == 40_000


def test_two_apps_in_one_process_have_their_own_registries(
    redis_server: RedisServer, namespace: str
) -> None:
    async def go() -> None:
        settings = make_settings(namespace)
        async with serve(settings, redis_server.url) as a, serve(settings, redis_server.url) as b:
            for client in (a, b):
                async with client.get("/metrics") as resp:
                    assert resp.status == 200

    asyncio.run(go())
