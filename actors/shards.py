"""The shard actors: each hosts many virtual channel or member actors, chosen by a stable hash.

ChannelShard p consumes ingest:{p}: deduplicates events by id, holds them back until the
partition's watermark passes them (engine.watermark), applies them to the channel actors
it hosts in (ts, network, id) order, and commits channel state, presence, chatters, the
ids it deduplicates by (engine/dedupe.py), what it still holds back, its progress and the
resulting credits (appended to credits:{m} of each member shard, with its watermark) with
its offset in one atomic commit (actors/lua.py).
MemberShard m consumes credits:{m}: holds credits back until every partition's watermark
has passed them, applies them to the member actors it hosts in (ts, network, id) order and
commits their state, ledger entries, counters, what it holds back and its offset.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import numpy as np
import redis

from actors.config import RuntimeConfig
from actors.keys import LATENCY_BUCKETS_MS, Keys
from actors.lua import Arg, Commit
from actors.notices import NOTICES_MAXLEN, NOTICES_PER_ENTRY
from actors.raffle import KeywordFeed
from actors.redisconn import hmget
from actors.referrals import ReferralGraph
from actors.stream import Entry, StreamShard
from engine import timelog
from engine.channel import Changes, Channel, channel_decoder, channel_encoder
from engine.dedupe import (
    BUCKET_S,
    Fresh,
    SeenWindow,
    bucket_of,
    chunk_writes,
    chunks_of,
    expires_at,
    id_hashes,
)
from engine.events import Chat, Event, Referral, decode_events
from engine.ledger import TREASURY_PREFIX, entry_encoder
from engine.ledger import Entry as LedgerEntry
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
from engine.migration import retier
from engine.quality import Flag, flag_encoder
from engine.raffle_feed import SUB_NEEDLE, keyword_hits, subscribers
from engine.reference import credit_key, event_key
from engine.referral import (
    LINK,
    REWARD_RULES,
    STAGE_A_RULES,
    earn,
    earned_pending,
    must_see,
    on_credit,
)
from engine.rewards import RewardEarned, rewards
from engine.routing import shard_of
from engine.rules import EarnRules, NetworkRules, RuleBook
from engine.spend import (
    Record,
    Result,
    Transfer,
    account_deltas,
    apply_transfer,
    digest,
    gift_leg,
    record_decoder,
    replay,
    replies_encoder,
    transfer_decoder,
)
from engine.spend import encode as spend_encode
from engine.streamid import stream_id
from engine.watermark import NEVER, ReorderBuffer

log = logging.getLogger(__name__)

DAY_S = 86_400
DROP_CHUNKS_MAX = 256
"""Most dedupe strings (512 KB each) one commit deletes."""
LOAD_CHUNKS_MAX = 64
"""Most dedupe strings (512 KB each) one round trip reads when a restarted shard loads its
window."""
CREDITS_PER_ENTRY = 5_000
"""Credits (or ledger entries) per stream entry: a 1M-viewer watch tick becomes 200 entries,
which the next shard commits in bounded runs (StreamShard.max_items_per_commit)."""
REPLY_MAXLEN = 10_000
"""Results kept on a caller's reply stream (its reader consumes them as they come)."""
REPLY_TTL_S = 3_600
"""A reply stream nobody reads any more (its gateway process is gone) expires."""
RECORDS_PER_READ = 5_000
"""Spend records one MGET reads."""
credit_encoder = entry_encoder  # one msgpack encoder serves every Struct
ledger_encoder = entry_encoder
ledger_decoder = msgspec.msgpack.Decoder(list[LedgerEntry])
T = TypeVar("T")
LINKED_NEEDLE = b"\xa6linked"
"""The msgpack string "linked": in every stored member state waiting for its first earn."""


def chunked(items: list[T], step: int) -> Iterator[tuple[list[T], bool]]:
    """`items` as stream entries of at most `step`, each with whether it is the last (no
    items: one empty entry, which still carries a watermark). A sender's watermark goes
    with the last entry only: the receiving shard may commit the entries in separate runs
    (StreamShard.groups), and a run that saw the mark early would take the items of the
    entries after it for late."""
    starts = range(0, max(len(items), 1), step)
    for i in starts:
        yield items[i : i + step], i == starts[-1]


class HeldEvents(msgspec.Struct, array_like=True):
    """A pending-log entry of a channel shard: events held back, with their ingest times."""

    items: list[Event]
    accepted_ms: list[int]


class HeldCredits(msgspec.Struct, array_like=True):
    """A pending-log entry of a member shard: credits held back, with their ingest times."""

    items: list[Credit]
    accepted_ms: list[int]


class PendingLog:
    """What a shard holds back until its watermark passes it, made durable: each commit
    appends the items it left held (entry id = the commit's last input entry id, so ids
    only grow) and trims the entries whose every item has been released."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.entries: list[tuple[bytes, float]] = []  # (entry id, newest item ts in it)

    def load(self, r: redis.Redis, decoder: msgspec.msgpack.Decoder[Any]) -> list[Any]:
        self.entries = []
        out: list[Any] = []
        for entry_id, fields in r.xrange(self.key):
            held = decoder.decode(fields[b"b"])
            newest = max((item.ts for item in held.items), default=NEVER)
            self.entries.append((entry_id, newest))
            out.append(held)
        return out

    def append(self, c: Commit, entry_id: bytes, held: list[tuple[Any, int]]) -> None:
        """Note the (item, accepted ms) pairs a commit leaves held."""
        if not held:
            return
        items, accepted_ms = map(list, zip(*held, strict=True))
        c.cmd("XADD", self.key, entry_id, "b", held_encoder.encode([items, accepted_ms]))
        self.entries.append((entry_id, max(map(_ts_of, items))))

    def trim(self, c: Commit, watermark: float, last_id: bytes) -> None:
        """Drop the entries before the first one still holding an item not yet released."""
        first_held = next((i for i, (_, ts) in enumerate(self.entries) if ts >= watermark), None)
        if first_held == 0 or not self.entries:
            return
        if first_held is None:
            ms, seq = stream_id(last_id)
            minid = f"{ms}-{seq + 1}"
            self.entries = []
        else:
            minid = self.entries[first_held][0].decode()
            self.entries = self.entries[first_held:]
        c.cmd("XTRIM", self.key, "MINID", minid)


held_encoder = msgspec.msgpack.Encoder()
_ts_of = operator.attrgetter("ts")
held_events_decoder = msgspec.msgpack.Decoder(HeldEvents)
held_credits_decoder = msgspec.msgpack.Decoder(HeldCredits)


class ChannelProgress(msgspec.Struct, array_like=True):
    """A channel shard's event-time progress (committed with its batch)."""

    newest: float = NEVER
    """The newest time observed in the partition's log (event times, frontier marks, clock)."""
    watermark: float = NEVER


