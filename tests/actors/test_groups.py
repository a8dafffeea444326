"""Large batches commit in bounded runs; a big watch tick arrives in chunks of credits."""

from __future__ import annotations

import redis

from actors.keys import Keys
from actors.shards import CREDITS_PER_ENTRY
from actors.stream import StreamShard
from engine.events import Online, Viewer, Viewers
from engine.member import state_decoder
from tests.actors.conftest import append


def test_groups_split_by_item_count() -> None:
    shard = StreamShard.__new__(StreamShard)
    shard.max_items_per_commit = 10
    entries = [(b"1-%d" % i, {b"n": b"4"}) for i in range(5)] + [(b"2-0", {b"n": b"30"})]
    runs = shard.groups(entries)
    assert [len(r) for r in runs] == [2, 2, 1, 1]  # 4+4, 4+4, 4, then the 30-item entry alone
    assert [e for r in runs for e in r] == entries


def test_a_big_watch_tick_is_chunked_and_paid_once(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    n = 6 * CREDITS_PER_ENTRY  # more than one member shard commits at once (ITEMS_PER_COMMIT)
    t0 = 1_795_000_200.0
    viewers = [Viewer(id=f"v{i}") for i in range(n)]
    append(r, cfg, [Online(id="on", network="n", channel="big", ts=t0),
                    Viewers(id="snap", network="n", channel="big", ts=t0 + 1, viewers=viewers)])  # fmt: skip
    append(r, cfg, [Online(id="tick", network="n", channel="big", ts=t0 + 300)])
    assert client.wait_idle(120)
    sizes = [int(f[b"n"]) for m in range(cfg.member_shards) for _, f in r.xrange(keys.credits(m))]
    assert sum(sizes) == n
    assert max(sizes) <= CREDITS_PER_ENTRY
    assert len(sizes) > cfg.member_shards  # really chunked
    # the tick's chunks for a member shard carry the channel's watermark on the last only:
    # a member shard that commits them in two runs takes none of them for late
    assert r.hget(keys.stats, "credits_late") is None
    paid = [
        state_decoder.decode(b) for b in r.hmget(keys.mstate, [f"n:v{i}" for i in range(0, n, 997)])
    ]
    assert all(s is not None and s.entries == 3 for s in paid)  # welcome, streak, one watch tick
    assert int(r.hget(keys.stats, "entries_projected")) == 3 * n
