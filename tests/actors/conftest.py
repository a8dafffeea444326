from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import pytest
import redis

from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from benchmarks.stages import no_threads
from engine.events import Event, encode_events
from engine.member import Credit, state_decoder
from engine.reference import Reference
from engine.rules import RuleBook
from gateway.ingest import split_by_partition

T0 = 1_795_000_000.0
_enc = msgspec.msgpack.Encoder()


def append(r: redis.Redis, cfg: RuntimeConfig, events: list[Event]) -> None:
    """What the gateway does with an accepted batch: one entry per channel partition."""
    keys = Keys(cfg.namespace)
    with r.pipeline(transaction=True) as pipe:
        for p, part in split_by_partition(events, cfg.channel_shards).items():
            pipe.xadd(keys.ingest(p), {"e": encode_events(part)})
        pipe.execute()


def assert_credited(r: redis.Redis, keys: Keys, events: list[Event]) -> None:
    """Every member of `events` has the balance the model gives them."""
    ref = Reference(RuleBook({}))
    ref.ingest(events, 0.0)
    for (network, uid), expected in ref.members.items():
        raw = r.hget(keys.mstate, f"{network}:{uid}")
        assert raw is not None, f"{uid} never credited"
        assert state_decoder.decode(raw).balance == expected.balance, uid


def make_cfg(
    redis_url: str, namespace: str, book: RuleBook | None = None, **kw: object
) -> RuntimeConfig:
    kw.setdefault("watch_clock_interval_s", 0.0)
    kw.setdefault("streak_rollover", False)
    return RuntimeConfig(
        redis_url=redis_url,
        namespace=namespace,
        rules=(book or RuleBook({})).to_builtins(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def rally(
    ray_cluster: None, redis_server, namespace: str
) -> Iterator[tuple[RallyClient, RuntimeConfig]]:
    cfg = make_cfg(redis_server.url, namespace)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg
    client.stop()


@contextmanager
def without_threads(redis_url: str, namespace: str, **kw: object) -> Iterator[RuntimeConfig]:
    """Shards made inside start no loop thread: the test drives them (`step`), so which
    batch holds what is fixed, not left to timing."""
    with no_threads():
        yield make_cfg(redis_url, namespace, channel_shards=1, **kw)


def send(r: redis.Redis, keys: Keys, m: int, credits: list[Credit], watermark: float) -> None:
    """What channel partition 0 sends member shard m: credits and its watermark."""
    r.xadd(keys.credits(m), {"n": len(credits), "p": 0, "w": repr(watermark),
                             "c": _enc.encode(credits), "a": _enc.encode([0] * len(credits))})  # fmt: skip
