"""The raffle actor: hosts every raffle (engine/raffle.py), driven by a durable command log.

Commands (create, open, close, draw, cancel, buy, enter) are appended to the stream
`rafflecmd` by the gateway (`RaffleClient`), by the scheduler (the automatic close) and by
the channel shards (keyword entries from chat); each may name a reply stream. RaffleShard (one consumer,
a StreamShard: fenced commits, heartbeats, dead letters) applies them in log order:
decode -> engine -> spends -> one commit of the raffles' state, the replies and its
offset. Exactly once through kill -9: a batch whose commit did not land is applied again
from the committed state, and everything it sent out before the commit is idempotent:
spends are keyed (`rf:{raffle}:{purpose}`), and a buy's quote depends only on the
committed state and the command (its time and the member's tier travel in it), so the
replayed transfer is the same one and the member shard answers it with its recorded
result.

Ticket sales are spends (actors/spend.py): debit member -> account `raffle:{net}:{id}`
with a guard on the member (tickets bought in this raffle <= max per member), answered
only once durable. Cancel credits every paid point back; a points prize is credited to
each winner from the raffle's account (which thus holds sales minus prizes).

Redis (under the namespace):
rafflecmd            stream; field `c` = msgpack Command, `r` = reply stream (optional).
rf:{net}:{id}        string; msgpack engine.raffle.Raffle without holdings (the meta).
rfh:{net}:{id}       hash; user_id -> msgpack Holding (the entries).
rfseed:{net}:{id}    string; the secret seed (hex) until the draw publishes it.
rfbuy:{net}:{id}     hash; "{user_id} {key}" -> msgpack BuyRecord (idempotent purchases).
rfidx:{net}          zset; raffle id -> created_at.
rfwon:{net}          hash; user_id -> when they last won (winner cooldown).
rfreply:{id}         stream; replies to one client (field k = request id, r = msgpack Reply).
rfkw                 hash; "{net}:{channel}|{id}" -> msgpack (keyword, opened_at) of every open
                     keyword raffle: what the channel shards look for.
rfsub:{net}          hash; user_id -> unix seconds until which the member counts as a subscriber
                     (SUBSCRIBER_S after their latest `sub` event), kept by the channel
                     shards: the gateway gives subscriber luck by it.

Keyword raffles: each channel shard reads `rfkw` as it reads a batch of its ingest stream
(KeywordFeed). While a keyword raffle is open in a channel, a fresh chat there whose first
word is the keyword (exactly), dated at or after the open, becomes an `enter` command (key
"keyword": repeats answer as recorded), appended in the shard's commit with its offset; the
shard records who subscribes (rfsub) the same way (engine/raffle_feed.py). Earlier versions
read the ingest streams a second time for this, through a consumer group `raffle`: the
channel shards remove that group as they start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import msgspec
import redis
import redis.asyncio as aioredis

from actors import health
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.lua import Commit
from actors.notices import NOTICES_MAXLEN
from actors.redisconn import connect
from actors.spend import SpendTimeout, SyncSpendClient
from actors.stream import Entry, StreamShard
from engine import raffle as eng
from engine.events import Chat
from engine.member import MemberState, state_decoder
from engine.raffle import Beacon, Raffle, RaffleError, Terms
from engine.raffle_feed import OpenKeywords
from engine.spend import Guard, Transfer

log = logging.getLogger(__name__)

Op = Literal["create", "open", "close", "draw", "cancel", "buy", "enter"]
LIFECYCLE_NOTICES = {
    "open": "raffle_opened",
    "close": "raffle_closed",
    "cancel": "raffle_cancelled",
}
"""Admin ops that append a notice (the draw appends `raffle_drawn` with its winners)."""
REFUNDS_PER_SUBMIT = 2_000
GUARD_KEEP_S = 400 * 86_400
"""How long a member shard keeps a raffle's ticket counter after the last purchase."""
REPLY_TTL_S = 3_600
CMD_STREAM_MAXLEN = 1_000_000


