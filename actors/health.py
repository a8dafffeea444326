"""Shard health: every shard publishes a heartbeat to Redis; anyone (the gateway, the CLI)
reads them back, with the stream lags and dead letters, as one report.

Heartbeat: hash `health`, field = shard name ("channel-0"), value = msgpack Heartbeat,
written about every HEARTBEAT_S from the shard's loop (so a stuck loop stops beating), by a
script that checks the fencing epoch: a stale instance learns it is fenced even when idle,
and its last word ("fenced") never overwrites a newer instance's heartbeat.

The report is built by a pure function (`build`) from what `read_health` fetched, so the
gateway (asyncio Redis) and the CLI (blocking Redis) share the queries and the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from actors.keys import Keys
from actors.redisconn import text

HEARTBEAT_S = 1.0
"""How often a shard's loop publishes its heartbeat."""
DEAD_AFTER_S = 10.0
"""A shard whose last heartbeat is older than this is dead (its process or its loop is)."""
FENCED_GRACE_S = 5.0
"""A fenced instance is expected to be replaced: not ready only when fenced for longer."""
LAG_COUNT_MAX = 100_000
"""When Redis cannot tell a group's lag (entries deleted), count at most this many."""

STATES = ("running", "failing", "blocked", "fenced", "stopped")
"""running: applying entries; failing: retrying an entry that failed (see dead letters);
blocked: retrying an entry until it applies, after too many dead letters in a row;
fenced: a newer instance took over, this one stopped writing; stopped: shut down cleanly."""

ALIVE = ("running", "failing", "blocked")
"""States of a shard whose loop runs."""
SHARD_STREAMS = {"channel": ("ingest", "shards"), "member": ("credits", "shards"),
                 "ledger": ("ledgerlog", "projector")}  # fmt: skip
"""Stream and group of each shard kind the configuration implies (kind -> stream prefix)."""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    shard: str
    kind: str
    index: int
    stream: str
    """Full stream key the shard consumes."""
    group: str
    pid: int
    epoch: int
    state: str
    since: float
    """When the shard entered `state` (unix seconds)."""
    ts: float
    """When this heartbeat was written."""
    batches: int = 0
    errors: int = 0
    dead_letters: int = 0
    """Entries this instance moved to the dead-letter stream."""
    last_ok_ts: float = 0.0
    """Last successful commit (or start) of this instance."""
    node: str = ""
    """The Ray node the instance runs on (its node id; "" outside Ray)."""


heartbeat_encoder = msgspec.msgpack.Encoder()
heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)

HEARTBEAT = r"""
local health, epoch_key = KEYS[1], KEYS[2]
local shard, epoch, blob = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', epoch_key) == epoch then
  redis.call('HSET', health, shard, blob)
  return 1
end
-- fenced: say so, unless a newer instance already reports under this name
local prev = redis.call('HGET', health, shard)
if prev then
  local ok, hb = pcall(cmsgpack.unpack, prev)
  if ok and type(hb) == 'table' and tonumber(hb.epoch) and tonumber(hb.epoch) > tonumber(epoch) then
    return 0
  end
end
redis.call('HSET', health, shard, ARGV[4])
return 0
"""
"""KEYS: health hash, epoch key. ARGV: shard, epoch, heartbeat blob, the same blob saying fenced.
Returns 1 when written as current, 0 when the epoch has moved on (the caller is fenced)."""


def health_key(keys: Keys) -> str:
    return keys.k("health")


def epoch_key(keys: Keys, kind: str, index: int) -> str:
    return keys.k("epoch", kind, index)


def deadletter_key(keys: Keys) -> str:
    """Stream of dead letters (entries that failed `max_entry_failures` times), all sources."""
    return keys.k("deadletter")


def deadletter_count_key(keys: Keys) -> str:
    """Hash: source stream -> dead letters of it currently held."""
    return keys.k("deadletter", "count")


def failures_key(keys: Keys) -> str:
    """Hash: "{stream}/{entry id}" -> failures so far of an entry not yet applied."""
    return keys.k("failures")


# -- the report -----------------------------------------------------------------------------
class GroupLag(msgspec.Struct, frozen=True):
    group: str
    lag: int
    """Entries not yet delivered to the group."""
    pending: int
    """Delivered but not acknowledged."""


class StreamHealth(msgspec.Struct, frozen=True):
    stream: str
    """Stream name without the namespace ("ingest:0")."""
    length: int
    groups: list[GroupLag]
    dead_letters: int


