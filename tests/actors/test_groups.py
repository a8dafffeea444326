"""Large batches commit in bounded runs; a big watch tick arrives in chunks of credits."""

from __future__ import annotations

import threading

import redis

from actors.keys import Keys
from actors.lua import Commit
from actors.shards import CREDITS_PER_ENTRY, ChannelProgress, ChannelShard
from actors.stream import LINGER_BELOW_ITEMS, StreamShard, ensure_group
from engine.events import Online, Viewer, Viewers
from engine.member import Credit, state_decoder
from engine.routing import shard_of
from tests.actors.conftest import append, make_cfg

T0 = 1_795_000_000.0


def test_groups_split_by_item_count() -> None:
    shard = StreamShard.__new__(StreamShard)
    shard.max_items_per_commit = 10
    entries = [(b"1-%d" % i, {b"n": b"4"}) for i in range(5)] + [(b"2-0", {b"n": b"30"})]
    runs = shard.groups(entries)
    assert [len(r) for r in runs] == [2, 2, 1, 1]  # 4+4, 4+4, 4, then the 30-item entry alone
    assert [e for r in runs for e in r] == entries


def test_a_commits_watermark_goes_with_its_last_chunk_of_credits_only() -> None:
    """A member shard may commit a channel commit's chunks in separate runs: a watermark on
    an early chunk would make it take the credits of the later chunks for late."""
    shard = ChannelShard.__new__(ChannelShard)
    shard.cfg = make_cfg("redis://unused", "t", member_shards=2, channel_shards=1)
    shard.index, shard.keys = 0, Keys("t")
    shard.progress = ChannelProgress(newest=T0 + 10, watermark=T0 + 5)
    credits = [Credit(f"c{i}", "n", "ch", f"u{i}", "", T0, "watch", 1) for i in range(12_000)]
    c = Commit()
    shard._route(c, credits, [0] * len(credits), publish=True)
    for m in range(2):
        sent = [dict(zip(cmd[3::2], cmd[4::2], strict=True)) for cmd in c.cmds
                if cmd[0] == "XADD" and cmd[1] == shard.keys.credits(m)]  # fmt: skip
        assert len(sent) > 1  # chunked
        assert sum(f["n"] for f in sent) == sum(
            shard_of(f"n:{cr.user_id}", 2) == m for cr in credits
        )
        assert ["w" in f for f in sent] == [False] * (len(sent) - 1) + [True]
        assert sent[-1]["w"] == repr(T0 + 5)


def test_a_big_watch_tick_is_chunked_and_paid_once(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    n = 3 * CREDITS_PER_ENTRY
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
    assert r.hget(keys.stats, "credits_late") is None
    paid = [
        state_decoder.decode(b) for b in r.hmget(keys.mstate, [f"n:v{i}" for i in range(0, n, 997)])
    ]
    assert all(s is not None and s.entries == 3 for s in paid)  # welcome, streak, one watch tick
    assert int(r.hget(keys.stats, "entries_projected")) == 3 * n


def test_a_small_batch_from_a_drained_stream_waits_for_more(redis_server, namespace) -> None:
    """read_linger_ms: a read that drained the stream with fewer than LINGER_BELOW_ITEMS
    items waits and takes what came meanwhile; a big batch, or a full read, goes at once."""
    r = redis.Redis.from_url(redis_server.url)
    shard = StreamShard.__new__(StreamShard)
    shard.cfg = make_cfg(redis_server.url, namespace, read_count=3, linger_ms=1.0)
    shard.r, shard.stream, shard.group, shard.consumer = r, f"{namespace}:linger", "g", "c"
    shard.stopping = threading.Event()
    ensure_group(r, shard.stream, "g")

    def read() -> list:
        got = r.xreadgroup("g", "c", {shard.stream: ">"}, count=shard.cfg.read_count)
        return got[0][1] if got else []

    r.xadd(shard.stream, {"n": 1})
    first = read()
    r.xadd(shard.stream, {"n": 1})  # arrives while the shard lingers
    assert [f for _, f in shard._linger(first)] == [{b"n": b"1"}, {b"n": b"1"}]
    r.xadd(shard.stream, {"n": LINGER_BELOW_ITEMS})
    big = read()
    r.xadd(shard.stream, {"n": 1})
    assert shard._linger(big) == big  # enough items: applied at once
    full = [*read(), (b"0-1", {}), (b"0-2", {})]  # a read of read_count entries
    assert shard._linger(full) == full