class MemberProgress(msgspec.Struct, array_like=True):
    """A member shard's event-time progress (committed with its batch)."""

    watermark: float = NEVER
    partitions: list[float] = []
    """The watermark each channel partition last published."""
    roll_day: int = -1
    """The UTC day of the last streak rollover started."""
    roll_cursor: int = 0
    """Where the running rollover's HSCAN of member states stands (0: done)."""
    stage_a: float = NEVER
    """Stage A's watermark (the channel partitions'): referral credits are emitted up to it."""
    members: list[float] = []
    """The stage-A watermark each member shard last published (referral credits follow it)."""
    linked_for: int = 0
    """The member shard count reflinked:{m} was built for (0: never built: a state stored
    before it was kept; built from the member states when the shard loads)."""


progress_encoder = msgspec.msgpack.Encoder()
channel_progress_decoder = msgspec.msgpack.Decoder(ChannelProgress)
member_progress_decoder = msgspec.msgpack.Decoder(MemberProgress)
accepted_decoder = msgspec.msgpack.Decoder(list[int])


@dataclass(slots=True)
class Admitted:
    """What a channel shard read from its log in one batch."""

    read: int
    applied: int
    """Fresh events admitted (held back or released)."""
    expired: int
    """Events read after their dedupe bucket was forgotten: not applied (engine/dedupe.py)."""
    late: int
    checked: Fresh
    chats: list[Chat]
    """Fresh chats as sent (not retimed), while a keyword raffle is open: else empty."""
    subscribed: dict[tuple[str, str], int]
    """Subscribers in the batch, and until when (engine/raffle_feed.py)."""


