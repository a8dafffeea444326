"""Load shedding (README, "Overload"): while the pipeline lags beyond [limits] max_lag_events
or max_lag_s, ingest answers 503 + Retry-After (HTTP) or a "slow_down" frame (WebSocket),
counted on /metrics; once the shards catch up ingest resumes, and everything accepted is
credited, nothing shed is."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from actors.client import RallyClient
from actors.keys import Keys
from engine.member import state_decoder
from gateway.redis_server import RedisServer

from .helpers import body_of, chat, make_settings, serve, signed, ws_connect
from .test_ops import _samples

POLL_S = 0.05
WAIT_S = 120.0
"""Longest wait for the gateway's lag probe (every 0.2 s) or the shards to catch up."""


class Producer:
    """Posts chats of fresh members (one member per event) and notes what was accepted."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seq = itertools.count()
        self.accepted: list[int] = []
        self.shed: list[int] = []

    def events(self, n: int) -> tuple[list[int], list[dict[str, Any]]]:
        ids = [next(self.seq) for _ in range(n)]
        return ids, [chat(i, ts=time.time()) for i in ids]

    async def post(self, n: int = 5) -> tuple[int, dict[str, str], dict[str, Any]]:
        ids, events = self.events(n)
        body = body_of({"events": events})
        async with self.client.post("/v1/events", data=body, headers=signed(body)) as resp:
            answer = await resp.json()
            assert resp.status in (202, 503), answer
            (self.accepted if resp.status == 202 else self.shed).extend(ids)
            return resp.status, dict(resp.headers), answer

    async def post_until(self, status: int) -> tuple[dict[str, str], dict[str, Any]]:
        deadline = time.monotonic() + WAIT_S
        while True:
            got, headers, answer = await self.post()
            if got == status:
                return headers, answer
            assert time.monotonic() < deadline, f"still {got} after {WAIT_S} s: {answer}"
            await asyncio.sleep(POLL_S)

    async def frame(self, ws: ClientWebSocketResponse) -> dict[str, Any]:
        ids, events = self.events(2)
        await ws.send_str(body_of(events).decode())
        answer: dict[str, Any] = await ws.receive_json()
        (self.accepted if "ack" in answer else self.shed).extend(ids)
        assert answer.get("ack", answer.get("ids")) == [f"e{i}" for i in ids], answer
        return answer


async def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with client.get("/metrics") as resp:
        return _samples(await resp.text())


@pytest.fixture
def shards(ray_cluster: None, redis_server: RedisServer, namespace: str) -> Iterator[RallyClient]:
    """The deployment's shards, not started yet: the test starts them when it wants the
    pipeline to move."""
    settings = make_settings(namespace)
    cfg = msgspec.structs.replace(settings.runtime(redis_server.url), archive_path="",
                                  watch_clock_interval_s=0.0, streak_rollover=False)  # fmt: skip
    rally = RallyClient(cfg)
    yield rally
    rally.stop()


def test_a_lagging_pipeline_sheds_ingest_until_it_catches_up_and_credits_all_it_accepted(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = make_settings(namespace, max_lag_events=20, max_lag_s=0)
    shed_http = ("rally_gateway_shed_total", (("transport", "http"),))
    shed_ws = ("rally_gateway_shed_total", (("transport", "ws"),))

    async def go() -> Producer:
        loop = asyncio.get_running_loop()
        async with serve(settings, redis_server.url) as client:
            producer = Producer(client)
            ws = await ws_connect(client)
            assert "ack" in await producer.frame(ws)
            # no shard runs: what is accepted waits, until the lag passes max_lag_events
            headers, answer = await producer.post_until(503)
            assert headers["Retry-After"] == "1"
            assert answer["error"] == "overloaded"
            assert "max_lag_events" in answer["message"]
            assert len(producer.accepted) > 20
            frame = await producer.frame(ws)
            assert (frame["error"], frame["retry_after"]) == ("slow_down", 1)
            assert not ws.closed
            m = await _metrics(client)
            assert m[shed_http] >= 1
            assert m[shed_ws] == 1
            assert m[("rally_gateway_shedding", ())] == 1
            assert m[("rally_pipeline_lag_events", ())] > 20
            assert m[("rally_gateway_rejects_total", (("code", "slow_down"),))] == 1

            # the shards start, catch up, and ingest resumes on both transports
            await loop.run_in_executor(None, lambda: shards.start(scheduler=False))
            await producer.post_until(202)
            deadline = time.monotonic() + WAIT_S
            while "ack" not in await producer.frame(ws):
                assert time.monotonic() < deadline
                await asyncio.sleep(POLL_S)
            await ws.close()
            assert await loop.run_in_executor(None, shards.wait_idle, WAIT_S)
            deadline = time.monotonic() + WAIT_S
            while (m := await _metrics(client))[("rally_pipeline_lag_events", ())] > 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(POLL_S)
            assert m[("rally_gateway_shedding", ())] == 0
            return producer

    producer = asyncio.run(go())
    keys = Keys(namespace)
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.stats).items()}
    assert stats["events_in"] == len(producer.accepted)
    assert stats["events_applied"] == len(producer.accepted)
    assert stats.get("events_dup", 0) == 0

    def balances(ids: list[int]) -> list[int | None]:
        raw = redis_client.hmget(keys.mstate, [f"demo:u{i}" for i in ids])
        return [None if b is None else state_decoder.decode(b).balance for b in raw]

    assert all(b is not None and b > 0 for b in balances(producer.accepted))
    assert producer.shed
    assert balances(producer.shed) == [None] * len(producer.shed)


def test_a_pipeline_seconds_behind_sheds_too(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = make_settings(namespace, max_lag_events=0, max_lag_s=0.5)

    async def go() -> Producer:
        async with serve(settings, redis_server.url) as client:
            producer = Producer(client)
            # no shard runs: the first entry ages until it is older than max_lag_s
            headers, answer = await producer.post_until(503)
            assert headers["Retry-After"] == "1"
            assert "max_lag_s" in answer["message"]
            m = await _metrics(client)
            assert m[("rally_pipeline_lag_seconds", ())] > 0.5
            assert m[("rally_gateway_shed_total", (("transport", "http"),))] >= 1
            return producer

    producer = asyncio.run(go())
    assert producer.accepted
    events_in = int(redis_client.hget(Keys(namespace).stats, "events_in") or 0)
    assert events_in == len(producer.accepted)


def test_the_lag_probe_outlives_an_error_it_did_not_expect(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Admission's only eyes on the pipeline: an exception that is not Redis's (a cluster
    client's own, a bug) is logged once with its traceback, and the next probe measures."""
    from redis import asyncio as aioredis

    from gateway import admission
    from gateway.metrics import new_metrics

    calls: list[int] = []
    real = admission.measure_lag
    measured_again = asyncio.Event()

    async def flaky(*args: Any) -> admission.Lag:
        calls.append(1)
        if len(calls) >= 4:
            measured_again.set()
        if len(calls) <= 2:
            raise LookupError("not a Redis error")
        return await real(*args)

    monkeypatch.setattr(admission, "measure_lag", flaky)
    monkeypatch.setattr(admission, "LAG_PROBE_S", 0.01)

    async def run() -> admission.Lag:
        client = aioredis.Redis.from_url(redis_server.url)
        keys = Keys("probe-errors")
        adm = admission.Admission(
            client, keys, new_metrics(client, keys, 1, 1).metrics, channel_shards=1,
            member_shards=1, max_event_age_s=60, max_future_s=60, max_lag_events=10,
            max_lag_s=10,
        )  # fmt: skip
        adm.lag = admission.Lag(events=123)
        stop = asyncio.Event()
        task = asyncio.create_task(adm._probe(stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(measured_again.wait(), WAIT_S)
        stop.set()
        await task
        await client.aclose()
        return adm.lag

    lag = asyncio.run(run())
    assert len(calls) >= 4
    assert lag.events == 0  # measured again after the errors
    failed = [r for r in caplog.records if r.getMessage().startswith("pipeline_lag_probe_failed")]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
