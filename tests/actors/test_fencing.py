"""Fencing with a stale epoch: once a newer instance of a shard has started (its epoch key
moved on), the old instance's commits are refused, it stops, and it writes no state."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from actors import health
from actors.keys import Keys
from actors.shards import ChannelShard
from actors.stream import Fenced
from engine.events import Chat, Online
from tests.actors.conftest import append, make_cfg

T0 = 1_795_000_000.0


def poll(cond: Callable[[], object], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_stale_instance_is_fenced_and_writes_nothing(redis_server, namespace: str) -> None:
    r = redis.Redis.from_url(redis_server.url)
    cfg = make_cfg(redis_server.url, namespace, channel_shards=1, member_shards=1)
    keys = Keys(namespace)
    stream = keys.ingest(0)
    old = ChannelShard(cfg, 0)
    try:
        append(r, cfg, [Online(id="on-a", network="n", channel="a", ts=T0)])
        poll(lambda: r.hget(keys.offsets, stream) is not None)
        committed = r.hget(keys.offsets, stream)
        credits = r.xlen(keys.credits(0))
        assert old.epoch == int(r.get(old.epoch_key))

        r.incr(old.epoch_key)  # what a newer instance does when it starts
        append(r, cfg, [Chat(id="c-b", network="n", channel="b", user_id="u", ts=T0 + 1)])
        poll(lambda: not old.thread.is_alive())  # its next commit or heartbeat is refused

        assert r.hget(keys.offsets, stream) == committed
        assert r.hget(keys.cstate, "n:b") is None
        assert r.xlen(keys.credits(0)) == credits
        [group] = r.xinfo_groups(stream)
        assert group["pending"] + group["lag"] == 1  # the entry is still there to apply
        hb = health.heartbeat_decoder.decode(r.hget(health.health_key(keys), "channel-0"))
        assert (hb.state, hb.epoch) == ("fenced", old.epoch)

        # the commit itself is refused, however it is reached
        entries = r.xrange(stream, "(" + committed.decode(), "+")
        with pytest.raises(Fenced):
            old.process(entries)
        assert r.hget(keys.offsets, stream) == committed
        assert r.hget(keys.cstate, "n:b") is None

        # the report says fenced; past the grace period the deployment is not ready
        report = health.read_health(r, keys, ["channel-0"], now=hb.since + 1)
        assert report.shards[0].fenced
        assert report.ready
        late = health.read_health(r, keys, ["channel-0"], now=hb.since + 60)
        assert not late.ready
        assert "channel-0 is fenced" in late.problems[0]
    finally:
        old.stop()

    new = ChannelShard(cfg, 0)  # the newer instance applies what the old one left
    try:
        assert new.epoch == old.epoch + 2
        poll(lambda: r.hget(keys.offsets, stream) != committed)
        poll(lambda: health.read_health(r, keys, ["channel-0"]).shards[0].state == "running")
        assert health.read_health(r, keys, ["channel-0"]).shards[0].starts == new.epoch
    finally:
        new.stop()