class ShardHealth(msgspec.Struct, frozen=True, kw_only=True):
    shard: str
    state: str
    """running | failing | blocked | fenced | stopped | dead | absent (never started)."""
    alive: bool
    fenced: bool
    starts: int
    """Instances started so far (the fencing epoch)."""
    restarts: int
    pid: int | None
    node: str | None
    """The Ray node id of the instance that last reported (shards spread over a cluster's nodes)."""
    epoch: int | None
    """Epoch of the instance that last reported."""
    batches: int
    errors: int
    stream: str
    group: str
    lag: int
    """Entries of its stream not yet applied by its group (undelivered + pending)."""
    behind_s: float
    """Age of the newest entry minus that of the last applied one, when it lags."""
    dead_letters: int
    """Dead letters from its stream, held now."""
    heartbeat_age_s: float | None
    state_s: float | None
    """How long it has been in its state."""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    ts: float
    redis_up: bool
    ready: bool
    problems: list[str]
    shards: list[ShardHealth]
    streams: list[StreamHealth]
    dead_letters: int


def expected_shards(channel_shards: int, member_shards: int) -> list[str]:
    return (
        [f"channel-{i}" for i in range(channel_shards)]
        + [f"member-{i}" for i in range(member_shards)]
        + [f"ledger-{i}" for i in range(member_shards)]
    )


def _split(shard: str) -> tuple[str, int]:
    kind, _, index = shard.rpartition("-")
    return kind, int(index)


def _dict(reply: Any) -> dict[Any, Any]:
    return reply if isinstance(reply, dict) else {}


def _ms(entry_id: Any) -> int:
    return int(text(entry_id).partition("-")[0] or 0)


Plan = list[tuple[str, tuple[Any, ...]]]
"""Redis client method name and arguments, run in one pipeline."""


class _Reader:
    """The queries of one report, in three pipelined round trips."""

    def __init__(self, keys: Keys, shards: Sequence[str], now: float) -> None:
        self.keys = keys
        self.expected = list(shards)
        self.now = now

    def first(self) -> Plan:
        k = self.keys
        return [
            ("hgetall", (health_key(k),)),
            ("hgetall", (deadletter_count_key(k),)),
            ("hgetall", (k.offsets,)),
        ]

    def second(self, replies: list[Any]) -> Plan:
        beats_raw, dl_raw, offsets_raw = map(_dict, replies)
        self.beats: dict[str, Heartbeat] = {}
        for name, blob in beats_raw.items():
            try:
                self.beats[text(name)] = heartbeat_decoder.decode(blob)
            except msgspec.DecodeError:
                continue
        self.dead = {text(s): int(n) for s, n in dl_raw.items()}
        self.offsets = {text(s): text(v) for s, v in offsets_raw.items()}
        kinds = {_split(s)[0] for s in self.expected}
        extra = sorted(s for s in self.beats if _split(s)[0] not in kinds)
        self.shards = [*self.expected, *extra]
        self.where: dict[str, tuple[str, str]] = {}
        for shard in self.shards:
            hb = self.beats.get(shard)
            if hb is not None:
                self.where[shard] = (hb.stream, hb.group)
            else:
                kind, index = _split(shard)
                prefix, group = SHARD_STREAMS.get(kind, (kind, kind))
                self.where[shard] = (self.keys.k(prefix, index), group)
        self.streams = list(dict.fromkeys(s for s, _ in self.where.values()))
        plan: Plan = [("get", (epoch_key(self.keys, *_split(s)),)) for s in self.shards]
        for stream in self.streams:
            plan.append(("xlen", (stream,)))
            plan.append(("xinfo_groups", (stream,)))
            plan.append(("xrevrange", (stream, "+", "-", 1)))
        return plan

    def third(self, replies: list[Any]) -> Plan:
        n = len(self.shards)
        self.epochs = [int(v) if v is not None and not isinstance(v, Exception) else 0
                       for v in replies[:n]]  # fmt: skip
        self.lengths: dict[str, int] = {}
        self.groups: dict[str, list[dict[str, Any]]] = {}
        self.newest: dict[str, str] = {}
        for i, stream in enumerate(self.streams):
            length, groups, last = replies[n + 3 * i : n + 3 * i + 3]
            self.lengths[stream] = length if isinstance(length, int) else 0
            self.groups[stream] = [
                {text(k): v for k, v in g.items()} for g in groups
            ] if isinstance(groups, list) else []  # fmt: skip
            if isinstance(last, list) and last:
                self.newest[stream] = text(last[0][0])
        # Redis cannot tell the lag of a group after deletions: count what follows delivery
        self.unknown: list[tuple[str, dict[str, Any]]] = []
        plan: Plan = []
        for stream, groups in self.groups.items():
            for g in groups:
                if g.get("lag") is None:
                    self.unknown.append((stream, g))
                    start = "(" + text(g.get("last-delivered-id") or "0-0")
                    plan.append(("xrange", (stream, start, "+", LAG_COUNT_MAX)))
        return plan

    def finish(self, replies: list[Any]) -> Health:
        for (_stream, g), got in zip(self.unknown, replies, strict=True):
            g["lag"] = len(got) if isinstance(got, list) else 0
        return build(self)


