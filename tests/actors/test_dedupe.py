"""Dedupe on real Redis and Ray: duplicates are dropped exactly once through kill -9 of the
channel shard, whatever minute a retry is dated in, and ids are forgotten (memory freed)
once the window has passed."""

from __future__ import annotations

import threading
import time

import redis

from actors.client import RallyClient
from actors.keys import Keys
from actors.lua import Commit, CommitCall, NativeCommit
from engine.dedupe import bucket_of
from engine.events import Chat, Event, Online
from engine.member import state_decoder
from engine.reference import Reference
from engine.routing import shard_of
from engine.rules import RuleBook
from tests.actors.conftest import append, make_cfg

T0 = 1_795_000_020.0  # a minute boundary


def stats(r: redis.Redis, keys: Keys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}


def traffic(n_batches: int, per_batch: int, channels: int = 4) -> list[list[Event]]:
    """Chats 0.5 s apart in event time (about 50 minutes: inside the default window)."""
    batches: list[list[Event]] = [
        [Online(id=f"on{c}", network="n", channel=f"c{c}", ts=T0) for c in range(channels)]
    ]
    seq = 0
    for _ in range(n_batches):
        batch: list[Event] = []
        for _i in range(per_batch):
            ch, user = f"c{seq % channels}", f"u{seq % 200}"
            batch.append(Chat(id=f"e{seq}", network="n", channel=ch, user_id=user, ts=T0 + seq / 2))
            seq += 1
        batches.append(batch)
    return batches


