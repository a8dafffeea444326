"""HTTP ingest: durable, partitioned, all-or-nothing appends; bad input refused by name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from actors.keys import Keys
from engine.events import decode_json_batch
from gateway.errors import Unavailable
from gateway.ingest import Idempotency, IngestWriter, partition_of
from gateway.redis_server import RedisServer, free_port

from .helpers import (
    SHARDS,
    body_of,
    chat,
    make_settings,
    post,
    serve,
    signed,
    stream_entries,
    stream_lengths,
)


def channel_in(p: int, network: str = "demo") -> str:
    return next(f"ch{i}" for i in range(100) if partition_of(network, f"ch{i}", SHARDS) == p)


C0, C1 = channel_in(0), channel_in(1)


def test_batch_is_split_by_partition_one_entry_each(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    events = [chat(1, C0), chat(2, C1), chat(3, C0), chat(4, C1), chat(5, C0)]

    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            assert await post(client, {"events": events}) == (202, {"accepted": 5})

    asyncio.run(go())
    assert stream_lengths(redis_client, namespace) == [1, 1]
    got = stream_entries(redis_client, namespace)
    assert [e.id for e in got[0]] == ["e1", "e3", "e5"]
    assert [e.id for e in got[1]] == ["e2", "e4"]
    assert got[0] + got[1] == [
        *decode_json_batch(body_of(events))[0::2],
        *decode_json_batch(body_of(events))[1::2],
    ]
    stats = redis_client.hgetall(Keys(namespace).stats)
    assert stats == {b"events_in": b"5", b"batches_in": b"1"}


def test_bare_list_and_single_event_are_accepted(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            assert await post(client, [chat(1, C0), chat(2, C0)]) == (202, {"accepted": 2})
            assert await post(client, chat(3, C0)) == (202, {"accepted": 1})

    asyncio.run(go())
    assert [e.id for e in stream_entries(redis_client, namespace)[0]] == ["e1", "e2", "e3"]


def _long(n: int) -> bytes:
    return body_of({"events": [chat(i, C0) for i in range(n)]})


BAD_INPUT: list[tuple[str, Any, dict[str, str], int, str, str | None, int | None]] = [
    # (case, body, extra headers, status, error, field, index)
    ("malformed json", b'{"events": [', {}, 400, "malformed_json", "body", None),
    ("not json at all", b"<html>", {}, 400, "malformed_json", "body", None),
    ("empty body", b"", {}, 400, "empty_batch", "body", None),
    ("empty batch", {"events": []}, {}, 400, "empty_batch", "events", None),
    ("empty list", [], {}, 400, "empty_batch", "events", None),
    ("unknown kind", [chat(1), {**chat(2), "kind": "dance"}], {}, 400, "invalid_event", "kind", 1),
    (
        "missing field",
        [chat(1), chat(2), {k: v for k, v in chat(3).items() if k != "channel"}],
        {},
        400,
        "invalid_event",
        "channel",
        2,
    ),
    ("wrong type", {"events": [chat(1, ts="yesterday")]}, {}, 400, "invalid_event", "ts", 0),
    ("bad id", [chat(1), chat(2, id="has space")], {}, 400, "invalid_event", "id", 1),
    ("id too long", [chat(1, id="x" * 129)], {}, 400, "invalid_event", "id", 0),
    ("negative ts", [chat(1, ts=-5)], {}, 400, "invalid_event", "ts", 0),
    ("unknown field", [chat(1, colour="red")], {}, 400, "invalid_event", "colour", 0),
    ("no user on a chat", [chat(1, user_id="")], {}, 400, "invalid_event", "user_id", 0),
    ("too many events", _long(4), {}, 413, "too_large", "events", None),
    ("body too large", _long(40), {}, 413, "too_large", "body", None),
    (
        "idempotency key too long",
        [chat(1)],
        {"Idempotency-Key": "k" * 129},
        400,
        "bad_idempotency_key",
        "Idempotency-Key",
        None,
    ),
    (
        "idempotency key with spaces",
        [chat(1)],
        {"Idempotency-Key": "a b"},
        400,
        "bad_idempotency_key",
        "Idempotency-Key",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "payload", "extra", "status", "error", "field", "index"),
    BAD_INPUT,
    ids=[c[0] for c in BAD_INPUT],
)
def test_bad_input_is_refused_by_name_and_harms_nothing(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    namespace: str,
    case: str,
    payload: Any,
    extra: dict[str, str],
    status: int,
    error: str,
    field: str | None,
    index: int | None,
) -> None:
    settings = make_settings(namespace, max_batch_events=3, max_body_bytes=4096)

    async def go() -> None:
        async with serve(settings, redis_server.url) as client:
            assert (await post(client, [chat(100, C0), chat(101, C1)]))[0] == 202
            before = stream_lengths(redis_client, namespace)
            body = payload if isinstance(payload, bytes) else body_of(payload)
            code, answer = await post(client, body, headers=signed(body, **extra))
            assert code == status, answer
            assert answer["error"] == error
            assert answer["field"] == field
            assert answer["index"] == index
            assert answer["message"]
            assert stream_lengths(redis_client, namespace) == before

    asyncio.run(go())


def test_chunked_body_over_the_limit_is_413_json(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    body = _long(40)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    async def go() -> None:
        settings = make_settings(namespace, max_body_bytes=2048)
        async with (
            serve(settings, redis_server.url) as client,
            client.post("/v1/events", data=chunks(), headers=signed(body)) as resp,
        ):
            assert resp.status == 413
            answer = await resp.json()
            assert (answer["error"], answer["field"]) == ("too_large", "body")

    asyncio.run(go())
    assert stream_lengths(redis_client, namespace) == [0, 0]


def test_unknown_routes_and_methods_answer_json(redis_server: RedisServer, namespace: str) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            async with client.get("/nope") as resp:
                assert resp.status == 404
                assert (await resp.json())["error"] == "not_found"
            async with client.get("/v1/events") as resp:
                assert resp.status == 405
                assert (await resp.json())["error"] == "method_not_allowed"

    asyncio.run(go())


def test_idempotency_key_retry_answers_the_same_and_appends_once(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    batch = {"events": [chat(1, C0), chat(2, C1)]}
    idem = {"Idempotency-Key": "batch-0001"}

    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            first = await post(client, batch, **idem)
            assert first == (202, {"accepted": 2})
            again = [post(client, batch, **idem) for _ in range(5)]
            assert await asyncio.gather(*again) == [first] * 5
            code, answer = await post(client, {"events": [chat(3, C0)]}, **idem)
            assert (code, answer["error"], answer["field"]) == (
                409,
                "idempotency_conflict",
                "Idempotency-Key",
            )

    asyncio.run(go())
    assert stream_lengths(redis_client, namespace) == [1, 1]
    keys = Keys(namespace)
    assert redis_client.ttl(keys.idem("k1", "batch-0001")) > 86_000
    assert redis_client.hgetall(keys.stats) == {b"events_in": b"2", b"batches_in": b"1"}


def test_concurrent_single_event_posts_are_coalesced_and_all_land(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    n = 200

    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            results = await asyncio.gather(
                *(
                    post(
                        client,
                        chat(i, C0 if i % 2 else C1),
                        **({"Idempotency-Key": f"k{i}"} if i % 10 == 0 else {}),
                    )
                    for i in range(n)
                )
            )
            assert results == [(202, {"accepted": 1})] * n

    asyncio.run(go())
    landed = stream_entries(redis_client, namespace)
    ids = sorted(e.id for part in landed.values() for e in part)
    assert ids == sorted(f"e{i}" for i in range(n))
    assert all(partition_of("demo", e.channel, SHARDS) == p for p, es in landed.items() for e in es)
    assert sum(stream_lengths(redis_client, namespace)) < n  # coalesced into fewer entries
    stats = redis_client.hgetall(Keys(namespace).stats)
    assert stats == {b"events_in": str(n).encode(), b"batches_in": str(n).encode()}


def test_redis_down_answers_503_and_acknowledges_nothing(namespace: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def go() -> None:
        async with serve(make_settings(namespace), dead) as client:
            body = body_of([chat(1)])
            async with client.post("/v1/events", data=body, headers=signed(body)) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
                assert (await resp.json())["error"] == "unavailable"
            async with client.get("/readyz") as resp:
                assert resp.status == 503
            async with client.get("/healthz") as resp:
                assert resp.status == 200

    asyncio.run(go())


def _writer(url: str, namespace: str, **kw: Any) -> IngestWriter:
    import redis.asyncio as aioredis

    opts: dict[str, Any] = {
        "channel_shards": SHARDS,
        "coalesce_window_ms": 2,
        "max_coalesce_events": 1000,
        "max_queue_events": 1000,
    }
    opts.update(kw)
    return IngestWriter(aioredis.Redis.from_url(url), Keys(namespace), **opts)


def test_writer_fails_every_request_of_a_failed_flush(namespace: str) -> None:
    async def go() -> None:
        writer = _writer(f"redis://127.0.0.1:{free_port()}/0", namespace)
        writer.start()
        events = decode_json_batch(body_of([chat(1, C0), chat(2, C1)]))
        futures = [writer.submit(events), writer.submit(events, Idempotency("x", b"r", 10))]
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            assert isinstance(outcome, Unavailable)
        await writer.close()
        assert writer.queued_events == 0

    asyncio.run(go())


def test_writer_queue_is_bounded(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def go() -> None:
        writer = _writer(redis_server.url, namespace, max_queue_events=3)
        writer.start()
        events = decode_json_batch(body_of([chat(1, C0), chat(2, C0)]))
        first = writer.submit(events)
        with pytest.raises(Unavailable) as info:
            writer.submit(events)
        assert info.value.headers == {"Retry-After": "1"}
        await first
        await writer.append(events)  # room again once written
        await writer.close()
        with pytest.raises(Unavailable):
            writer.submit(events)

    asyncio.run(go())
    assert stream_lengths(redis_client, namespace)[0] == 2


def test_writer_splits_flushes_at_max_coalesce_events(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    sizes: list[int] = []

    async def go() -> None:
        writer = _writer(redis_server.url, namespace, max_coalesce_events=5)
        writer._on_flush = lambda n, _r, _s: sizes.append(n)
        writer.start()
        events = decode_json_batch(body_of([chat(1, C0), chat(2, C0)]))
        await asyncio.gather(*(writer.submit(events) for _ in range(6)))
        await writer.close()

    asyncio.run(go())
    assert sum(sizes) == 12
    assert max(sizes) <= 5
