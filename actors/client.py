"""The one facade the edge uses to run and observe the actors.

`RallyClient.start()` creates the shard actors (one Ray actor process per shard, each
hosting many virtual channel or member actors) and the scheduler. Ray restarts a shard
whose process dies; the new instance takes a new fencing epoch and resumes from its
committed offset.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any

import ray
import redis
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.ledger_sink import LedgerSink
from actors.payout import PayoutService
from actors.raffle import RaffleShard
from actors.redisconn import connect
from actors.scheduler import Scheduler
from actors.shards import ChannelShard, LedgerProjector, MemberShard, channel_progress_decoder
from engine.reference import FLUSH_MARGIN_S
from engine.streamid import stream_id
from engine.watermark import NEVER

_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,
    "max_task_retries": -1,
    "max_concurrency": 4,
}
_SHARD = {**_OPTIONS, "scheduling_strategy": "SPREAD"}
"""Channel and member shards and ledger projectors hold nothing but Redis connections: on a
multi-node Ray cluster they spread over the nodes."""


def _here() -> dict[str, Any]:
    """The options of an actor that reads or writes files under data_dir (the ledger
    archive, snapshots, payout and raffle records): on the node of this process."""
    node = ray.get_runtime_context().get_node_id()
    return {**_OPTIONS, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


ChannelShardActor = ray.remote(ChannelShard)
MemberShardActor = ray.remote(MemberShard)
SchedulerActor = ray.remote(Scheduler)
LedgerProjectorActor = ray.remote(LedgerProjector)
LedgerSinkActor = ray.remote(LedgerSink)
RaffleActor = ray.remote(RaffleShard)
PayoutActor = ray.remote(PayoutService)


def streams(keys: Keys, cfg: RuntimeConfig) -> list[str]:
    """Every stream of the data flow, in flow order."""
    return (
        [keys.ingest(p) for p in range(cfg.channel_shards)]
        + [keys.credits(m) for m in range(cfg.member_shards)]
        + [keys.ledgerlog(m) for m in range(cfg.member_shards)]
    )


def backlog(r: redis.Redis, keys: Keys, cfg: RuntimeConfig) -> int:
    """Entries appended but not yet applied and acknowledged, over every stream."""
    total = 0
    for stream in streams(keys, cfg):
        if not r.exists(stream):
            continue
        last = r.xinfo_stream(stream)["last-generated-id"]
        for g in r.xinfo_groups(stream):
            total += int(g["pending"])
            lag = g.get("lag")
            if lag is None:
                lag = 0 if stream_id(g["last-delivered-id"]) >= stream_id(last) else 1
            total += int(lag)
    return total


def held(r: redis.Redis, keys: Keys, cfg: RuntimeConfig) -> int:
    """Pending-log entries: what shards still hold back until their watermark passes it."""
    pipe = r.pipeline(transaction=False)
    for p in range(cfg.channel_shards):
        pipe.xlen(keys.pending("channel", p))
    for m in range(cfg.member_shards):
        pipe.xlen(keys.pending("member", m))
    return sum(pipe.execute())


def flush(r: redis.Redis, keys: Keys, cfg: RuntimeConfig) -> float | None:
    """Move every partition's watermark past the newest time any of them has seen (and
    past every watermark, where late events wait), so everything held back is applied. Only what was appended before this is covered. The
    flush entry sets the watermark without counting as a time seen: flushing again does not
    push event time further ahead of the wall clock. Returns the new watermark, if any."""
    raw = r.hmget(keys.wmark, [f"channel:{p}" for p in range(cfg.channel_shards)])
    progress = [channel_progress_decoder.decode(b) for b in raw if b]
    # late events wait at the watermark they were retimed to: pass that too
    newest = max((t for p in progress for t in (p.newest, p.watermark)), default=NEVER)
    if newest == NEVER:
        return None
    mark = newest + FLUSH_MARGIN_S
    with r.pipeline(transaction=True) as pipe:
        for p in range(cfg.channel_shards):
            pipe.xadd(keys.ingest(p), {"flush": repr(mark)})
        pipe.execute()
    return mark


def wait_idle(
    r: redis.Redis,
    keys: Keys,
    cfg: RuntimeConfig,
    timeout_s: float,
    poll_s: float = 0.05,
    *,
    flush_held: bool = True,
) -> bool:
    """Wait until every appended entry has been applied and nothing is held back (flushing
    the watermark once the logs are drained, unless `flush_held` is False: a stopped
    deployment is only looked at); False on timeout. A flush covers only what was appended
    before it: when something is still held REFLUSH_S after one (an entry that arrived just
    after it, say a chat line a connector appended after answering it), it flushes again."""
    deadline = time.monotonic() + timeout_s
    flushed_at = -math.inf
    while True:
        if backlog(r, keys, cfg) == 0:
            if held(r, keys, cfg) == 0:
                return True
            now = time.monotonic()
            if flush_held and now - flushed_at >= REFLUSH_S:
                if flush(r, keys, cfg) is not None:
                    flushed_at = now
                continue
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


REFLUSH_S = 1.0
"""How long wait_idle lets a flush take effect before it flushes again."""


class RallyClient:
    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        self.keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.r = connect(cfg.redis_url)
        self.channel_shards: list[Any] = []
        self.member_shards: list[Any] = []
        self.projectors: list[Any] = []
        self.scheduler: Any = None
        self.sink: Any = None
        self.raffle: Any = None
        self.payouts: Any = None

    def start(self, *, scheduler: bool = True) -> RallyClient:
        ns = self.cfg.namespace
        self.member_shards = [
            MemberShardActor.options(name=f"{ns}-member-{i}", **_SHARD).remote(self.cfg, i)
            for i in range(self.cfg.member_shards)
        ]
        self.projectors = [
            LedgerProjectorActor.options(name=f"{ns}-ledger-{i}", **_SHARD).remote(self.cfg, i)
            for i in range(self.cfg.member_shards)
        ]
        self.channel_shards = [
            ChannelShardActor.options(name=f"{ns}-channel-{i}", **_SHARD).remote(self.cfg, i)
            for i in range(self.cfg.channel_shards)
        ]
        here = _here()
        self.raffle = RaffleActor.options(name=f"{ns}-raffle", **here).remote(self.cfg, 0)
        if self.cfg.archive_path:
            self.sink = LedgerSinkActor.options(name=f"{ns}-archive", **here).remote(self.cfg)
        if self.cfg.payouts is not None and self.cfg.payouts.enabled:
            self.payouts = PayoutActor.options(name=f"{ns}-payouts", **here).remote(self.cfg)
        if scheduler:
            self.scheduler = SchedulerActor.options(name=f"{ns}-scheduler", **here).remote(self.cfg)
            ray.get(self.scheduler.ensure_system_jobs.remote(time.time()))
        ray.get([a.ping.remote() for a in self.actors()])
        return self

    def actors(self) -> list[Any]:
        extra = [a for a in (self.raffle, self.sink, self.scheduler, self.payouts) if a is not None]
        return [*self.channel_shards, *self.member_shards, *self.projectors, *extra]

    def pids(self) -> dict[str, int]:
        out = {f"channel-{i}": ray.get(a.pid.remote()) for i, a in enumerate(self.channel_shards)}
        out |= {f"member-{i}": ray.get(a.pid.remote()) for i, a in enumerate(self.member_shards)}
        out |= {f"ledger-{i}": ray.get(a.pid.remote()) for i, a in enumerate(self.projectors)}
        if self.raffle is not None:
            out["raffle"] = ray.get(self.raffle.pid.remote())
        if self.sink is not None:
            out["archive"] = ray.get(self.sink.pid.remote())
        if self.scheduler is not None:
            out["scheduler"] = ray.get(self.scheduler.pid.remote())
        if self.payouts is not None:
            out["payouts"] = ray.get(self.payouts.pid.remote())
        return out

    def kill9(self, name: str) -> int:
        """kill -9 one shard process (e.g. "member-0"), as a crash would; Ray restarts it."""
        pid = self.pids()[name]
        os.kill(pid, signal.SIGKILL)
        return pid

    def info(self) -> list[dict[str, Any]]:
        shards = [*self.channel_shards, *self.member_shards, *self.projectors]
        return list(ray.get([a.info.remote() for a in shards]))

    def backlog(self) -> int:
        return backlog(self.r, self.keys, self.cfg)

    def wait_idle(self, timeout_s: float = 60.0, poll_s: float = 0.05) -> bool:
        return wait_idle(self.r, self.keys, self.cfg, timeout_s, poll_s)

    def stop(self) -> None:
        if self.sink is not None:  # let it commit what it read: the archive file closes cleanly
            try:
                ray.get(self.sink.stop.remote(), timeout=30)
            except Exception:  # already gone
                pass
        killed = self.actors()
        for a in killed:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        _wait_dead(killed)
        self.channel_shards, self.member_shards, self.projectors = [], [], []
        self.scheduler = None
        self.sink = None
        self.raffle = None
        self.payouts = None


def _wait_dead(actors: list[Any], timeout_s: float = 30.0) -> None:
    """`ray.kill` only asks: wait until each actor is gone (a call on it fails), so a caller
    that stopped the shards knows none of them still answers."""
    deadline = time.monotonic() + timeout_s
    for a in actors:
        while time.monotonic() < deadline:
            try:
                probe = a.__ray_ready__.options(max_task_retries=0)  # no retry (nor its log line)
                ray.get(probe.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                continue
            except Exception:  # RayActorError: dead
                break
            time.sleep(0.05)
