"""Dead letters with the shards in this process (real Redis): a poison entry in the middle
of a big batch is bisected out (everything around it applies); its failure count survives a
restart; an entry that failed for an outside reason is credited after `rally deadletter
retry`; and after DEAD_LETTER_STREAK_MAX dead letters in a row a shard blocks instead."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from actors import health
from actors.client import wait_idle
from actors.config import RuntimeConfig
from actors.deadletter import iter_dead_letters
from actors.keys import Keys
from actors.shards import ChannelShard, LedgerProjector, MemberShard
from actors.stream import DEAD_LETTER_STREAK_MAX, Entry, StreamShard
from engine.events import Chat, encode_events
from gateway.cli import main
from tests.actors.conftest import assert_credited, make_cfg

T0 = 1_795_000_000.0
POISON = b"\xc1 not msgpack"


def poll(cond: Callable[[], object], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def chat(i: int) -> Chat:
    return Chat(id=f"e{i}", network="n", channel="c", user_id=f"u{i}", ts=T0 + i)


def test_poison_in_a_big_batch_is_bisected_out(redis_server, namespace: str) -> None:
    r = redis.Redis.from_url(redis_server.url)
    cfg = make_cfg(redis_server.url, namespace, channel_shards=1, member_shards=1)
    keys = Keys(namespace)
    stream = keys.ingest(0)
    ids = []
    for i in range(64):  # written before the shard starts: it reads them as one batch
        fields = {"e": POISON} if i == 37 else {"e": encode_events([chat(i)])}
        ids.append(r.xadd(stream, fields))
    shard = ChannelShard(cfg, 0)
    try:
        poll(lambda: r.hget(keys.offsets, stream) == ids[-1])
        poll(lambda: shard.dead_letters == 1)
        assert int(r.hget(keys.stats, "events_applied")) == 63
        [dl] = list(iter_dead_letters(r, keys))
        assert dl.entry_id == ids[37].decode()
        assert dl.failures == cfg.max_entry_failures
        assert dl.fields == {b"e": POISON}
        # one failed batch, then a bisection: a handful of commits, not one per entry
        assert shard.batches < 16
        group = r.xinfo_groups(stream)[0]
        assert (group["pending"], group["lag"]) == (0, 0)
    finally:
        shard.stop()


def test_failure_count_survives_a_restart(redis_server, namespace: str) -> None:
    r = redis.Redis.from_url(redis_server.url)
    cfg = make_cfg(redis_server.url, namespace, channel_shards=1, member_shards=1)
    keys = Keys(namespace)
    stream = keys.ingest(0)
    eid = r.xadd(stream, {"e": POISON})
    # an earlier instance already saw it fail all but once
    r.hset(health.failures_key(keys), f"{stream}/{eid.decode()}", cfg.max_entry_failures - 1)
    shard = ChannelShard(cfg, 0)
    try:
        poll(lambda: r.hget(keys.offsets, stream) == eid)
        [dl] = list(iter_dead_letters(r, keys))
        assert dl.failures == cfg.max_entry_failures
        assert shard.errors == 1  # dead-lettered at its first failure in this instance
        assert not r.exists(health.failures_key(keys))
    finally:
        shard.stop()


FLAG = "flaky-channel-down"


class FlakyChannelShard(ChannelShard):
    """Fails any batch holding an event of channel "flaky" while the key FLAG exists: a
    stand-in for any outside condition an entry depends on."""

    def process(self, entries: Sequence[Entry]) -> None:
        if self.r.exists(self.keys.k(FLAG)) and any(
            b"flaky" in fields.get(b"e", b"") for _, fields in entries
        ):
            raise RuntimeError("the flaky channel is down")
        super().process(entries)


@pytest.fixture
def pipeline(redis_server, namespace: str, tmp_path: Path) -> Iterator[tuple[RuntimeConfig, Path]]:
    """A flaky channel shard, a member shard and a projector, one partition each, and a
    config file for the CLI."""
    cfg = make_cfg(
        redis_server.url, namespace, channel_shards=1, member_shards=1, max_entry_failures=2
    )
    config = tmp_path / "rally.toml"
    config.write_text(
        f'namespace = "{namespace}"\ndata_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'
        "[shards]\nchannel = 1\nmember = 1\n"
    )
    shards: list[StreamShard] = [FlakyChannelShard(cfg, 0), MemberShard(cfg, 0)]
    shards.append(LedgerProjector(cfg, 0))
    yield cfg, config
    for shard in shards:
        shard.stop()


def flaky(i: int) -> Chat:
    return Chat(id=f"f{i}", network="n", channel="flaky", user_id=f"fu{i}", ts=T0 + i)


def test_transient_failure_is_credited_after_retry(
    pipeline: tuple[RuntimeConfig, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, config = pipeline
    r = redis.Redis.from_url(cfg.redis_url)
    keys = Keys(cfg.namespace)
    r.set(keys.k(FLAG), 1)
    good = [chat(i) for i in range(6)]
    r.xadd(keys.ingest(0), {"e": encode_events(good[:3])})
    r.xadd(keys.ingest(0), {"e": encode_events([flaky(0), flaky(1)])})
    r.xadd(keys.ingest(0), {"e": encode_events(good[3:])})
    assert wait_idle(r, keys, cfg, 60)
    assert_credited(r, keys, good)
    [dl] = list(iter_dead_letters(r, keys))
    assert "the flaky channel is down" in dl.error
    assert r.hget(keys.mstate, "n:fu0") is None

    r.delete(keys.k(FLAG))  # fixed
    assert main(["deadletter", "retry", "--all", "--config", str(config)]) == 0
    assert "retried 1 dead letter" in capsys.readouterr().out
    assert wait_idle(r, keys, cfg, 60)
    assert_credited(r, keys, [*good, flaky(0), flaky(1)])
    assert list(iter_dead_letters(r, keys)) == []
    assert not r.exists(health.deadletter_count_key(keys))


def test_a_streak_of_dead_letters_blocks_the_shard(
    pipeline: tuple[RuntimeConfig, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """When entry after entry fails, the fault is not in the entries: after
    DEAD_LETTER_STREAK_MAX dead letters in a row the shard stops moving them aside, retries
    the next one until it applies, and says it is blocked (not ready)."""
    cfg, config = pipeline
    r = redis.Redis.from_url(cfg.redis_url)
    keys = Keys(cfg.namespace)
    r.set(keys.k(FLAG), 1)
    events = [flaky(i) for i in range(DEAD_LETTER_STREAK_MAX + 2)]
    for ev in events:
        r.xadd(keys.ingest(0), {"e": encode_events([ev])})
    shards = ["channel-0", "member-0", "ledger-0"]

    def channel0() -> health.ShardHealth:
        return health.read_health(r, keys, shards).shards[0]

    poll(lambda: channel0().state == "blocked")
    assert len(list(iter_dead_letters(r, keys))) == DEAD_LETTER_STREAK_MAX
    report = health.read_health(r, keys, shards)
    assert not report.ready
    assert "channel-0 is blocked" in report.problems[0]
    assert main(["status", "--config", str(config)]) == 1
    assert "blocked" in capsys.readouterr().out

    r.delete(keys.k(FLAG))  # fixed: the blocked entry applies, the shard runs again
    assert wait_idle(r, keys, cfg, 60)
    assert_credited(r, keys, events[DEAD_LETTER_STREAK_MAX:])
    poll(lambda: channel0().state == "running")
    assert main(["deadletter", "retry", "--all", "--config", str(config)]) == 0
    assert wait_idle(r, keys, cfg, 60)
    assert_credited(r, keys, events)
    assert int(r.hget(keys.stats, "dead_letters")) == DEAD_LETTER_STREAK_MAX


def test_a_projector_lowers_its_loop_threads_priority_only(redis_server, namespace: str) -> None:
    """The ledger projector gives way to the shards (nice 5) in its loop thread; the thread
    that built it, here pytest's, keeps its priority."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    projector = LedgerProjector(make_cfg(redis_server.url, namespace), 0)
    try:
        deadline = time.monotonic() + 10
        want = min(before + LedgerProjector.nice, 19)  # 19: the lowest priority there is
        while os.getpriority(os.PRIO_PROCESS, projector.thread.native_id or 0) != want:
            assert time.monotonic() < deadline, "the loop thread was not reniced"
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, 0) == before
    finally:
        projector.stop()