class ChannelShard(StreamShard):
    """Reads ingest:{p}; holds events back until the partition's watermark passes them, then
    applies them to its channels in (ts, network, id) order and publishes its watermark with
    the credits to every member shard."""

    kind = "channel"

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        self.book = RuleBook.from_builtins(cfg.rules)
        self.channels: dict[str, Channel] = {}
        self.logs: dict[str, tuple[timelog.LogSize, timelog.LogSize]] = {}
        """Each hosted channel's stored chat-time and sign-of-life logs, as the writer sees them
        (set where the channel is: loaded, or created by its first event)."""
        self.legacy: set[str] = set()
        """Channels whose times Redis still holds in sorted sets (stored before the logs)."""
        self.held: ReorderBuffer[tuple[Event, int]] = ReorderBuffer(cfg.lateness_s)
        self.progress = ChannelProgress()
        self.loaded = False
        self.next_tick_ts = -math.inf
        self.seen = SeenWindow(cfg.dedupe_window_s)
        keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.pending = PendingLog(keys.pending("channel", index))
        self.progress_field = f"channel:{index}"
        self.raffles = KeywordFeed(keys)
        super().__init__(cfg, index, keys.ingest(index))
        self.chanidx = self.keys.chanidx(index)
        self.graph = ReferralGraph(self.r, self.keys)

    def reset(self) -> None:
        self.channels.clear()
        self.logs.clear()
        self.legacy.clear()
        self.held.clear()
        self.graph.clear()
        self.loaded = False

    def _ensure_loaded(self) -> None:
        """Everything this partition hosts, from what Redis has committed: its channels
        (the watermark moves every channel's clock), progress and held-back events."""
        if self.loaded:
            return
        self.raffles.retire(self.r, self.stream, self.index)
        raw = self.r.hget(self.keys.wmark, self.progress_field)
        self.progress = channel_progress_decoder.decode(raw) if raw else ChannelProgress()
        self.held = ReorderBuffer(self.cfg.lateness_s, self.progress.watermark)
        for held in self.pending.load(self.r, held_events_decoder):
            for ev, ms in zip(held.items, held.accepted_ms, strict=True):
                if ev.ts >= self.progress.watermark:
                    self.held.push(ev.ts, event_key(ev), (ev, ms))
        self._load({m.decode() for m in self.r.smembers(self.chanidx)})
        stored = self.r.hgetall(self.keys.seen_index(self.index))
        self.seen = SeenWindow(
            self.cfg.dedupe_window_s, {int(b): int(n) for b, n in stored.items()}
        )
        self.next_tick_ts = -math.inf
        self.loaded = True

    def _load(self, names: set[str]) -> None:
        names = {n for n in names if n not in self.channels}
        if not names:
            return
        order = sorted(names)
        pipe = self.r.pipeline(transaction=False)
        for nc in order:
            pipe.hget(self.keys.cstate, nc)
            pipe.hgetall(self.keys.presence(nc))
            pipe.get(self.keys.chat_log(nc))
            pipe.get(self.keys.seen_log(nc))
            pipe.exists(self.keys.chatters(nc), self.keys.present_seen(nc))
        got = pipe.execute()
        legacy = [nc for i, nc in enumerate(order) if got[5 * i + 4]]
        zsets: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        if legacy:  # stored before the logs: read once, replaced at the channel's next change
            pipe = self.r.pipeline(transaction=False)
            for nc in legacy:
                pipe.zrange(self.keys.chatters(nc), 0, -1, withscores=True)
                pipe.zrange(self.keys.present_seen(nc), 0, -1, withscores=True)
            old = iter(pipe.execute())
            for nc in legacy:
                zsets[nc] = ({k.decode(): s for k, s in next(old)},
                             {k.decode(): s for k, s in next(old)})  # fmt: skip
            self.legacy.update(legacy)
        for i, nc in enumerate(order):
            raw, present, chat_log, seen_log, _ = got[5 * i : 5 * i + 5]
            network, _, channel = nc.partition(":")
            chatters, seen = zsets.get(nc) or (timelog.replay(chat_log), timelog.replay(seen_log))
            self.logs[nc] = (
                timelog.LogSize(len(chat_log or b"")),
                timelog.LogSize(len(seen_log or b"")),
            )
            self.channels[nc] = Channel(
                network,
                channel,
                channel_decoder.decode(raw) if raw else None,
                {k.decode(): v.decode() for k, v in present.items()},
                chatters,
                seen,
            )

    def _dedupe(self, events: list[Event], ids: list[str]) -> tuple[Fresh, list[int]]:
        """Which events are new in the window (engine/dedupe.py). After a restart every
        bucket Redis holds is loaded first, LOAD_CHUNKS_MAX strings a round trip."""
        missing = self.seen.to_load()
        if missing:
            chunks = {b: chunks_of(self.seen.stored[b]) for b in missing}
            wanted = [(b, k) for b in missing for k in range(chunks[b])]
            got: dict[int, list[bytes]] = {b: [] for b in missing}
            for b in [b for b in missing if not chunks[b]]:  # an empty bucket: nothing to read
                del got[b]
                self.seen.load(b, b"")
            for start in range(0, len(wanted), LOAD_CHUNKS_MAX):
                group = wanted[start : start + LOAD_CHUNKS_MAX]
                pipe = self.r.pipeline(transaction=False)
                for b, k in group:
                    pipe.get(self.keys.seen(self.index, b, k))
                for (b, _), packed in zip(group, pipe.execute(), strict=True):
                    got[b].append(packed or b"")
                    if len(got[b]) == chunks[b]:  # complete: into the set, bytes freed
                        self.seen.load(b, b"".join(got.pop(b)))
        buckets = [bucket_of(e.ts) for e in events]
        return self.seen.check(id_hashes(ids), buckets, self.progress.newest), buckets

    def _admit(
        self, entries: Sequence[Entry], keywords: bool
    ) -> tuple[list[tuple[Event, int]], Admitted]:
        """Read the log in order: deduplicate, hold back, and move the watermark. Returns the
        newly held events and what was read, applied, expired, late and remembered, and
        what the raffles want of it (the fresh chats only if `keywords` are open)."""
        decoded: list[tuple[int, list[Event], dict[bytes, bytes]]] = []
        everything: list[Event] = []
        subscribed: dict[tuple[str, str], int] = {}
        for entry_id, fields in entries:
            blob = fields.get(b"e")
            events = decode_events(blob) if blob is not None else []
            decoded.append((stream_id(entry_id)[0], events, fields))
            everything.extend(events)
            if blob is not None and SUB_NEEDLE in blob:  # a repeat is harmless: the latest wins
                subscribers(events, subscribed)
        ids = [event_key(e) for e in everything]
        checked, buckets = self._dedupe(everything, ids)
        fresh = checked.fresh.tolist()
        window_s = self.cfg.dedupe_window_s
        lateness_s = self.cfg.lateness_s
        held, progress = self.held, self.progress
        new: list[tuple[Event, int]] = []
        pushed: list[tuple[float, str, int, tuple[Event, int]]] = []
        chats: list[Chat] = []
        seq = held.reserve(len(everything))
        i = late = expired = 0
        for ms, events, fields in decoded:
            accepted_s = ms / 1000
            newest, watermark = progress.newest, held.watermark
            for ev in events:
                ok, bucket = fresh[i], buckets[i]
                i += 1
                if (bucket + 1) * BUCKET_S + window_s <= newest:  # dedupe.expires_at
                    expired += 1  # its duplicates are no longer known: never applied
                    continue
                if not ok:
                    continue
                if keywords and type(ev) is Chat:
                    chats.append(ev)
                ts = ev.ts
                observed = ts if ts < accepted_s else accepted_s
                if ts < watermark:  # late (ReorderBuffer.admit): retimed to the watermark
                    late += 1
                    ts = watermark
                    ev = msgspec.structs.replace(ev, ts=ts)
                item = (ev, ms)
                pushed.append((ts, ids[i - 1], seq, item))
                seq += 1
                new.append(item)
                if observed - lateness_s > watermark:  # ReorderBuffer.observe
                    watermark = observed - lateness_s
                if observed > newest:
                    newest = observed
            progress.newest, held.watermark = newest, watermark
            for mark in (fields.get(b"f"), fields.get(b"clock")):
                if mark is not None:
                    t = float(mark)
                    held.observe(t)
                    progress.newest = max(progress.newest, t)
            flush = fields.get(b"flush")
            if flush is not None:  # a watermark set from outside; event time itself stays
                held.advance_to(float(flush))
        held.push_numbered(pushed)
        admitted = Admitted(len(everything), len(new), expired, late, checked, chats, subscribed)
        return new, admitted

    def process(self, entries: Sequence[Entry]) -> None:
        self._ensure_loaded()
        now = time.time()
        now_ms = int(now * 1000)
        before, newest_before = self.progress.watermark, self.progress.newest
        wanted = self.raffles.open_keywords(self.r)
        new, got = self._admit(entries, bool(wanted))
        watermark = self.held.watermark
        released = self.held.release()
        new_channels: set[str] = set()
        credits: list[Credit] = []
        accepted: list[int] = []
        """The acceptance time of the event each credit came from (one per credit)."""
        changes: dict[str, Changes] = {}
        touched: dict[str, tuple[Channel, Changes, EarnRules]] = {}
        """The batch's channels, with their changes and rules, looked up once a channel."""
        for ev, ms in released:
            if type(ev) is Referral:
                self.graph.apply(ev, self.book.earn(ev.network, ev.channel).ignore, credits)
                accepted.extend([ms] * (len(credits) - len(accepted)))
                continue
            nc = f"{ev.network}:{ev.channel}"
            found = touched.get(nc)
            if found is None:
                channel = self.channels.get(nc)
                if channel is None:
                    channel = self.channels[nc] = Channel(ev.network, ev.channel)
                    self.logs[nc] = (timelog.LogSize(), timelog.LogSize())  # nothing stored
                    new_channels.add(nc)
                    self.next_tick_ts = -math.inf  # a new channel: its first tick is unknown
                earn = self.book.earn(ev.network, ev.channel)
                found = touched[nc] = (channel, changes.setdefault(nc, Changes()), earn)
            channel, chg, earn = found
            channel.apply(ev, earn, now, chg, credits)
            made = len(credits) - len(accepted)
            if made == 1:  # the common case: a chat's credit
                accepted.append(ms)
            elif made:
                accepted.extend([ms] * made)
        c_trims = self._advance_all(watermark, credits, changes)
        accepted.extend([now_ms] * (len(credits) - len(accepted)))
        self.progress.watermark = watermark
        c = Commit()
        self._write_channels(c, changes, c_trims)
        self.graph.write(c)
        self._write_seen(c, got.checked, newest_before)
        if new_channels:
            c.many("SADD", self.chanidx, sorted(new_channels))
        last_id = entries[-1][0]
        self.pending.append(c, last_id, [item for item in new if item[0].ts >= watermark])
        self.pending.trim(c, watermark, last_id)
        self._route(c, credits, accepted, publish=watermark > before)
        self.raffles.write(c, self.r, keyword_hits(got.chats, wanted), got.subscribed)
        c.cmd("HSET", self.keys.wmark, self.progress_field, progress_encoder.encode(self.progress))
        c.cmd("HINCRBY", self.keys.stats, "events_applied", got.applied)
        dups = got.read - got.applied - got.expired
        if dups:
            c.cmd("HINCRBY", self.keys.stats, "events_dup", dups)
        if got.expired:
            c.cmd("HINCRBY", self.keys.stats, "events_expired", got.expired)
        if got.late:
            c.cmd("HINCRBY", self.keys.stats, "events_late", got.late)
        self.commit(c, entries)

    def _write_seen(self, c: Commit, checked: Fresh, newest_before: float) -> None:
        """Append the batch's new hashes to their buckets, seal the strings that are full
        or cold, and forget the buckets the partition's event time has left behind (at most
        DROP_CHUNKS_MAX strings a commit: events of a bucket not yet dropped are expired
        all the same)."""
        keys, p = self.keys, self.index
        gone = self.seen.expired(self.progress.newest, DROP_CHUNKS_MAX)
        index: list[Arg] = []
        newest = self.progress.newest
        for b, (before, new) in checked.added.items():
            if b in gone:
                continue
            # a backstop (partitions removed, clock entries off): a day after it is due
            left_s = expires_at(b, self.cfg.dedupe_window_s) - newest
            ttl = DAY_S + (max(math.ceil(left_s), 0) if math.isfinite(left_s) else DAY_S)
            for k, packed, full in chunk_writes(before, new):
                c.cmd("APPEND", keys.seen(p, b, k), packed)
                c.cmd("EXPIRE", keys.seen(p, b, k), ttl)
                if full:
                    c.cmd("SEAL", keys.seen(p, b, k))
            index += [b, before + len(new)]
        for b, k in self.seen.to_seal(newest_before, newest):
            c.cmd("SEAL", keys.seen(p, b, k))
        for b, n in gone.items():
            stored = checked.added[b][0] if b in checked.added else n
            if stored:
                c.cmd("UNLINK", *[keys.seen(p, b, k) for k in range(chunks_of(stored))])
        if gone:
            c.many("HDEL", keys.seen_index(p), sorted(gone))
        if index:
            c.many("HSET", keys.seen_index(p), index, width=2)
            ttl = math.ceil(self.cfg.dedupe_window_s + self.cfg.max_future_s) + DAY_S
            c.cmd("EXPIRE", keys.seen_index(p), ttl)

    def _advance_all(
        self, watermark: float, credits: list[Credit], changes: dict[str, Changes]
    ) -> dict[str, float]:
        """Every hosted channel's clock follows the watermark (only when some channel has a
        watch tick to pass: most batches pass none). Chat times too old to earn a bonus go:
        the horizon of each channel that forgot some."""
        trims: dict[str, float] = {}
        if watermark < self.next_tick_ts:
            return trims
        next_tick = math.inf
        for nc, channel in self.channels.items():
            earn = self.book.earn(channel.network, channel.channel)
            chg = changes.get(nc) or Changes()
            if channel.advance(watermark, earn, credits, chg):
                changes[nc] = chg
                horizon = watermark - earn.active_chatter_window_s - 3600
                if channel.forget_chatters_before(horizon):
                    trims[nc] = horizon
            next_tick = min(next_tick, channel.next_tick_ts(earn))
        self.next_tick_ts = next_tick
        return trims

    def _write_channels(
        self, c: Commit, changes: dict[str, Changes], trims: dict[str, float]
    ) -> None:
        """Each changed channel's state, presence, and chat and sign-of-life times: the times
        as one frame appended to each log (engine/timelog.py), or a snapshot replacing it."""
        keys = self.keys
        states: list[bytes | str] = []
        for nc, chg in changes.items():
            channel = self.channels[nc]
            states += [nc, channel_encoder.encode(channel.state)]
            if chg.present_set:
                flat: list[str] = [x for kv in chg.present_set.items() for x in kv]
                c.many("HSET", keys.presence(nc), flat, width=2)
            if chg.present_del:
                c.many("HDEL", keys.presence(nc), sorted(chg.present_del))
            chats, seen = self.logs[nc]
            if nc in self.legacy:
                self.legacy.discard(nc)
                c.cmd("SET", keys.chat_log(nc), chats.rewrite(channel.chatters))
                c.cmd("SET", keys.seen_log(nc), seen.rewrite(channel.seen))
                c.cmd("UNLINK", keys.chatters(nc), keys.present_seen(nc))
                continue
            horizon = trims.get(nc)
            if chg.chatted or horizon is not None:
                below = -math.inf if horizon is None else horizon
                whole, blob = chats.frame(channel.chatters, chg.chatted, (), below)
                c.cmd("SET" if whole else "APPEND", keys.chat_log(nc), blob)
            if chg.seen or chg.present_del:
                whole, blob = seen.frame(channel.seen, chg.seen, chg.present_del)
                c.cmd("SET" if whole else "APPEND", keys.seen_log(nc), blob)
        if states:
            c.many("HSET", keys.cstate, states, width=2)

    def _route(self, c: Commit, credits: list[Credit], accepted: list[int], publish: bool) -> None:
        """Credits to their member shards; every member shard hears the new watermark."""
        by_shard: dict[int, list[int]] = {}
        shards = self.cfg.member_shards
        for i, cr in enumerate(credits):
            by_shard.setdefault(shard_of(f"{cr.network}:{cr.user_id}", shards), []).append(i)
        mark = repr(self.progress.watermark)
        step = CREDITS_PER_ENTRY
        for m in range(shards):
            part = by_shard.get(m, [])
            if not part and not publish:
                continue
            for chunk, last in chunked(part, step):
                fields: list[Arg] = ["n", len(chunk)]
                if last:
                    fields += ["p", self.index, "w", mark]
                if chunk:
                    fields += [
                        "c", credit_encoder.encode([credits[j] for j in chunk]),
                        "a", credit_encoder.encode([accepted[j] for j in chunk]),
                    ]  # fmt: skip
                c.cmd("XADD", self.keys.credits(m), "*", *fields)