class Command(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing asked of the raffle actor; `ts` is when it was asked (stamped by the
    sender): the time every rule of the command uses, so a replay decides the same."""

    op: Op
    network: str
    raffle: str
    ts: float
    rid: str = ""
    """Request id: the reply carries it."""
    terms: Terms | None = None
    user_id: str = ""
    key: str = ""
    """A purchase's idempotency key (per member)."""
    tickets: int = 0
    tier: int = 0
    subscriber: bool = False
    beacon: Beacon | None = None


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    rid: str
    code: str = "ok"
    message: str = ""
    field: str = ""
    body: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return self.code == "ok"


class BuyRecord(msgspec.Struct, frozen=True, array_like=True):
    digest: bytes
    reply: Reply


_enc = msgspec.msgpack.Encoder()
command_decoder = msgspec.msgpack.Decoder(Command)
reply_decoder = msgspec.msgpack.Decoder(Reply)
buy_decoder = msgspec.msgpack.Decoder(BuyRecord)


class RaffleKeys:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.commands = keys.k("rafflecmd")

    def meta(self, net: str, rid: str) -> str:
        return self.keys.k("rf", net, rid)

    def holdings(self, net: str, rid: str) -> str:
        return self.keys.k("rfh", net, rid)

    def seed(self, net: str, rid: str) -> str:
        return self.keys.k("rfseed", net, rid)

    def buys(self, net: str, rid: str) -> str:
        return self.keys.k("rfbuy", net, rid)

    def index(self, net: str) -> str:
        return self.keys.k("rfidx", net)

    def won(self, net: str) -> str:
        return self.keys.k("rfwon", net)

    def reply(self, client: str) -> str:
        return self.keys.k("rfreply", client)

    def subscribers(self, net: str) -> str:
        return self.keys.k("rfsub", net)

    @property
    def keywords(self) -> str:
        return self.keys.k("rfkw")


def account_of(network: str, raffle_id: str) -> str:
    return f"raffle:{network}:{raffle_id}"


def close_job_id(network: str, raffle_id: str) -> str:
    return f"raffle-close:{network}:{raffle_id}"


def buy_digest(cmd: Command) -> bytes:
    payload = (cmd.op, cmd.user_id, cmd.tickets)
    return hashlib.blake2b(_enc.encode(payload), digest_size=16).digest()


def load_meta(r: redis.Redis, rk: RaffleKeys, net: str, rid: str) -> Raffle | None:
    """A raffle without its holdings (enough for `summary`)."""
    raw = r.get(rk.meta(net, rid))
    return None if raw is None else eng.raffle_decoder.decode(raw)


def load_raffle(r: redis.Redis, rk: RaffleKeys, net: str, rid: str) -> Raffle | None:
    """A raffle's committed state (meta and holdings), or None."""
    with r.pipeline(transaction=False) as pipe:
        pipe.get(rk.meta(net, rid))
        pipe.hgetall(rk.holdings(net, rid))
        raw, held = pipe.execute()
    if raw is None:
        return None
    raffle = eng.raffle_decoder.decode(raw)
    raffle.holdings = {u.decode(): eng.holding_decoder.decode(h) for u, h in held.items()}
    return raffle


class _Batch:
    """What one batch of commands changes, written by one commit."""

    def __init__(self) -> None:
        self.c = Commit()
        self.meta: set[tuple[str, str]] = set()
        self.holdings: dict[tuple[str, str], set[str]] = {}
        self.replies: list[tuple[str, Reply]] = []
        self.buys: dict[tuple[str, str, str], BuyRecord] = {}
        """Purchases recorded by this batch (not yet committed)."""

    def touch(self, net: str, rid: str, user: str | None = None) -> None:
        self.meta.add((net, rid))
        if user is not None:
            self.holdings.setdefault((net, rid), set()).add(user)


class RaffleShard(StreamShard):
    """The raffle actor: reads `rafflecmd`, applies each command to its raffle."""

    kind = "raffle"
    max_items_per_commit = 500

    def __init__(self, cfg: RuntimeConfig, index: int = 0) -> None:
        keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.rk = RaffleKeys(keys)
        self.raffles: dict[tuple[str, str], Raffle | None] = {}
        r = connect(cfg.redis_url)
        self.spends = SyncSpendClient(r, keys, cfg.member_shards)
        super().__init__(cfg, index, self.rk.commands)  # starts the loop: everything set first

    def reset(self) -> None:
        self.raffles.clear()

    def _keyword_registry(self, c: Commit, raffle: Raffle) -> None:
        t = raffle.terms
        if t.kind != "keyword":
            return
        field = f"{t.network}:{t.channel}|{t.id}"
        if raffle.status == "open":
            c.cmd("HSET", self.rk.keywords, field, _enc.encode((t.keyword, raffle.opened_at)))
        else:
            c.cmd("HDEL", self.rk.keywords, field)

    # -- state ----------------------------------------------------------------------------
    def _get(self, net: str, rid: str) -> Raffle | None:
        k = (net, rid)
        if k not in self.raffles:
            self.raffles[k] = load_raffle(self.r, self.rk, net, rid)
        return self.raffles[k]

    def _need(self, cmd: Command) -> Raffle:
        raffle = self._get(cmd.network, cmd.raffle)
        if raffle is None:
            raise RaffleError("raffle_not_found", f"no raffle {cmd.raffle!r}", "raffle")
        return raffle

    def _submit(self, transfers: list[Transfer]) -> list[Any]:
        """Spends, in chunks; a timeout is no fault of the command (retried, not counted)."""
        if not transfers:
            return []
        out: list[Any] = []
        for i in range(0, len(transfers), REFUNDS_PER_SUBMIT):
            try:
                out += self.spends.submit_many(transfers[i : i + REFUNDS_PER_SUBMIT])
            except SpendTimeout as err:
                raise redis.TimeoutError(f"raffle spend: {err}") from err
        return out

    # -- the loop ---------------------------------------------------------------------------
    def process(self, entries: Sequence[Entry]) -> None:
        batch = _Batch()
        cmds: list[tuple[Command, str]] = []
        for _, fields in entries:
            cmd = command_decoder.decode(fields[b"c"])
            reply_to = fields.get(b"r", b"").decode()
            cmds.append((cmd, reply_to))
        i = 0
        while i < len(cmds):
            if cmds[i][0].op in ("buy", "enter"):
                j, users = i, set()
                while j < len(cmds) and cmds[j][0].op in ("buy", "enter"):
                    u = (cmds[j][0].network, cmds[j][0].user_id)
                    if u in users:
                        break  # a member's next purchase is quoted after the first settles
                    users.add(u)
                    j += 1
                self._buys(cmds[i:j], batch)
                i = j
            else:
                cmd, reply_to = cmds[i]
                try:
                    body = self._admin(cmd, batch)
                    reply = Reply(cmd.rid, body=body)
                except RaffleError as err:
                    reply = Reply(cmd.rid, err.code, err.message, err.field or "")
                batch.replies.append((reply_to, reply))
                i += 1
        self._write(batch)
        self.commit(batch.c, entries)

    def _write(self, batch: _Batch) -> None:
        c = batch.c
        for net, rid in sorted(batch.meta):
            raffle = self.raffles.get((net, rid))
            if raffle is None:
                continue
            meta = msgspec.structs.replace(raffle, holdings={})
            c.cmd("SET", self.rk.meta(net, rid), eng.raffle_encoder.encode(meta))
            users = sorted(batch.holdings.get((net, rid), ()))
            gone = [u for u in users if u not in raffle.holdings]
            kept = [u for u in users if u in raffle.holdings]
            if kept:
                blobs = [eng.raffle_encoder.encode(raffle.holdings[u]) for u in kept]
                c.pairs("HSET", self.rk.holdings(net, rid), kept, blobs)
            if gone:
                c.many("HDEL", self.rk.holdings(net, rid), gone)
        for reply_to, reply in batch.replies:
            if reply_to:
                c.cmd("XADD", reply_to, "MAXLEN", "~", 10_000, "*", "k", reply.rid,
                      "r", _enc.encode(reply))  # fmt: skip
                c.cmd("EXPIRE", reply_to, REPLY_TTL_S)
        c.cmd("XTRIM", self.stream, "MAXLEN", "~", CMD_STREAM_MAXLEN)

    # -- admin ------------------------------------------------------------------------------
    def _admin(self, cmd: Command, batch: _Batch) -> dict[str, Any]:
        net, rid, now = cmd.network, cmd.raffle, cmd.ts
        c = batch.c
        if cmd.op == "create":
            if cmd.terms is None:
                raise RaffleError("bad_terms", "create needs terms", "terms")
            if self._get(net, rid) is not None:
                raise RaffleError("raffle_exists", f"raffle {rid!r} exists", "id")
            raffle = eng.create(cmd.terms, now)
            self.raffles[(net, rid)] = raffle
            batch.touch(net, rid)
            c.cmd("ZADD", self.rk.index(net), raffle.created_at, rid)
            return summary(raffle)
        raffle = self._need(cmd)
        if cmd.op == "open":
            seed = os.urandom(32).hex()
            eng.open_raffle(raffle, eng.commitment_of(seed), now)
            c.cmd("SET", self.rk.seed(net, rid), seed)
            if raffle.terms.close_at:
                self._schedule_close(c, net, rid, raffle.terms.close_at)
        elif cmd.op == "close":
            self._close(raffle, now, batch)
        elif cmd.op == "draw":
            self._draw(raffle, cmd, batch)
        elif cmd.op == "cancel":
            refunds = eng.cancel(raffle, now)
            self._refund(raffle, refunds, "cancel")
        else:
            raise RaffleError("bad_op", f"unknown op {cmd.op!r}", "op")
        batch.touch(net, rid)
        self._keyword_registry(c, raffle)
        if cmd.op in LIFECYCLE_NOTICES:
            self._notice(c, LIFECYCLE_NOTICES[cmd.op], raffle, now)
        return summary(raffle)

    def _notice(self, c: Commit, kind: str, raffle: Raffle, now: float) -> None:
        """A raffle's lifecycle notice (the live feed shows it to the network and its members):
        opened with the published commitment, closed with the tickets sold, cancelled."""
        terms = raffle.terms
        notice: dict[str, Any] = {"network": terms.network, "raffle": terms.id,
                                  "title": terms.title, "channel": terms.channel,
                                  "status": raffle.status, "ts": now}  # fmt: skip
        if kind == "raffle_opened":
            notice["commitment"] = raffle.commitment
            notice["price_points"] = terms.price_points
        elif kind == "raffle_closed":
            notice["tickets"], notice["entrants"] = raffle.tickets, raffle.entrants
        c.cmd("XADD", self.keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*",
              kind, msgspec.json.encode(notice))  # fmt: skip

    def _schedule_close(self, c: Commit, net: str, rid: str, due: float) -> None:
        from actors.scheduler import Job, job_encoder  # no cycle at import time

        job = Job(close_job_id(net, rid), "raffle_close", 0.0, {"network": net, "raffle": rid})
        c.cmd("HSET", self.keys.sched_jobs, job.id, job_encoder.encode(job))
        c.cmd("ZADD", self.keys.sched_due, "NX", due, job.id)

    def _close(self, raffle: Raffle, now: float, batch: _Batch) -> None:
        net, rid = raffle.terms.network, raffle.terms.id
        terms = raffle.terms
        if terms.kind == "giveaway" and raffle.status == "open":
            eng.enter_viewers(raffle, self._viewers(net, terms.channel))
        last_won: dict[str, float] = {}
        if terms.winner_cooldown_s and raffle.holdings:
            users = sorted(raffle.holdings)
            got = self.r.hmget(self.rk.won(net), users)
            last_won = {u: float(w) for u, w in zip(users, got, strict=True) if w is not None}
        before = set(raffle.holdings)
        refunds = eng.close(raffle, now, last_won)
        self._refund(raffle, refunds, "excluded")
        for u in before | set(raffle.holdings):
            batch.touch(net, rid, u)

    def _viewers(self, net: str, channel: str) -> list[tuple[str, int, bool]]:
        """Everyone present in the channel now, with their tier."""
        present = sorted(u.decode() for u in self.r.hkeys(self.keys.presence(f"{net}:{channel}")))
        out: list[tuple[str, int, bool]] = []
        for start in range(0, len(present), 10_000):
            chunk = present[start : start + 10_000]
            raws = self.r.hmget(self.keys.mstate, [f"{net}:{u}" for u in chunk])
            for u, raw in zip(chunk, raws, strict=True):
                state: MemberState = state_decoder.decode(raw) if raw else MemberState()
                out.append((u, state.tier, False))
        return out

    def _refund(self, raffle: Raffle, refunds: list[eng.Refund], why: str) -> None:
        net, rid = raffle.terms.network, raffle.terms.id
        transfers = [
            Transfer(
                key=f"rf:{rid}:refund",
                network=net,
                user_id=x.user_id,
                amount=x.points,
                direction="credit",
                account=account_of(net, rid),
                rule="refund",
                ref=rid,
                channel=raffle.terms.channel,
            )
            for x in refunds
            if x.points > 0
        ]
        for t, res in zip(transfers, self._submit(transfers), strict=True):
            assert res.code == "ok", f"refund {t.key} to {t.user_id} ({why}): {res.code}"

    def _draw(self, raffle: Raffle, cmd: Command, batch: _Batch) -> None:
        net, rid = cmd.network, cmd.raffle
        if cmd.beacon is None:
            eng.require_closed(raffle)  # a raffle not closed (yet, or any more) says so first
            raise RaffleError("bad_beacon", "draw needs a beacon value", "beacon")
        if raffle.status == "closed" and cmd.ts < raffle.closed_at:
            raise RaffleError("bad_beacon", "the beacon must be fixed after close", "beacon")
        raw = self.r.get(self.rk.seed(net, rid))
        seed = raw.decode() if raw else ""
        winners = eng.draw(raffle, seed, cmd.beacon, cmd.ts)
        terms = raffle.terms

        prizes = [
            Transfer(
                key=f"rf:{rid}:prize",
                network=net,
                user_id=w.user_id,
                amount=terms.prize_points,
                direction="credit",
                account=account_of(net, rid),
                rule="raffle_prize",
                ref=rid,
                channel=terms.channel,
            )
            for w in winners
            if terms.prize_points > 0
        ]
        for t, res in zip(prizes, self._submit(prizes), strict=True):
            assert res.code == "ok", f"prize {t.key} to {t.user_id}: {res.code}"
        c = batch.c
        if winners:
            c.many(
                "HSET", self.rk.won(net), [x for w in winners for x in (w.user_id, cmd.ts)], width=2
            )
        notice = {"network": net, "raffle": rid, "title": terms.title, "channel": terms.channel,
                  "winners": [w.user_id for w in winners], "prize_points": terms.prize_points,
                  "ts": cmd.ts}  # fmt: skip
        c.cmd("XADD", self.keys.notices, "MAXLEN", "~", NOTICES_MAXLEN, "*",
              "raffle_drawn", msgspec.json.encode(notice))  # fmt: skip

    # -- purchases --------------------------------------------------------------------------
    def _buys(self, cmds: list[tuple[Command, str]], batch: _Batch) -> None:
        """Quote a run of purchases (one per member), take the paid ones as spends in one
        round trip, record the tickets of those that went through."""
        planned: list[tuple[Command, str, eng.Purchase | None, Reply | None]] = []
        keys = [(c.network, c.raffle, f"{c.user_id} {c.key}") for c, _ in cmds]
        pipe = self.r.pipeline(transaction=False)
        for net, rid, field in keys:
            pipe.hget(self.rk.buys(net, rid), field)
        records = pipe.execute()
        for (cmd, reply_to), raw, k in zip(cmds, records, keys, strict=True):
            rec = batch.buys.get(k) if cmd.key else None
            if rec is None and raw is not None and cmd.key:
                rec = buy_decoder.decode(raw)
            if rec is not None:
                if rec.digest != buy_digest(cmd):
                    reply = Reply(cmd.rid, "idempotency_conflict",
                                  "this Idempotency-Key was used for another purchase",
                                  "Idempotency-Key")  # fmt: skip
                else:
                    reply = msgspec.structs.replace(rec.reply, rid=cmd.rid)
                planned.append((cmd, reply_to, None, reply))
                continue
            try:
                raffle = self._need(cmd)
                if cmd.op == "enter" and raffle.terms.kind != "keyword":
                    raise RaffleError(
                        "not_keyword", "this raffle is not entered by keyword", "kind"
                    )
                if cmd.op == "buy" and raffle.terms.kind == "keyword":
                    raise RaffleError(
                        "keyword_only", "this raffle is entered by its keyword in chat", "kind"
                    )
                last = self.r.hget(self.rk.won(cmd.network), cmd.user_id)
                purchase = eng.quote(
                    raffle, cmd.user_id, max(cmd.tickets, 1), tier=cmd.tier,
                    subscriber=cmd.subscriber, now=cmd.ts,
                    last_won_at=float(last) if last is not None else None,
                )  # fmt: skip
                planned.append((cmd, reply_to, purchase, None))
            except RaffleError as err:
                reply = Reply(cmd.rid, err.code, err.message, err.field or "")
                planned.append((cmd, reply_to, None, reply))
        paid = [(k, p) for k, p in enumerate(planned) if p[2] is not None and p[2].cost_points > 0]
        transfers = [self._ticket_transfer(p[0], p[2]) for _, p in paid if p[2] is not None]
        results = dict(zip([k for k, _ in paid], self._submit(transfers), strict=True))
        for k, (cmd, reply_to, purchase, reply) in enumerate(planned):
            if purchase is not None:
                res = results.get(k)
                if res is not None and res.code != "ok":
                    reply = Reply(cmd.rid, res.code, _SPEND_TEXT.get(res.code, res.code),
                                  _SPEND_FIELD.get(res.code, "user_id"),
                                  {"balance": res.balance,
                                   "cost_points": purchase.cost_points})  # fmt: skip
                else:
                    raffle = self._need(cmd)
                    held = eng.add_tickets(raffle, cmd.user_id, purchase)
                    batch.touch(cmd.network, cmd.raffle, cmd.user_id)
                    body: dict[str, Any] = {
                        "raffle": cmd.raffle, "user_id": cmd.user_id,
                        "bought": purchase.tickets, "cost_points": purchase.cost_points,
                        "tickets": held.tickets, "luck_pct": held.luck_pct,
                    }  # fmt: skip
                    if res is not None:
                        body["balance"] = res.balance
                    reply = Reply(cmd.rid, body=body)
            assert reply is not None
            # a keyword entry records only success: a member refused (short of points) may
            # type the keyword again later
            if cmd.key and reply.code != "idempotency_conflict" and (cmd.op == "buy" or reply.ok):
                rec = BuyRecord(buy_digest(cmd), msgspec.structs.replace(reply, rid=""))
                batch.buys[(cmd.network, cmd.raffle, f"{cmd.user_id} {cmd.key}")] = rec
                batch.c.cmd("HSET", self.rk.buys(cmd.network, cmd.raffle),
                            f"{cmd.user_id} {cmd.key}", _enc.encode(rec))  # fmt: skip
            batch.replies.append((reply_to, reply))

    def _ticket_transfer(self, cmd: Command, purchase: eng.Purchase) -> Transfer:
        raffle = self._need(cmd)
        terms = raffle.terms
        most = 1 if terms.kind == "keyword" else terms.max_tickets_per_member
        guard = Guard(f"raffle:{cmd.raffle}", limit=most, add=purchase.tickets, keep_s=GUARD_KEEP_S)
        return Transfer(
            key=f"rf:{cmd.raffle}:{cmd.op}:{cmd.key}", network=cmd.network,
            user_id=cmd.user_id, amount=purchase.cost_points, direction="debit",
            account=account_of(cmd.network, cmd.raffle),
            rule="raffle_ticket" if cmd.op == "buy" else "raffle_entry", ref=cmd.raffle,
            channel=terms.channel, guards=(guard,), ts=cmd.ts,
        )  # fmt: skip

    def stop(self) -> None:
        super().stop()
        self.spends.close()


_keyword_decoder = msgspec.msgpack.Decoder(tuple[str, int])
RETIRED_GROUP = "raffle"
"""The ingest streams' consumer group of the keyword feed of earlier versions."""
RETIRED_KIND = "rafflefeed"
"""That feed's consumer name, `rafflefeed-{p}` (its heartbeat and epoch)."""


class KeywordFeed:
    """The raffles' part of a channel shard's batch (engine/raffle_feed.py): the keyword
    raffles open when the batch is read, and the `enter` commands and subscribers its
    fresh events give, written in the channel shard's commit (with its offset: once)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.rk = RaffleKeys(keys)

    def retire(self, r: redis.Redis, stream: str, index: int) -> None:
        """Remove what the keyword feed of earlier versions left for channel partition
        `index`: the consumer group through which it read `stream` a second time (it would
        hold back the stream trimmer and `wait_idle` for good), its offset, and its
        heartbeat and epoch (the health report would call it dead)."""
        with contextlib.suppress(redis.ResponseError):  # no stream yet: no group either
            if r.xgroup_destroy(stream, RETIRED_GROUP):
                log.info("removed the retired consumer group %r of %s", RETIRED_GROUP, stream)
        with r.pipeline(transaction=False) as pipe:
            pipe.hdel(self.keys.k("offsets", RETIRED_GROUP), stream)
            pipe.hdel(health.health_key(self.keys), f"{RETIRED_KIND}-{index}")
            pipe.delete(health.epoch_key(self.keys, RETIRED_KIND, index))
            pipe.execute()

    def open_keywords(self, r: redis.Redis) -> OpenKeywords:
        out: OpenKeywords = {}
        for field, raw in r.hgetall(self.rk.keywords).items():
            nc, _, rid = field.decode().rpartition("|")
            keyword, opened = _keyword_decoder.decode(raw)
            out.setdefault(nc, []).append((rid, keyword, opened))
        return out

    def write(
        self, c: Commit, r: redis.Redis, hits: list[tuple[Chat, str]],
        subscribed: dict[tuple[str, str], int],
    ) -> None:  # fmt: skip
        """Each hit as an `enter` command (with its member's tier now), and each member's
        subscription end (HMAX: a replay or an older `sub` changes nothing)."""
        if hits:
            users = sorted({f"{ev.network}:{ev.user_id}" for ev, _ in hits})
            tiers = {
                u: (state_decoder.decode(raw).tier if raw else 0)
                for u, raw in zip(users, r.hmget(self.keys.mstate, users), strict=True)
            }
            for ev, rid in hits:
                cmd = Command(op="enter", network=ev.network, raffle=rid, ts=ev.ts,
                              user_id=ev.user_id, key="keyword", tickets=1,
                              tier=tiers[f"{ev.network}:{ev.user_id}"])  # fmt: skip
                c.cmd("XADD", self.rk.commands, "*", "c", _enc.encode(cmd), "n", 1)
        for (net, user), until in sorted(subscribed.items()):
            c.cmd("HMAX", self.rk.subscribers(net), user, until)


_SPEND_FIELD = {"insufficient_points": "tickets", "limit_reached": "tickets"}
"""The request field a refused purchase names (what the buyer can change)."""
_SPEND_TEXT = {
    "insufficient_points": "not enough points for these tickets",
    "limit_reached": "the member holds the most tickets this raffle allows",
    "cooldown": "the member may not buy again yet",
    "conflict": "this purchase key was used with another payload",
}


def summary(raffle: Raffle) -> dict[str, Any]:
    """A raffle as the admin API shows it (no leaves, no seed until drawn)."""
    p = eng.publish(raffle, with_leaves=False)
    out = cast("dict[str, Any]", msgspec.to_builtins(p))
    out.pop("leaves", None)
    out["created_at"] = raffle.created_at
    out["drawn_at"] = raffle.drawn_at
    out["entrants"] = raffle.entrants
    if raffle.excluded:
        out["excluded"] = raffle.excluded
    return out


# -- the senders ------------------------------------------------------------------------------
def append_command(r: redis.Redis, keys: Keys, cmd: Command) -> None:
    """Append a command that wants no reply (the scheduler's close, the keyword feed)."""
    r.xadd(RaffleKeys(keys).commands, {"c": _enc.encode(cmd), "n": 1})


class RaffleTimeout(Exception):
    """The raffle actor did not answer in time: the command may still apply."""


class RaffleClient:
    """Send commands to the raffle actor from asyncio code (a gateway process) and await
    the replies: one reply stream per client, read by one task."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, *, timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.redis = client
        self.rk = RaffleKeys(keys)
        self.timeout_s = timeout_s
        self.clock = clock
        self.reply_to = self.rk.reply(uuid.uuid4().hex)
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def send(self, cmd: Command) -> Reply:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="raffle-replies")
        rid = uuid.uuid4().hex
        cmd = msgspec.structs.replace(cmd, rid=rid, ts=cmd.ts or self.clock())
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self.redis.xadd(
                self.rk.commands, {"c": _enc.encode(cmd), "r": self.reply_to, "n": 1}
            )
            try:
                return await asyncio.wait_for(fut, self.timeout_s)
            except TimeoutError as err:
                raise RaffleTimeout(
                    f"no answer from the raffle actor in {self.timeout_s} s"
                ) from err
        finally:
            self._waiting.pop(rid, None)

    async def _read(self) -> None:
        last = "0-0"
        while True:
            try:
                got = await self.redis.xread({self.reply_to: last}, count=1000, block=1000)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("raffle_reply_read_failed error=%r", err)
                await asyncio.sleep(0.2)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    fut = self._waiting.pop(fields[b"k"].decode(), None)
                    if fut is not None and not fut.done():
                        fut.set_result(reply_decoder.decode(fields[b"r"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        with contextlib.suppress(Exception):
            await self.redis.delete(self.reply_to)


class SyncRaffleClient:
    """The same from threaded code (tests, the CLI): one command at a time."""

    def __init__(self, r: redis.Redis, keys: Keys, timeout_s: float = 60.0) -> None:
        self.r = r
        self.rk = RaffleKeys(keys)
        self.timeout_s = timeout_s
        self.reply_to = self.rk.reply(uuid.uuid4().hex)
        self.last = "0-0"
        self.lock = threading.Lock()

    def send(self, cmd: Command) -> Reply:
        with self.lock:
            rid = uuid.uuid4().hex
            cmd = msgspec.structs.replace(cmd, rid=rid, ts=cmd.ts or time.time())
            self.r.xadd(self.rk.commands, {"c": _enc.encode(cmd), "r": self.reply_to, "n": 1})
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                got = self.r.xread({self.reply_to: self.last}, count=100, block=500)
                for _, entries in got or []:
                    for entry_id, fields in entries:
                        self.last = entry_id.decode()
                        if fields[b"k"].decode() == rid:
                            return reply_decoder.decode(fields[b"r"])
            raise RaffleTimeout(f"no answer from the raffle actor in {self.timeout_s} s")
