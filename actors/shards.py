"""The shard actors: each hosts many virtual channel or member actors, chosen by a stable hash.

ChannelShard p consumes ingest:{p}: deduplicates events by id, applies them to the channel
actors it hosts, and commits channel state, presence, chatters, the dedupe set and the
resulting credits (appended to credits:{m} of each member shard) with its offset in one
atomic COMMIT. MemberShard m consumes credits:{m}: applies the credits to the member actors
it hosts and commits their state, ledger entries, leaderboards, counters and its offset.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Sequence

import msgspec
import redis

from actors.config import RuntimeConfig
from actors.keys import LATENCY_BUCKETS_MS, Keys, yyyymmdd
from actors.lua import COMMIT, Commit
from actors.stream import Entry, Fenced, StreamShard, parse_id
from engine.channel import Changes, Channel, channel_decoder, channel_encoder
from engine.events import Event, decode_events
from engine.ledger import Entry as LedgerEntry
from engine.ledger import entry_encoder
from engine.member import (
    Applied,
    Credit,
    MemberState,
    apply_credit,
    credits_decoder,
    roll_over,
    state_decoder,
    state_encoder,
)
from engine.routing import shard_of
from engine.rules import EarnRules, NetworkRules, RuleBook

log = logging.getLogger(__name__)

DAY_S = 86_400
NOTICES_MAXLEN = 100_000
DAY_BOARD_TTL_S = 40 * DAY_S
CREDITS_PER_ENTRY = 5_000
"""Credits (or ledger entries) per stream entry: a 1M-viewer watch tick becomes 200 entries,
which the next shard commits in bounded runs (StreamShard.max_items_per_commit)."""
credit_encoder = entry_encoder  # one msgpack encoder serves every Struct
ledger_encoder = entry_encoder
ledger_decoder = msgspec.msgpack.Decoder(list[LedgerEntry])


def _commit(shard: StreamShard, script: object, c: Commit, entries: Sequence[Entry]) -> None:
    ids = [eid for eid, _ in entries]
    k = shard.keys
    args = c.args(shard.epoch_key, shard.epoch, shard.stream, shard.group, k.offsets, ids[-1], ids)
    try:
        script(args=args)  # type: ignore[operator]
    except redis.ResponseError as err:
        if str(err).startswith("FENCED"):
            raise Fenced(shard.consumer) from err
        raise


class ChannelShard(StreamShard):
    kind = "channel"

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        self.book = RuleBook.from_builtins(cfg.rules)
        self.channels: dict[str, Channel] = {}
        self.script = redis.Redis.from_url(cfg.redis_url).register_script(COMMIT)
        super().__init__(cfg, index, Keys(cfg.namespace).ingest(index))
        self.chanidx = self.keys.chanidx(index)

    def reset(self) -> None:
        self.channels.clear()

    def _load(self, names: set[str]) -> None:
        names = {n for n in names if n not in self.channels}
        if not names:
            return
        order = sorted(names)
        pipe = self.r.pipeline(transaction=False)
        for nc in order:
            pipe.hget(self.keys.cstate, nc)
            pipe.hgetall(self.keys.presence(nc))
            pipe.zrange(self.keys.chatters(nc), 0, -1, withscores=True)
        got = pipe.execute()
        for i, nc in enumerate(order):
            raw, present, chatters = got[3 * i : 3 * i + 3]
            network, _, channel = nc.partition(":")
            self.channels[nc] = Channel(
                network,
                channel,
                channel_decoder.decode(raw) if raw else None,
                {k.decode(): v.decode() for k, v in present.items()},
                {k.decode(): float(s) for k, s in chatters},
            )

    def _dedupe(self, events: list[Event], now: float) -> tuple[list[Event], list[str]]:
        keys = [f"{e.network}:{e.id}" for e in events]
        seen: set[str] = set()
        if keys:
            today = int(now // DAY_S)
            pipe = self.r.pipeline(transaction=False)
            for d in range(self.cfg.dedupe_days):
                pipe.smismember(self.keys.seen(self.index, today - d), keys)
            for hits in pipe.execute():
                seen.update(k for k, hit in zip(keys, hits, strict=True) if hit)
        fresh: list[Event] = []
        fresh_keys: list[str] = []
        for k, ev in zip(keys, events, strict=True):
            if k not in seen:
                seen.add(k)
                fresh.append(ev)
                fresh_keys.append(k)
        return fresh, fresh_keys

    def process(self, entries: Sequence[Entry]) -> None:
        now = time.time()
        events: list[Event] = []
        clocks: list[float] = []
        for _, fields in entries:
            blob = fields.get(b"e")
            if blob is not None:
                events.extend(decode_events(blob))
            elif b"clock" in fields:
                clocks.append(float(fields[b"clock"]))
        first_ms = parse_id(entries[0][0])[0]
        fresh, fresh_keys = self._dedupe(events, now)
        names = {f"{e.network}:{e.channel}" for e in fresh}
        new = names - self.channels.keys()
        if clocks:
            names |= {m.decode() for m in self.r.smembers(self.chanidx)}
        self._load(names)
        credits: list[Credit] = []
        changes: dict[str, Changes] = {}
        for ev in fresh:
            nc = f"{ev.network}:{ev.channel}"
            chg = changes.get(nc)
            if chg is None:
                chg = changes[nc] = Changes()
            earn = self.book.earn(ev.network, ev.channel)
            self.channels[nc].apply(ev, earn, now, chg, credits)
        c_trims: list[tuple[str, float]] = []
        for t in clocks:
            for nc, channel in self.channels.items():
                earn = self.book.earn(channel.network, channel.channel)
                channel.advance(t, earn, credits)
                changes.setdefault(nc, Changes())
                horizon = t - earn.active_chatter_window_s - 3600
                if channel.forget_chatters_before(horizon):
                    c_trims.append((nc, horizon))
        c = Commit()
        self._write_channels(c, changes)
        for nc, horizon in c_trims:
            c.cmd("ZREMRANGEBYSCORE", self.keys.chatters(nc), "-inf", horizon)
        if fresh_keys:
            seen_key = self.keys.seen(self.index, int(now // DAY_S))
            c.many("SADD", seen_key, fresh_keys)
            c.cmd("EXPIRE", seen_key, (self.cfg.dedupe_days + 1) * DAY_S)
        if new:
            c.many("SADD", self.chanidx, sorted(new))
        self._route(c, credits, first_ms)
        c.cmd("HINCRBY", self.keys.stats, "events_applied", len(fresh))
        if len(events) != len(fresh):
            c.cmd("HINCRBY", self.keys.stats, "events_dup", len(events) - len(fresh))
        _commit(self, self.script, c, entries)

    def _write_channels(self, c: Commit, changes: dict[str, Changes]) -> None:
        states: list[bytes | str] = []
        for nc, chg in changes.items():
            states += [nc, channel_encoder.encode(self.channels[nc].state)]
            if chg.present_set:
                flat: list[str] = [x for kv in chg.present_set.items() for x in kv]
                c.many("HSET", self.keys.presence(nc), flat, width=2)
            if chg.present_del:
                c.many("HDEL", self.keys.presence(nc), sorted(chg.present_del))
            if chg.chatted:
                zflat: list[str | float] = [x for u, t in chg.chatted.items() for x in (t, u)]
                c.many("ZADD", self.keys.chatters(nc), zflat, width=2)
        if states:
            c.many("HSET", self.keys.cstate, states, width=2)

    def _route(self, c: Commit, credits: list[Credit], first_ms: int) -> None:
        if not credits:
            return
        by_shard: dict[int, list[Credit]] = {}
        shards = self.cfg.member_shards
        for cr in credits:
            by_shard.setdefault(shard_of(f"{cr.network}:{cr.user_id}", shards), []).append(cr)
        step = CREDITS_PER_ENTRY
        for m, part in sorted(by_shard.items()):
            for i in range(0, len(part), step):
                chunk = part[i : i + step]
                blob = credit_encoder.encode(chunk)
                c.cmd("XADD", self.keys.credits(m), "*", "c", blob, "t", first_ms, "n", len(chunk))


class MemberShard(StreamShard):
    kind = "member"
    max_items_per_commit = 100_000  # state and a ledger log append: cheap per item

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        self.book = RuleBook.from_builtins(cfg.rules)
        self.members: dict[str, MemberState] = {}
        self.script = redis.Redis.from_url(cfg.redis_url).register_script(COMMIT)
        super().__init__(cfg, index, Keys(cfg.namespace).credits(index))

    def reset(self) -> None:
        self.members.clear()

    def _load(self, keys: set[str]) -> None:
        missing = [k for k in keys if k not in self.members]
        if not missing:
            return
        for start in range(0, len(missing), 10_000):
            chunk = missing[start : start + 10_000]
            for key, raw in zip(chunk, self.r.hmget(self.keys.mstate, chunk), strict=True):
                self.members[key] = state_decoder.decode(raw) if raw else MemberState()
        excess = len(self.members) - self.cfg.member_cache_max
        if excess > 0:  # passivate the oldest activations: their state is durable in Redis
            for key in list(itertools.islice(self.members, excess)):
                if key not in keys:
                    del self.members[key]

    def process(self, entries: Sequence[Entry]) -> None:
        credits: list[Credit] = []
        lat: list[tuple[int, int]] = []
        rolls: list[int] = []
        for _, fields in entries:
            blob = fields.get(b"c")
            if blob is not None:
                part = credits_decoder.decode(blob)
                credits.extend(part)
                lat.append((int(fields[b"t"]), len(part)))
            elif b"roll" in fields:
                rolls.append(int(fields[b"roll"]))
        self._load({f"{c.network}:{c.user_id}" for c in credits})
        out = Applied()
        changed: set[str] = set()
        book, members = self.book, self.members
        rules: dict[tuple[str, str], tuple[NetworkRules, EarnRules]] = {}
        for cr in credits:
            key = f"{cr.network}:{cr.user_id}"
            found = rules.get((cr.network, cr.channel))
            if found is None:
                found = (book.network(cr.network), book.earn(cr.network, cr.channel))
                rules[(cr.network, cr.channel)] = found
            apply_credit(members[key], cr, found[0], found[1], out)
            changed.add(key)
        for today in rolls:
            changed.update(k for k, st in self.members.items() if roll_over(st, today))
        c = Commit()
        self._write(c, changed, out)
        self._count(c, len(credits), len(out.entries), lat)
        _commit(self, self.script, c, entries)

    def _write(self, c: Commit, changed: set[str], out: Applied) -> None:
        """Member state and the batch's ledger entries (one blob on ledgerlog:{m}); the
        per-member ledger lists and leaderboards are projected from it by LedgerProjector."""
        keys = self.keys
        fields = list(changed)
        c.pairs(
            "HSET", keys.mstate, fields, [state_encoder.encode(self.members[k]) for k in fields]
        )
        for i in range(0, len(out.entries), CREDITS_PER_ENTRY):
            chunk = out.entries[i : i + CREDITS_PER_ENTRY]
            blob = ledger_encoder.encode(chunk)
            c.cmd("XADD", keys.ledgerlog(self.index), "*", "l", blob, "n", len(chunk))
        treasury: dict[str, int] = {}
        for e in out.entries:
            treasury[e.network] = treasury.get(e.network, 0) - e.amount
        for network, amount in treasury.items():
            c.cmd("HINCRBY", keys.treasury, network, amount)
        for tc in out.tier_changes:
            c.cmd(
                "XADD", keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*",
                "tier", credit_encoder.encode(tc),
            )  # fmt: skip

    def _count(self, c: Commit, credits: int, entries: int, lat: list[tuple[int, int]]) -> None:
        c.cmd("HINCRBY", self.keys.stats, "credits_applied", credits)
        c.cmd("HINCRBY", self.keys.stats, "entries", entries)
        if not lat:
            return
        now_ms = int(time.time() * 1000)
        buckets: dict[str, int] = {}
        worst = 0
        total = 0
        for t_ms, n in lat:
            ms = max(0, now_ms - t_ms)
            worst = max(worst, ms)
            total += ms * n
            bucket = next((str(b) for b in LATENCY_BUCKETS_MS if ms <= b), "inf")
            buckets[bucket] = buckets.get(bucket, 0) + n
        for bucket, n in buckets.items():
            c.cmd("HINCRBY", self.keys.latency, bucket, n)
        c.cmd("HINCRBY", self.keys.latency, "sum_ms", total)
        c.cmd("HINCRBY", self.keys.latency, "count", sum(n for _, n in lat))
        c.cmd("HMAX", self.keys.latency, "max_ms", worst)


class LedgerProjector(StreamShard):
    """Projects the ledger log of member shard m (ledgerlog:{m}) into what readers page and
    rank: each member's ledger list, the channel leaderboards (all time and by day) and each
    member's standing per channel. Exactly once, like the shards: offset and writes commit
    together. Balances never wait for it; history and leaderboards trail by a batch."""

    kind = "ledger"
    group = "projector"
    nice = 5
    """Projections may trail; balances should not wait for them: the projector gives way
    to the shards when CPU is short."""

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        with contextlib.suppress(OSError):
            os.nice(self.nice)
        self.script = redis.Redis.from_url(cfg.redis_url).register_script(COMMIT)
        super().__init__(cfg, index, Keys(cfg.namespace).ledgerlog(index))

    def process(self, entries: Sequence[Entry]) -> None:
        keys = self.keys
        ledgers: dict[str, list[bytes]] = {}
        earned: dict[tuple[str, str, int], int] = {}  # (member, channel, day) -> points
        encode = entry_encoder.encode
        count = 0
        for _, fields in entries:
            for e in ledger_decoder.decode(fields[b"l"]):
                count += 1
                nu = e.credit[7:]  # "member:{network}:{user}"
                blobs = ledgers.get(nu)
                if blobs is None:
                    blobs = ledgers[nu] = []
                blobs.append(encode(e))
                k = (nu, e.channel, int(e.ts // DAY_S))
                earned[k] = earned.get(k, 0) + e.amount
        c = Commit()
        for nu, blobs in ledgers.items():
            c.push(keys.ledger(nu), blobs)
        all_time: dict[tuple[str, str], int] = {}
        day_keys: set[str] = set()
        for (nu, channel, day), amount in earned.items():
            network, _, uid = nu.partition(":")
            nc = f"{network}:{channel}"
            day_key = keys.lb_day(nc, yyyymmdd(day))
            day_keys.add(day_key)
            c.cmd("ZINCRBY", day_key, amount, uid)
            all_time[(nu, nc)] = all_time.get((nu, nc), 0) + amount
        for (nu, nc), amount in all_time.items():
            c.cmd("ZINCRBY", keys.lb_all(nc), amount, nu.partition(":")[2])
            c.cmd("ZINCRBY", keys.member_channels(nu), amount, nc)
        for key in day_keys:
            c.cmd("EXPIRE", key, DAY_BOARD_TTL_S)
        c.cmd("HINCRBY", keys.stats, "entries_projected", count)
        _commit(self, self.script, c, entries)