@dataclass(slots=True)
class StageA:
    """What a member shard's stage A released in one batch."""

    moved: list[tuple[float, str, int, tuple[Credit, int]]]
    """Channel credits for stage B, in (ts, network, id) order: stage A's entries."""
    own: list[tuple[float, str, tuple[Credit, int]]]
    """Referral credits for members of this shard."""
    sent: list[tuple[Credit, int]]
    """Referral credits for other member shards."""
    changed: set[str]
    linked: list[str] = field(default_factory=list)
    """Members waiting for their first earn since this release (into reflinked:{m})."""
    unlinked: list[str] = field(default_factory=list)
    """Members no longer waiting (out of reflinked:{m})."""


@dataclass(slots=True)
class Spend:
    """A transfer command read from credits:{m} (field `s`), with where to send its result."""

    transfer: Transfer
    reply_to: str


@dataclass(slots=True)
class Spent:
    """What a batch's spends produced: results to record and send, other accounts' deltas."""

    records: list[tuple[str, Record, str]]
    """(member key, record, reply stream) per spend, in stream order."""
    accounts: dict[str, int]
    legs: list[Transfer] = field(default_factory=list)
    """Credit legs of the gifts accepted (engine/spend.py `gift_leg`), for the recipients'
    shards: appended in the same commit as the debit, so each arrives exactly once."""