def test_duplicates_are_dropped_once_through_kill9_of_a_channel_shard(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    batches = traffic(n_batches=60, per_batch=100)
    unique = sum(map(len, batches))
    sent = 0

    def load() -> None:  # every batch, then the one sent five before it again
        nonlocal sent
        for k, b in enumerate(batches):
            append(r, cfg, b)
            sent += len(b)
            if k >= 5:
                append(r, cfg, batches[k - 5])
                sent += len(batches[k - 5])
            time.sleep(0.01)

    feeder = threading.Thread(target=load)
    feeder.start()
    time.sleep(0.3)
    old_pid = client.kill9("channel-0")  # under load: some commits never land
    feeder.join()
    assert client.wait_idle(120), "backlog never drained after the restart"
    assert client.pids()["channel-0"] != old_pid, "Ray did not restart the shard"

    # an idle restart: the new instance knows the ids only from what Redis holds
    client.kill9("channel-1")
    for b in batches:
        append(r, cfg, b)
        sent += len(b)
    assert client.wait_idle(120), "the resent batches never drained"

    got = stats(r, keys)
    assert got["events_applied"] == unique
    assert got["events_dup"] == sent - unique
    assert got.get("events_expired", 0) == 0
    ref = Reference(RuleBook({}))
    for b in batches:
        ref.ingest(b, 0.0)
    ref.finish()
    for (network, uid), expected in ref.members.items():
        state = state_decoder.decode(r.hget(keys.mstate, f"{network}:{uid}"))
        assert (state.balance, state.entries) == (expected.balance, expected.entries), uid
    stored = sum(int(n) for p in range(cfg.channel_shards)
                 for n in r.hvals(keys.seen_index(p)))  # fmt: skip
    assert stored == unique  # each id once, whatever was delivered twice or replayed


def test_a_retry_re_stamped_in_another_minute_is_a_duplicate_through_kill9(
    rally, redis_server
) -> None:
    """A producer that re-stamps ts on retry: the copy lands in another minute and is still
    a duplicate, also for a channel shard restarted by kill -9 (which must load every
    bucket of its window, not only those of the batch's minutes)."""
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    p = shard_of("n:c", cfg.channel_shards)
    online = Online(id="on", network="n", channel="c", ts=T0)

    def chat(ts: float) -> Chat:
        return Chat(id="x", network="n", channel="c", user_id="u", ts=ts)

    def send(*events: Event) -> dict[str, int]:
        append(r, cfg, list(events))
        assert client.wait_idle(60)
        return stats(r, keys)

    first = send(online, chat(T0 + 1))
    assert first["events_applied"] == 2
    assert send(chat(T0 + 301))["events_dup"] == 1  # five minutes later
    old_pid = client.kill9(f"channel-{p}")
    # after the restart: half an hour later (a minute never stored) and a minute earlier
    again = send(chat(T0 + 1_801), chat(T0 - 60))
    assert client.pids()[f"channel-{p}"] != old_pid, "Ray did not restart the shard"
    assert again["events_dup"] == 3
    assert again["events_applied"] == 2
    assert again.get("events_expired", 0) == 0
    stored = {int(b): int(n) for b, n in r.hgetall(keys.seen_index(p)).items()}
    assert stored == {bucket_of(T0): 2}  # the duplicates are not stored
    ref = Reference(RuleBook({}))
    ref.ingest([online, chat(T0 + 1)], 0.0)
    ref.finish()
    expected = ref.members["n", "u"]
    state = state_decoder.decode(r.hget(keys.mstate, "n:u"))
    assert (state.balance, state.entries) == (expected.balance, expected.entries)


def test_ids_are_forgotten_after_the_window(ray_cluster, redis_server, namespace) -> None:
    cfg = make_cfg(redis_server.url, namespace, max_event_age_s=60.0, max_future_s=0.0,
                   dedupe_window_s=120.0)  # fmt: skip
    client = RallyClient(cfg).start(scheduler=False)
    try:
        r = redis.Redis.from_url(redis_server.url)
        keys = Keys(cfg.namespace)
        p = shard_of("n:c", cfg.channel_shards)

        def chat(i: str, ts: float) -> Chat:
            return Chat(id=i, network="n", channel="c", user_id="u", ts=ts)

        def send(*events: Event) -> dict[str, int]:
            append(r, cfg, list(events))
            assert client.wait_idle(60)
            return stats(r, keys)

        b0 = bucket_of(T0)
        first = send(Online(id="on", network="n", channel="c", ts=T0), chat("a", T0 + 1))
        assert r.hget(keys.seen_index(p), b0) == b"2"
        assert r.strlen(keys.seen(p, b0, 0)) == 16  # two 8-byte hashes
        assert send(chat("a", T0 + 1))["events_dup"] == 1
        # event time passes the window after minute b0 (ends at T0 + 60): it is forgotten
        send(chat("b", T0 + 60 + 120))
        assert r.hget(keys.seen_index(p), b0) is None
        assert not r.exists(keys.seen(p, b0, 0))
        after = send(chat("a", T0 + 1))  # too old to be told from a duplicate: expired
        assert after["events_expired"] == 1
        assert after["events_applied"] == first["events_applied"] + 1  # only "b"
        assert [int(b) for b in r.hkeys(keys.seen_index(p))] == [bucket_of(T0 + 180)]

        client.kill9(f"channel-{p}")  # a new instance reloads the window from Redis
        again = send(chat("b", T0 + 180), chat("c", T0 + 181))
        assert again["events_dup"] == 2
        assert again["events_applied"] == after["events_applied"] + 1
    finally:
        client.stop()


def test_seal_rewrites_a_string_at_its_exact_size(redis_client, namespace) -> None:
    """APPEND leaves up to as much again allocated; SEAL (in a commit) gives it back and
    keeps the value and its TTL."""
    r, key = redis_client, f"{namespace}:s"
    for i in range(200):
        r.append(key, bytes([i]) * 800)
    r.expire(key, 1_000)
    grown = r.memory_usage(key, samples=0)
    c = Commit()
    c.cmd("SEAL", key)
    epoch = f"{namespace}:epoch"
    r.set(epoch, 1)
    args = CommitCall(c, epoch, 1, f"{namespace}:in", "g", f"{namespace}:offsets", b"1-1", [b"1-1"])
    assert NativeCommit(r)(args=args) == 1
    assert r.get(key) == b"".join(bytes([i]) * 800 for i in range(200))
    assert 0 < r.ttl(key) <= 1_000
    assert r.memory_usage(key, samples=0) < min(grown, 160_000 * 1.1)