def _lag_of(groups: list[dict[str, Any]], group: str) -> tuple[int, int]:
    for g in groups:
        if text(g.get("name")) == group:
            return int(g.get("lag") or 0), int(g.get("pending") or 0)
    return 0, 0


def _problem_of(sh: ShardHealth) -> str | None:
    if sh.state == "dead":
        age = "never" if sh.heartbeat_age_s is None else f"{sh.heartbeat_age_s:.0f} s ago"
        return f"{sh.shard} is dead (last heartbeat {age})"
    if sh.state == "blocked":
        return f"{sh.shard} is blocked: entry after entry of {sh.stream} fails (see the log)"
    if sh.fenced and (sh.state_s or 0.0) > FENCED_GRACE_S:
        return f"{sh.shard} is fenced (for {sh.state_s:.0f} s) and no newer instance reports"
    return None


def build(q: _Reader) -> Health:
    """The verdict from what was read (pure)."""
    now = q.now
    shards: list[ShardHealth] = []
    for shard, starts in zip(q.shards, q.epochs, strict=True):
        hb = q.beats.get(shard)
        stream, group = q.where[shard]
        lag, pending = _lag_of(q.groups.get(stream, []), group)
        behind = 0.0
        if lag + pending > 0 and stream in q.newest:
            applied = q.offsets.get(stream, "0-0")
            behind = max(0.0, (_ms(q.newest[stream]) - _ms(applied)) / 1000)
        short = stream.removeprefix(q.keys.prefix)
        fenced = hb is not None and hb.state == "fenced"
        if hb is None:
            state = "absent" if starts == 0 else "dead"
        elif fenced or hb.state == "stopped":
            state = hb.state
        elif now - hb.ts > DEAD_AFTER_S:
            state = "dead"
        else:
            state = hb.state
        shards.append(
            ShardHealth(
                shard=shard, state=state, alive=state in ALIVE, fenced=fenced, starts=starts,
                restarts=max(0, starts - 1),
                pid=hb.pid if hb else None, node=hb.node or None if hb else None,
                epoch=hb.epoch if hb else None,
                batches=hb.batches if hb else 0, errors=hb.errors if hb else 0,
                stream=short, group=group, lag=lag + pending, behind_s=round(behind, 3),
                dead_letters=q.dead.get(stream, 0),
                heartbeat_age_s=round(now - hb.ts, 3) if hb else None,
                state_s=round(now - hb.since, 3) if hb else None,
            )
        )  # fmt: skip
    streams = [
        StreamHealth(
            stream.removeprefix(q.keys.prefix),
            q.lengths.get(stream, 0),
            [GroupLag(text(g.get("name")), int(g.get("lag") or 0), int(g.get("pending") or 0))
             for g in q.groups.get(stream, [])],
            q.dead.get(stream, 0),
        )
        for stream in q.streams
    ]  # fmt: skip
    problems = [p for p in map(_problem_of, shards) if p is not None]
    return Health(
        ts=now, redis_up=True, ready=not problems, problems=problems, shards=shards,
        streams=streams, dead_letters=sum(q.dead.values()),
    )  # fmt: skip


def redis_down(now: float, error: str) -> Health:
    return Health(ts=now, redis_up=False, ready=False, problems=[f"redis unreachable: {error}"],
                  shards=[], streams=[], dead_letters=0)  # fmt: skip


def _queue(pipe: Any, plan: Plan) -> None:
    for name, args in plan:
        getattr(pipe, name)(*args)


def read_health(r: Any, keys: Keys, shards: Iterable[str], now: float | None = None) -> Health:
    """The report, read with a blocking redis.Redis (raises redis errors)."""
    q = _Reader(keys, list(shards), time.time() if now is None else now)
    plan = q.first()
    for step in (q.second, q.third):
        pipe = r.pipeline(transaction=False)
        _queue(pipe, plan)
        plan = step(pipe.execute(raise_on_error=False))
    pipe = r.pipeline(transaction=False)
    _queue(pipe, plan)
    return q.finish(pipe.execute(raise_on_error=False) if plan else [])


async def aread_health(
    r: Any, keys: Keys, shards: Iterable[str], now: float | None = None
) -> Health:
    """The same report, read with redis.asyncio.Redis (raises redis errors)."""
    q = _Reader(keys, list(shards), time.time() if now is None else now)
    plan = q.first()
    steps: list[Callable[[list[Any]], Plan]] = [q.second, q.third]
    for step in steps:
        async with r.pipeline(transaction=False) as pipe:
            _queue(pipe, plan)
            run: Awaitable[list[Any]] = pipe.execute(raise_on_error=False)
            plan = step(await run)
    if not plan:
        return q.finish([])
    async with r.pipeline(transaction=False) as pipe:
        _queue(pipe, plan)
        return q.finish(await pipe.execute(raise_on_error=False))