class MemberShard(StreamShard):
    """Reads credits:{m}; holds credits back until every channel partition's watermark has
    passed them, then applies them to its members in (ts, network, id) order. Spend commands
    (field `s`, engine/spend.py) on the same stream apply when read, after the batch's
    released credits, in stream order: each is recorded under its key (so a replay or retry
    has one effect), and its result is sent to the caller's reply stream, in the same commit
    as its state and ledger entry."""

    kind = "member"
    max_items_per_commit = 100_000  # state and a ledger log append: cheap per item
    roll_scan_count = 5_000

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        self.book = RuleBook.from_builtins(cfg.rules)
        self.members: dict[str, MemberState] = {}
        """The members the batch being applied touches, decoded (emptied at each commit)."""
        self.packed: dict[str, bytes] = {}
        """Every activated member's state as last committed, msgpack-encoded as in Redis: a
        cached member costs its encoding (~100 B), not a tree of decoded objects (~1 KB)
        that the garbage collector would walk as well. The oldest go past member_cache_max."""
        self.held_a: ReorderBuffer[tuple[Credit, int]] = ReorderBuffer(0.0)
        """Stage A: channel credits, until the channel partitions' watermark passes them."""
        self.held: ReorderBuffer[tuple[Credit, int]] = ReorderBuffer(0.0, after=self.held_a)
        """Stage B: every credit, until stage A's watermark of every member shard passes it."""
        self.progress = MemberProgress()
        self.linked: set[str] = set()
        """Members linked by a referral and waiting for their first earn (reflinked:{m}):
        the only ones whose channel credits stage A must see besides links."""
        self.loaded = False
        keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.pending = PendingLog(keys.pending("member", index))
        self.progress_field = f"member:{index}"
        super().__init__(cfg, index, keys.credits(index))

    def reset(self) -> None:
        self.members.clear()
        self.packed.clear()
        self.held_a.clear()
        self.held.clear()
        self.linked.clear()
        self.loaded = False

    def _ensure_loaded(self) -> None:
        if self.loaded:
            return
        raw = self.r.hget(self.keys.wmark, self.progress_field)
        self.progress = member_progress_decoder.decode(raw) if raw else MemberProgress()
        self._load_linked()
        parts = self.progress.partitions
        wanted = self.cfg.channel_shards
        self.progress.partitions = (parts + [NEVER] * wanted)[:wanted]
        marks, shards = self.progress.members, self.cfg.member_shards
        self.progress.members = (marks + [NEVER] * shards)[:shards]
        pr = self.progress
        self.held_a = ReorderBuffer(0.0, pr.stage_a)
        self.held = ReorderBuffer(0.0, pr.watermark, after=self.held_a)
        for held in self.pending.load(self.r, held_credits_decoder):
            for cr, ms in zip(held.items, held.accepted_ms, strict=True):
                if cr.ts < pr.watermark:
                    continue
                stage = (
                    self.held_a
                    if cr.ts >= pr.stage_a and cr.rule not in REWARD_RULES
                    else self.held
                )
                stage.push(cr.ts, credit_key(cr), (cr, ms))
        self.loaded = True

    def _load_linked(self) -> None:
        """The members waiting for their first earn, from reflinked:{m}; built from the
        member states by one scan when the shard count changed or the set predates it (a
        superset is harmless: stage A loads a member it need not)."""
        key, shards, pr = self.keys.ref_linked(self.index), self.cfg.member_shards, self.progress
        if pr.linked_for == shards:
            self.linked = {m.decode() for m in self.r.smembers(key)}
            return
        found: set[str] = set()
        for name, raw in self.r.hscan_iter(self.keys.mstate, count=self.roll_scan_count):
            if LINKED_NEEDLE in raw and state_decoder.decode(raw).referral.status == "linked":
                member = name.decode()
                if shard_of(member, shards) == self.index:
                    found.add(member)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if found:
                pipe.sadd(key, *found)
            pipe.execute()
        self.linked = found
        pr.linked_for = shards  # committed with the next batch (until then, built again)

    def _load(self, keys: set[str]) -> None:
        members, packed = self.members, self.packed
        missing = []
        for k in keys:
            if k not in members:
                raw = packed.get(k)
                if raw is None:
                    missing.append(k)
                else:
                    members[k] = state_decoder.decode(raw)
        for start in range(0, len(missing), 10_000):
            chunk = missing[start : start + 10_000]
            for key, raw in zip(chunk, hmget(self.r, self.keys.mstate, chunk), strict=True):
                if raw:
                    members[key] = state_decoder.decode(raw)
                    packed[key] = raw
                else:
                    members[key] = MemberState()
        excess = len(packed) - self.cfg.member_cache_max
        if excess > 0:  # passivate the oldest activations: their state is durable in Redis
            for key in list(itertools.islice(packed, excess)):
                del packed[key]

    def _committed(self, written: tuple[list[str], list[bytes]]) -> None:
        """The batch committed: what it wrote is the members' packed state now."""
        self.packed.update(zip(*written, strict=True))
        self.members.clear()

    def _admit(
        self, entries: Sequence[Entry], spends: list[Spend]
    ) -> tuple[list[tuple[Credit, int]], int]:
        held, parts, marks = self.held_a, self.progress.partitions, self.progress.members
        new: list[tuple[Credit, int]] = []
        pushed: list[tuple[float, str, int, tuple[Credit, int]]] = []
        rewards: list[tuple[float, str, tuple[Credit, int]]] = []
        late = 0
        watermark = held.watermark  # only advance_to below moves it, after the loop
        for _, fields in entries:
            command = fields.get(b"s")
            if command is not None:
                reply = fields.get(b"r", b"")
                spends.append(Spend(transfer_decoder.decode(command), reply.decode()))
                continue
            source = fields.get(b"q")
            if source is not None:  # from a member shard: referral credits, its stage-A mark
                self._admit_rewards(fields, rewards, new)
                q, mark = int(source), fields.get(b"w")
                if q < len(marks) and mark is not None:
                    marks[q] = max(marks[q], float(mark))
                continue
            blob = fields.get(b"c")
            if blob is not None:
                credits = credits_decoder.decode(blob)
                accepted = accepted_decoder.decode(fields[b"a"])
                seq = held.reserve(len(credits))
                for cr, ms in zip(credits, accepted, strict=True):
                    ts = cr.ts
                    if ts < watermark:  # late; a channel shard never sends one: its
                        late += 1  # watermark covers it (ReorderBuffer.admit)
                        ts = watermark
                        cr = msgspec.structs.replace(cr, ts=ts)
                    item = (cr, ms)
                    pushed.append((ts, credit_key(cr), seq, item))
                    seq += 1
                    new.append(item)
            mark = fields.get(b"w")
            if mark is not None:
                p = int(fields[b"p"])
                if p < len(parts):
                    parts[p] = max(parts[p], float(mark))
        held.push_numbered(pushed)
        held.advance_to(min(parts))
        self.held.push_all(rewards)
        return new, late

    def _admit_rewards(
        self, fields: dict[bytes, bytes], rewards: list[tuple[float, str, tuple[Credit, int]]],
        new: list[tuple[Credit, int]],
    ) -> None:  # fmt: skip
        """Referral credits another member shard's stage A sent: straight to stage B. None is
        late: they are dated at or after the mark the sender published before them."""
        blob = fields.get(b"c")
        if blob is None:
            return
        accepted = accepted_decoder.decode(fields[b"a"])
        for cr, ms in zip(credits_decoder.decode(blob), accepted, strict=True):
            assert cr.ts >= self.held.watermark, "a referral credit behind stage B"
            rewards.append((cr.ts, credit_key(cr), (cr, ms)))
            new.append((cr, ms))

    def _stage_a(self, new: list[tuple[Credit, int]]) -> StageA:
        """Release the channel credits the partitions' watermark passed, in (ts, network, id)
        order, for stage B, and let referrals see them (engine/referral.py): the referral
        credits they cause for members of this shard go to stage B too (and to the pending
        log, in `new`); those for other shards are sent with this shard's mark."""
        released = self.held_a.release_entries()
        got = StageA(released, [], [], set())
        rules = [e[3][0].rule for e in released]
        linked = self.linked
        if not linked and STAGE_A_RULES.isdisjoint(rules):
            return got  # the common case (a watch tick, chat): nothing a referral waits for
        keys = [f"{cr.network}:{cr.user_id}" for _, _, _, (cr, _) in released]
        picked, targets = must_see(rules, keys, linked)
        if not picked:
            return got
        pending = ((cr.rule, f"{cr.network}:{cr.user_id}") for _, _, (cr, _) in self.held.held())
        earned = earned_pending(targets, pending) if targets else set()
        self._load({keys[i] for i in picked})
        members, book, shards = self.members, self.book, self.cfg.member_shards
        for i in picked:
            cr, ms = released[i][3]
            key = keys[i]
            ref = members[key].referral
            if cr.rule == LINK and key in earned:
                ref.seen = True  # a channel credit before the link, that stage B has yet to apply
            got.changed.add(key)
            for o in on_credit(
                ref, cr.user_id, cr.rule, cr.other, book.network(cr.network).referral
            ):
                made = Credit(
                    o.id, cr.network, cr.channel, o.user_id, "", cr.ts, o.rule, o.points, cr.user_id
                )
                if shard_of(f"{cr.network}:{o.user_id}", shards) == self.index:
                    got.own.append((made.ts, credit_key(made), (made, ms)))
                    new.append((made, ms))
                else:
                    got.sent.append((made, ms))
        for key in got.changed:
            waiting = members[key].referral.status == "linked"
            if waiting and key not in linked:
                linked.add(key)
                got.linked.append(key)
            elif not waiting and key in linked:
                linked.discard(key)
                got.unlinked.append(key)
        return got

    def _stage_b(self, a: StageA) -> list[tuple[Credit, int]]:
        """What stage B releases (its watermark already moved). When it holds nothing and
        stage A's credits are all past its watermark, they are released as they come (in
        order already) without a second reorder buffer: always so with one member shard."""
        moved, held = a.moved, self.held
        if not len(held) and not a.own and moved and moved[-1][0] < held.watermark:
            return [entry[3] for entry in moved]
        held.push_entries(moved)
        held.push_all(a.own)
        return held.release()

    def _send_rewards(self, c: Commit, out: list[tuple[Credit, int]], publish: bool) -> None:
        """Referral credits to the member shards of their recipients, and this shard's
        stage-A mark to every other member shard (they wait for it in stage B)."""
        by_shard: dict[int, list[tuple[Credit, int]]] = {}
        shards = self.cfg.member_shards
        for item in out:
            by_shard.setdefault(
                shard_of(f"{item[0].network}:{item[0].user_id}", shards), []
            ).append(item)
        mark = repr(self.progress.stage_a)
        for m in range(shards):
            part = by_shard.get(m, [])
            if m == self.index or (not part and not publish):
                continue
            for chunk, last in chunked(part, CREDITS_PER_ENTRY):
                fields: list[Arg] = ["q", self.index, "n", len(chunk)]
                if last:
                    fields += ["w", mark]
                if chunk:
                    fields += [
                        "c", credit_encoder.encode([cr for cr, _ in chunk]),
                        "a", credit_encoder.encode([ms for _, ms in chunk]),
                    ]  # fmt: skip
                c.cmd("XADD", self.keys.credits(m), "*", *fields)

    def process(self, entries: Sequence[Entry]) -> None:
        self._ensure_loaded()
        spends: list[Spend] = []
        stage_a_before = self.progress.stage_a
        new, late = self._admit(entries, spends)
        staged = self._stage_a(new)
        sent, changed = staged.sent, staged.changed
        pr = self.progress
        pr.stage_a = self.held_a.watermark
        pr.members[self.index] = pr.stage_a
        self.held.advance_to(min(pr.members))
        watermark = self.held.watermark
        released = self._stage_b(staged)
        spenders = {f"{sp.transfer.network}:{sp.transfer.user_id}" for sp in spends}
        keys = [f"{cr.network}:{cr.user_id}" for cr, _ in released]
        self._load(set(keys) | spenders | changed)
        out = Applied()
        book, members = self.book, self.members
        rules: dict[tuple[str, str], tuple[NetworkRules, EarnRules]] = {}
        for (cr, _), key in zip(released, keys, strict=True):
            found = rules.get((cr.network, cr.channel))
            if found is None:
                found = (book.network(cr.network), book.earn(cr.network, cr.channel))
                rules[(cr.network, cr.channel)] = found
            state = members[key]
            earn(state.referral, cr.rule)
            apply_credit(state, cr, found[0], found[1], out)
        changed.update(keys)
        spent = self._spend(spends, out, changed)
        self.progress.watermark = watermark
        changed |= self._roll_over(watermark)
        c = Commit()
        written = self._write(c, changed, out)
        self._write_spent(c, spent)
        self._send_rewards(c, sent, publish=pr.stage_a > stage_a_before)
        if staged.linked:
            c.cmd("SADD", self.keys.ref_linked(self.index), *staged.linked)
        if staged.unlinked:
            c.cmd("SREM", self.keys.ref_linked(self.index), *staged.unlinked)
        last_id = entries[-1][0]
        self.pending.append(c, last_id, [item for item in new if item[0].ts >= watermark])
        self.pending.trim(c, watermark, last_id)
        c.cmd("HSET", self.keys.wmark, self.progress_field, progress_encoder.encode(self.progress))
        if late:
            c.cmd("HINCRBY", self.keys.stats, "credits_late", late)
        self._count(c, len(released), len(out.entries), [ms for _, ms in released])
        self.commit(c, entries)
        self._committed(written)

    def _spend(self, spends: list[Spend], out: Applied, changed: set[str]) -> Spent:
        """Apply the batch's transfers in stream order: a key recorded before (in Redis, or
        earlier in this batch) gets its recorded result (or `conflict`) and changes nothing."""
        spent = Spent([], {})
        if not spends:
            return spent
        rkeys = [
            self.keys.spend_record(f"{sp.transfer.network}:{sp.transfer.user_id}", sp.transfer.key)
            for sp in spends
        ]
        known: dict[str, Record] = {}
        for start in range(0, len(rkeys), RECORDS_PER_READ):
            chunk = rkeys[start : start + RECORDS_PER_READ]
            for k, raw in zip(chunk, self.r.mget(chunk), strict=True):
                if raw is not None:
                    known[k] = record_decoder.decode(raw)
        for sp, rkey in zip(spends, rkeys, strict=True):
            t = sp.transfer
            nu = f"{t.network}:{t.user_id}"
            before = known.get(rkey)
            if before is not None:
                spent.records.append((rkey, Record(b"", replay(before, t)), sp.reply_to))
                continue
            state = self.members[nu]
            result, entry = apply_transfer(state, t)
            if result.ok:  # with or without an entry: a free item moves only guard counters
                changed.add(nu)
            if t.lifetime and result.ok:
                tiers = self.book.network(t.network).tiers
                change = retier(state, t.network, t.user_id, tiers, t.ts)
                if change is not None:
                    out.tier_changes.append(change)
            record = Record(digest(t), result)
            known[rkey] = record
            spent.records.append((rkey, record, sp.reply_to))
            if entry is not None:
                out.entries.append(entry)
                for account, delta in account_deltas(t):
                    spent.accounts[account] = spent.accounts.get(account, 0) + delta
                if t.to_user:
                    spent.legs.append(gift_leg(t))
        return spent

    def _write_spent(self, c: Commit, spent: Spent) -> None:
        """Idempotency records (new ones only; a replay's digest is empty), other accounts'
        balances, and each result on its caller's reply stream."""
        keys, ttl = self.keys, self.cfg.spend_record_ttl_s
        replies: dict[str, list[tuple[str, Result]]] = {}
        for rkey, record, reply_to in spent.records:
            if record.digest:
                c.cmd("SET", rkey, spend_encode(record), "EX", ttl)
            if reply_to:
                replies.setdefault(reply_to, []).append((rkey, record.result))
        for reply_to, results in sorted(replies.items()):
            for i in range(0, len(results), CREDITS_PER_ENTRY):
                c.cmd(
                    "XADD", reply_to, "MAXLEN", "~", REPLY_MAXLEN, "*",
                    "rs", replies_encoder.encode(results[i : i + CREDITS_PER_ENTRY]),
                )  # fmt: skip
            c.cmd("EXPIRE", reply_to, REPLY_TTL_S)
        for account, delta in sorted(spent.accounts.items()):
            if delta:
                c.cmd("HINCRBY", keys.accounts, account, delta)
        for leg in spent.legs:
            m = shard_of(f"{leg.network}:{leg.user_id}", self.cfg.member_shards)
            c.cmd("XADD", keys.credits(m), "*", "s", spend_encode(leg), "r", "", "n", 1)
        if spent.records:
            c.cmd("HINCRBY", keys.stats, "spends_applied", len(spent.records))

    def _roll_over(self, watermark: float) -> set[str]:
        """The daily streak rollover, once the watermark enters a new UTC day: members who
        missed the day before lose their streak. It scans every member state in Redis (not
        only the cached ones), a bounded chunk per commit; this shard changes only its own."""
        if not self.cfg.streak_rollover or watermark == NEVER:
            return set()
        pr = self.progress
        today = int(watermark // DAY_S)
        if pr.roll_day < 0:
            pr.roll_day = today
        elif today > pr.roll_day and pr.roll_cursor == 0:
            pr.roll_day = today
            pr.roll_cursor = -1  # started: the first HSCAN has cursor 0
        if pr.roll_cursor == 0:
            return set()
        cursor, found = self.r.hscan(
            self.keys.mstate, max(pr.roll_cursor, 0), count=self.roll_scan_count
        )
        pr.roll_cursor = int(cursor)
        changed: set[str] = set()
        shards = self.cfg.member_shards
        for raw_key, raw in found.items():
            key = raw_key.decode()
            if shard_of(key, shards) != self.index:
                continue
            state = self.members.get(key)
            if state is None:
                state = self.members[key] = state_decoder.decode(raw)
            if roll_over(state, pr.roll_day):
                changed.add(key)
        return changed

    def _write(self, c: Commit, changed: set[str], out: Applied) -> tuple[list[str], list[bytes]]:
        """Member state and the batch's ledger entries (one blob on ledgerlog:{m}); the
        leaderboards are projected from it by LedgerProjector, and the ledger sink archives it.
        Returns the members' states as written (what `_committed` keeps once they are)."""
        keys = self.keys
        fields = list(changed)
        blobs = [state_encoder.encode(self.members[k]) for k in fields]
        c.pairs("HSET", keys.mstate, fields, blobs)
        for i in range(0, len(out.entries), CREDITS_PER_ENTRY):
            chunk = out.entries[i : i + CREDITS_PER_ENTRY]
            blob = ledger_encoder.encode(chunk)
            c.cmd("XADD", keys.ledgerlog(self.index), "*", "l", blob, "n", len(chunk), "r", 1)
        treasury: dict[str, int] = {}
        for e in out.entries:
            if e.debit.startswith(TREASURY_PREFIX):
                treasury[e.network] = treasury.get(e.network, 0) - e.amount
        for network, amount in treasury.items():
            c.cmd("HINCRBY", keys.treasury, network, amount)
        self._write_flags(c, out.flags)
        if out.withheld:
            c.cmd("HINCRBY", keys.stats, "watch_points_withheld", out.withheld)
        self._notice_rewards(c, out)
        if out.chat_withheld:
            c.cmd("HINCRBY", keys.stats, "chat_points_withheld", out.chat_withheld)
        for tc in out.tier_changes:
            c.cmd(
                "XADD", keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*",
                "tier", credit_encoder.encode(tc),
            )  # fmt: skip
        return fields, blobs

    def _write_flags(self, c: Commit, flags: list[Flag]) -> None:
        """Each flagged member's last flag of the batch into its network's quality hash (a
        cleared one out of it): one HSET and one HDEL a network, not a command a member."""
        by_network: dict[str, dict[str, Flag]] = {}
        for f in flags:
            users = by_network.get(f.network)
            if users is None:
                users = by_network[f.network] = {}
            users[f.user_id] = f
        for network, users in sorted(by_network.items()):
            key = self.keys.k("quality", network)
            flat: list[Arg] = []
            cleared: list[str] = []
            for user, f in users.items():
                if f.reasons:
                    flat += (user, flag_encoder.encode(f))
                else:
                    cleared.append(user)
            if flat:
                c.many("HSET", key, flat, width=2)
            if cleared:
                c.many("HDEL", key, cleared)

    def _notice_rewards(self, c: Commit, out: Applied) -> None:
        """Refused credits (engine/gating.py), one notice an entry. (The reward_earned
        notices of the batch's ledger entries are the ledger projector's to write: the
        entries' `r` field says so.)"""
        for item in out.refused:
            c.cmd("XADD", self.keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*",
                  "credit_refused", notice_encoder.encode(item))  # fmt: skip
        if out.refused:
            c.cmd("HINCRBY", self.keys.stats, "custom_gated", len(out.refused))

    def _count(self, c: Commit, credits: int, entries: int, accepted_ms: list[int]) -> None:
        """Counters, and the ingest->credit latency of each credit applied (histogram)."""
        c.cmd("HINCRBY", self.keys.stats, "credits_applied", credits)
        c.cmd("HINCRBY", self.keys.stats, "entries", entries)
        if not accepted_ms:
            return
        lat = np.maximum(0, int(time.time() * 1000) - np.asarray(accepted_ms, dtype=np.int64))
        counts = np.bincount(np.searchsorted(_BUCKETS_MS, lat), minlength=len(_BUCKETS_MS) + 1)
        for i in np.flatnonzero(counts).tolist():  # the first bucket whose bound is >= ms
            bucket = str(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else "inf"
            c.cmd("HINCRBY", self.keys.latency, bucket, int(counts[i]))
        c.cmd("HINCRBY", self.keys.latency, "sum_ms", int(lat.sum()))
        c.cmd("HINCRBY", self.keys.latency, "count", len(lat))
        c.cmd("HMAX", self.keys.latency, "max_ms", int(lat.max()))


_BUCKETS_MS = np.asarray(LATENCY_BUCKETS_MS, dtype=np.int64)
notice_encoder = msgspec.json.Encoder()


class LedgerProjector(StreamShard):
    """Projects the ledger log of member shard m (ledgerlog:{m}) into the channel
    leaderboards of all time, from the points members earned (entries from a treasury;
    spends and transfers are not earnings): one ZINCRBY per member and channel a batch; and
    appends the `reward_earned` notices of its entries (engine/rewards.py),
    NOTICES_PER_ENTRY to a stream entry (a JSON array: a new member's welcome and streak
    would otherwise cost two appends each). Exactly once, like the shards: offset and
    writes commit together. Balances never wait for it (a watch tick's notices once cost
    the member shards 40% of their commit's bytes); leaderboards and notices trail by a
    batch. A member's points per channel are kept in its
    state (MemberState.earned_in). Ledger pages and the boards of a day, week or month are
    not projected: they are read from the archive and the log's unarchived tail
    (gateway/reads.py), so Redis holds no entry per member, channel and day."""

    kind = "ledger"
    group = "projector"
    nice = 5
    """Projections may trail; balances should not wait for them: the projector gives way
    to the shards when CPU is short."""

    def __init__(self, cfg: RuntimeConfig, index: int) -> None:
        super().__init__(cfg, index, Keys.of(cfg.namespace, cfg.redis_url).ledgerlog(index))

    def process(self, entries: Sequence[Entry]) -> None:
        keys = self.keys
        earned: dict[tuple[str, str], int] = {}  # (member, channel) -> points
        notices: list[RewardEarned] = []
        count = 0
        for _, fields in entries:
            batch = ledger_decoder.decode(fields[b"l"])
            if b"r" in fields:  # written since the reward notices are the projector's
                notices += rewards(batch)
            for e in batch:
                count += 1
                if not e.debit.startswith(TREASURY_PREFIX):
                    continue
                k = (e.credit[7:], e.channel)  # "member:{network}:{user}"
                earned[k] = earned.get(k, 0) + e.amount
        c = Commit()
        for (nu, channel), amount in earned.items():
            network, _, uid = nu.partition(":")
            c.cmd("ZINCRBY", keys.lb_all(f"{network}:{channel}"), amount, uid)
        c.cmd("HINCRBY", keys.stats, "entries_projected", count)
        for start in range(0, len(notices), NOTICES_PER_ENTRY):
            c.cmd("XADD", keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*", "reward_earned",
                  notice_encoder.encode(notices[start : start + NOTICES_PER_ENTRY]))  # fmt: skip
        self.commit(c, entries)
