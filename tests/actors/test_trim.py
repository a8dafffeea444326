"""Stream trimming: streams shrink to what no consumer has committed yet, a shard that was
down finds its whole backlog when it comes back, and the ledger log waits for the archive."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import ray
import redis

from actors.client import _OPTIONS, ChannelShardActor, MemberShardActor, RallyClient
from actors.config import RuntimeConfig
from actors.event_hooks import GROUP as WEBHOOKS_GROUP
from actors.keys import Keys
from actors.ledger_sink import archive_offset_field
from actors.scheduler import Scheduler
from actors.stream import ensure_group
from actors.trim import MARK_SPACING, trim_notices, trim_streams
from analytics.archive import LedgerArchive
from engine.member import state_decoder
from engine.reference import Reference
from engine.rules import RuleBook
from engine.streamid import stream_id
from gateway.audit import audit
from gateway.redis_server import running
from tests.actors.conftest import append, make_cfg
from tests.actors.test_crash import day_of_traffic


def committed(r: redis.Redis, keys: Keys, stream: str, field: str | None = None) -> bool:
    last = r.xinfo_stream(stream)["last-generated-id"]
    return r.hget(keys.offsets, field or stream) == last


def all_streams(keys: Keys, cfg: RuntimeConfig) -> list[str]:
    return [
        *(keys.ingest(p) for p in range(cfg.channel_shards)),
        *(keys.credits(m) for m in range(cfg.member_shards)),
        *(keys.ledgerlog(m) for m in range(cfg.member_shards)),
    ]


def poll(condition, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_trim_keeps_what_a_stopped_shard_has_not_committed(
    ray_cluster: None, redis_server, namespace: str, tmp_path: Path
) -> None:
    archive = LedgerArchive(tmp_path / "ledger.duckdb")
    cfg = make_cfg(redis_server.url, namespace, archive_path=str(archive.path))
    client = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    batches = day_of_traffic(n_batches=40, per_batch=100)
    try:
        for b in batches[:20]:
            append(r, cfg, b)
        assert client.wait_idle(120)
        trimmed = trim_streams(r, keys, cfg)
        assert sum(trimmed.values()) > 0
        assert {s: r.xlen(s) for s in all_streams(keys, cfg)} == dict.fromkeys(
            all_streams(keys, cfg), 0
        )
        # channel shard 0 and member shard 1 go down; the rest of the flow goes on
        down = (client.channel_shards[0], client.member_shards[1])
        pids = [ray.get(actor.pid.remote()) for actor in down]
        for actor in down:
            ray.kill(actor, no_restart=True)
        # ray.kill returns (and calls fail) before the process is gone: its loop may still
        # commit an entry. Wait until the processes are gone.
        poll(lambda: not any(running(pid) for pid in pids))
        for b in batches[20:]:
            append(r, cfg, b)
        up = [keys.ingest(1), keys.credits(0), keys.ledgerlog(0), keys.ledgerlog(1)]
        poll(lambda: all(committed(r, keys, s) for s in up))
        # the sink archives the ledger logs and lands the accepted events of the ingest logs
        archived = [up[0], *up[2:]]
        poll(lambda: all(committed(r, keys, s, archive_offset_field(s)) for s in archived))
        backlog = {s: r.xlen(s) for s in (keys.ingest(0), keys.credits(1))}
        assert all(backlog.values())
        trim_streams(r, keys, cfg)
        assert {s: r.xlen(s) for s in backlog} == backlog  # nothing uncommitted is dropped
        assert all(r.xlen(s) == 0 for s in up)
        # they come back and find everything they had not committed
        client.channel_shards[0] = ChannelShardActor.options(**_OPTIONS).remote(cfg, 0)
        client.member_shards[1] = MemberShardActor.options(**_OPTIONS).remote(cfg, 1)
        assert client.wait_idle(120)
        ref = Reference(RuleBook({}))
        for b in batches:
            ref.ingest(b, 0.0)
        ref.finish()
        for (network, uid), expected in ref.members.items():
            got = state_decoder.decode(r.hget(keys.mstate, f"{network}:{uid}"))
            assert (got.balance, got.entries) == (expected.balance, expected.entries), uid
        report = audit(r, keys, RuleBook({}), archive)
        assert report.ok, report.problems
        assert report.members == len(ref.members)
        # the scheduler's trim job does the same
        sched = Scheduler(cfg, start=False)
        now = time.time()
        sched.ensure_system_jobs(now)
        assert sched.run_due(now + cfg.trim_interval_s) >= 1
        assert all(r.xlen(s) == 0 for s in all_streams(keys, cfg))
        assert audit(r, keys, RuleBook({}), archive).ok
    finally:
        client.stop()


def test_the_ledger_log_is_kept_until_the_archive_has_it(
    ray_cluster: None, redis_server, namespace: str
) -> None:
    cfg = make_cfg(redis_server.url, namespace)  # no archive: no sink
    client = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    try:
        for b in day_of_traffic(n_batches=5, per_batch=100):
            append(r, cfg, b)
        assert client.wait_idle(60)
        logged = {keys.ledgerlog(m): r.xlen(keys.ledgerlog(m)) for m in range(cfg.member_shards)}
        assert all(logged.values())
        trim_streams(r, keys, cfg)
        assert {s: r.xlen(s) for s in logged} == logged  # no archive group: never trimmed
        assert r.xlen(keys.credits(0)) == 0
        # an archive group that has committed nothing holds everything back too
        stream = keys.ledgerlog(0)
        ensure_group(r, stream, "archive")
        trim_streams(r, keys, cfg)
        assert r.xlen(stream) == logged[stream]
        # so does a consumer group the trimmer does not know
        r.hset(keys.offsets, archive_offset_field(stream), "99999999999999-0")
        ensure_group(r, stream, "somebody-else")
        trim_streams(r, keys, cfg)
        assert r.xlen(stream) == logged[stream]
        assert audit(r, keys, RuleBook({})).ok
    finally:
        client.stop()


def test_trim_of_a_stream_that_does_not_exist_is_a_no_op(redis_server, namespace: str) -> None:
    cfg = msgspec.structs.replace(make_cfg(redis_server.url, namespace), channel_shards=1)
    assert trim_streams(redis.Redis.from_url(redis_server.url), Keys(namespace), cfg) == {}


def _add_notices(r: redis.Redis, stream: str, first: int, last: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(first, last + 1):
        pipe.xadd(stream, {"reward_earned": b"[]"}, id=f"{i}-0")
    pipe.execute()


def test_notices_are_trimmed_to_what_no_consumer_needs_and_the_feeds_backlog(
    redis_server, namespace: str
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    stream = keys.notices
    kept = 1_000

    def first() -> int:
        return stream_id(r.xrange(stream, count=1)[0][0])[0]

    _add_notices(r, stream, 1, 5_000)
    # a group that acknowledges: its oldest pending entry holds the rest back
    r.xgroup_create(stream, WEBHOOKS_GROUP, id="0")
    got = r.xreadgroup(WEBHOOKS_GROUP, "c", {stream: ">"}, count=4_500)[0][1]
    r.xack(stream, WEBHOOKS_GROUP, *[eid for eid, _ in got[:2_000]])
    # the sink's group: its committed offset
    r.xgroup_create(stream, "archive", id="0")
    r.hset(keys.offsets, archive_offset_field(stream), "3000-0")
    # the trimmer has not seen where the newest 1,000 begin yet: it notes where it stands
    assert trim_notices(r, keys, kept) == 0
    _add_notices(r, stream, 5_001, 6_000)
    # it stood at 5000: 5001 on stay for the feed; the webhooks' oldest pending is 2001
    assert trim_notices(r, keys, kept) == 2_000
    assert first() == 2_001
    r.xack(stream, WEBHOOKS_GROUP, *[eid for eid, _ in got[2_000:]])
    assert trim_notices(r, keys, kept) == 1_000  # now the archive's offset, 3000
    assert first() == 3_001
    r.hset(keys.offsets, archive_offset_field(stream), "6000-0")
    # the webhooks were delivered 4,500 and acknowledged them all: 4501 on are undelivered
    assert trim_notices(r, keys, kept) == 1_500
    assert first() == 4_501
    r.xreadgroup(WEBHOOKS_GROUP, "c", {stream: ">"})
    r.xack(stream, WEBHOOKS_GROUP, *[f"{i}-0" for i in range(4_501, 6_001)])
    # every group has everything: the feed's newest 1,000 stay
    assert trim_notices(r, keys, kept) == 500
    assert first() == 5_001
    assert r.xlen(stream) == kept
    # a group the trimmer does not know holds everything back
    _add_notices(r, stream, 6_001, 8_000)
    r.xgroup_create(stream, "somebody-else", id="0")
    assert trim_notices(r, keys, kept) == 0


def test_notices_without_consumer_groups_keep_the_feeds_backlog(
    redis_server, namespace: str
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    cfg = msgspec.structs.replace(make_cfg(redis_server.url, namespace), notices_kept=100)
    _add_notices(r, keys.notices, 1, 1_000)
    assert trim_streams(r, keys, cfg) == {}  # notes where the stream stands
    _add_notices(r, keys.notices, 1_001, 1_100)
    assert trim_streams(r, keys, cfg) == {keys.notices: 1_000}
    assert [stream_id(e)[0] for e, _ in r.xrange(keys.notices, count=1)] == [1_001]


def test_notices_trimmed_as_they_trickle_in_keep_the_backlog_and_few_marks(
    redis_server, namespace: str
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    kept = 160
    for i in range(1, 1_001):  # one notice between two runs of the trimmer
        r.xadd(keys.notices, {"tier": b"x"}, id=f"{i}-0")
        trim_notices(r, keys, kept)
        length = r.xlen(keys.notices)
        assert length == i if i <= kept else kept <= length <= kept + kept // MARK_SPACING
        assert r.llen(keys.notice_marks) <= MARK_SPACING + 2
