"""Payouts in Redis (PayoutStore) and the payout actor that drives them (PayoutService).

engine/payout.py holds the rules and the state machine; this module keeps each payout's
state in Redis and moves it with compare-and-swap (SWAP: the stored bytes must be the ones
the mover read), so the actor, a restarted actor and admins (CLI, HTTP) never overwrite
each other's moves. The queues are indexes kept by the same script:

po:{id}        string; msgpack engine.payout.Payout; once final (settled, or voided and
               refunded) it expires after [payouts] retention_s, and the actor drops it from
               poidx: a key replayed after that is a new payout.
poidx          zset; id -> created_at (every payout; listing).
poreq          zset; id -> created_at of payouts `requested` (their points not reserved yet).
poq            zset; id -> next_at of payouts `reserved` (due then) or `sending` (leased until then).
porefund       zset; id -> voided at, of voided payouts whose refund is owed.
podead         zset; id -> died at, of `dead` payouts.
postats        hash; counters for the metrics: settled, retries, dead, reserved, refused,
               refunded, latency_ms_sum / latency_count (created -> settled).
poday:{n}:{nu}:{day}  string; points member nu requested on that UTC day (daily limit); TTL 2 days.

The actor's loop, every tick: reserve the requested payouts (one spend per payout, debit
member -> payout:{network}, key `payout:{id}`, submitted in one round trip), refund the
voided ones (credit, key `payout-void:{id}`), then claim the due payouts (reserved, or
sending with an expired lease: the sender died), mark them `sending` and deliver them with
at most `parallelism` in flight; each outcome moves the payout to settled, reserved (retry
after a backoff with jitter) or dead. Every spend is keyed, every delivery carries the
payout id for the sink to dedupe on: a kill -9 at any point repeats work, never effects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import redis

from actors.chain_sink import balances_key
from actors.config import PayoutConfig, RuntimeConfig
from actors.event_hooks import EventHooks, HookStore
from actors.keys import Keys
from actors.notices import NOTICES_MAXLEN
from actors.redisconn import connect
from actors.spend import SpendTimeout, SyncSpendClient
from engine import payout as eng
from engine import webhook
from engine.event_hooks import Delivery, Subscription
from engine.payout import Payout, PayoutError, PayoutRules, Request
from engine.rules import RuleBook
from engine.spend import OK as SPEND_OK

log = logging.getLogger(__name__)

DAY_TTL_S = 2 * 86_400
LIST_MAX = 1_000
SPENDS_PER_SUBMIT = 2_000
PRUNE_INTERVAL_S = 60.0
"""How often the actor drops expired payouts from the listing index."""

SWAP = r"""
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
local id, status = ARGV[3], ARGV[4]
if ARGV[9] ~= '0' and (status == 'settled' or (status == 'voided' and ARGV[7] == '0')) then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[9])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
local req, q, refund, dead = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if status == 'requested' then redis.call('ZADD', req, ARGV[5], id) else redis.call('ZREM', req, id) end
if status == 'reserved' or status == 'sending' then
  redis.call('ZADD', q, ARGV[6], id) else redis.call('ZREM', q, id) end
if ARGV[7] == '1' then redis.call('ZADD', refund, ARGV[8], id) else redis.call('ZREM', refund, id) end
if status == 'dead' then redis.call('ZADD', dead, ARGV[8], id) else redis.call('ZREM', dead, id) end
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[11], '*', 'payout_' .. status, ARGV[10])
end
return 1
"""
"""KEYS: po:{id}, poreq, poq, porefund, podead, notices. ARGV: expected bytes ('' = must not
exist), new bytes, id, new status, created_at, next_at, '1' if a refund is owed, updated_at,
retention in seconds of a payout that is final (settled, or voided and refunded; '0' =
forever), the notice's JSON ('' = none; appended as `payout_{status}`), the notices cap.
-> 1 if swapped, 0 if the payout changed meanwhile."""
NOTICE_STATUSES = frozenset({"settled", "dead", "voided"})
"""Outcomes that append a notice (the live feed shows them to the network and the member)."""


def payout_notice(old: Payout | None, new: Payout) -> bytes:
    """The JSON of the notice a move appends: b"" unless it reaches an outcome."""
    if new.status not in NOTICE_STATUSES or (old is not None and old.status == new.status):
        return b""
    return msgspec.json.encode({"network": new.network, "user_id": new.user_id,
                                "payout": new.id, "points": new.points, "sink": new.sink,
                                "status": new.status, "reason": new.reason,
                                "ts": new.updated_at})  # fmt: skip


class PayoutNotFound(LookupError):
    """No payout has that id."""


@dataclass(frozen=True, slots=True)
class PayoutKeys:
    keys: Keys

    def payout(self, pid: str) -> str:
        return self.keys.k("po", pid)

    @property
    def index(self) -> str:
        return self.keys.k("poidx")

    @property
    def requested(self) -> str:
        return self.keys.k("poreq")

    @property
    def queue(self) -> str:
        return self.keys.k("poq")

    @property
    def refunds(self) -> str:
        return self.keys.k("porefund")

    @property
    def dead(self) -> str:
        return self.keys.k("podead")

    @property
    def stats(self) -> str:
        return self.keys.k("postats")

    def day(self, network: str, user_id: str, day: int) -> str:
        nu = f"{network}:{user_id}"
        return self.keys.k("poday", len(nu), nu, day)


def _owes_refund(p: Payout) -> bool:
    return p.status == "voided" and p.refund


class PayoutStore:
    """Payouts in Redis: create (admitted by engine.payout), read, list, and move by CAS."""

    def __init__(
        self, r: redis.Redis, keys: Keys, rules: PayoutRules, retention_s: float = 0.0
    ) -> None:
        self.r = r
        self.pk = PayoutKeys(keys)
        self.rules = rules
        self.retention_s = int(retention_s)
        """A payout the actor makes final expires this long after (0: kept forever)."""
        self._swap = r.register_script(SWAP)

    # -- reads ----------------------------------------------------------------------------
    def get(self, pid: str) -> Payout | None:
        raw = self.r.get(self.pk.payout(pid))
        return None if raw is None else eng.payout_decoder.decode(raw)  # type: ignore[arg-type]

    def get_raw(self, pids: Sequence[str]) -> list[bytes | None]:
        if not pids:
            return []
        return self.r.mget([self.pk.payout(p) for p in pids])  # type: ignore[return-value]

    def list(self, status: str = "", limit: int = 100, offset: int = 0) -> list[Payout]:
        """Newest first; `status` filters (dead payouts come from their own index)."""
        limit = max(1, min(limit, LIST_MAX))
        if status == "dead":
            ids = self.r.zrevrange(self.pk.dead, offset, offset + limit - 1)
            return [p for p in self._load(ids) if p.status == "dead"]
        out: list[Payout] = []
        start = offset
        while len(out) < limit:
            ids = self.r.zrevrange(self.pk.index, start, start + LIST_MAX - 1)
            if not ids:
                break
            start += len(ids)
            out.extend(p for p in self._load(ids) if not status or p.status == status)
        return out[:limit]

    def counts(self) -> dict[str, int]:
        """How many payouts are in each status, and their points."""
        out: dict[str, int] = {}
        start = 0
        while True:
            ids = self.r.zrange(self.pk.index, start, start + LIST_MAX - 1)
            if not ids:
                return out
            start += len(ids)
            for p in self._load(ids):
                out[p.status] = out.get(p.status, 0) + 1
                out[f"{p.status}_points"] = out.get(f"{p.status}_points", 0) + p.points

    def _load(self, ids: Iterable[bytes | str]) -> list[Payout]:
        raws = self.get_raw([i.decode() if isinstance(i, bytes) else i for i in ids])
        return [eng.payout_decoder.decode(raw) for raw in raws if raw is not None]

    # -- writes ---------------------------------------------------------------------------
    def swap(self, old: Payout | None, new: Payout) -> bool:
        """Store `new` if the payout is still `old` (None: if it does not exist yet)."""
        pk = self.pk
        return bool(
            self._swap(
                keys=[
                    pk.payout(new.id),
                    pk.requested,
                    pk.queue,
                    pk.refunds,
                    pk.dead,
                    pk.keys.notices,
                ],
                args=[
                    b"" if old is None else eng.payout_encoder.encode(old),
                    eng.payout_encoder.encode(new),
                    new.id,
                    new.status,
                    new.created_at,
                    new.next_at,
                    "1" if _owes_refund(new) else "0",
                    new.updated_at,
                    self.retention_s,
                    payout_notice(old, new),
                    NOTICES_MAXLEN,
                ],
            )
        )

    def create(self, reqs: Sequence[Request], now: float) -> list[tuple[str, Payout | None]]:
        """Admit and record a batch of requests (each: its code and payout). The daily
        counters and the payouts are read, decided by the engine, and written in one
        optimistic transaction (retried if another writer touched them meanwhile)."""
        for req in reqs:
            eng.validate(req)
        day = eng.day_of(now)
        members = sorted({(q.network, q.user_id) for q in reqs})
        pids = sorted({eng.payout_id(q.network, q.key) for q in reqs})
        day_keys = [self.pk.day(n, u, day) for n, u in members]
        po_keys = [self.pk.payout(p) for p in pids]
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*day_keys, *po_keys)
                    # MGET by name: a cluster pipeline refuses pipe.mget (keys of several
                    # slots); these are all of the namespace's slot
                    used = pipe.execute_command("MGET", *day_keys) if day_keys else []
                    raws = pipe.execute_command("MGET", *po_keys) if po_keys else []
                    today = {m: int(v or 0) for m, v in zip(members, used, strict=True)}
                    existing = {
                        pid: eng.payout_decoder.decode(raw)
                        for pid, raw in zip(pids, raws, strict=True)
                        if raw is not None
                    }
                    out = eng.admit_many(self.rules, reqs, now, today, existing)
                    pipe.multi()
                    added: dict[tuple[str, str], int] = {}
                    for code, p in out:
                        if code != eng.OK or p is None or p.id in existing:
                            continue
                        existing[p.id] = p
                        m = (p.network, p.user_id)
                        added[m] = added.get(m, 0) + p.points
                        pipe.set(self.pk.payout(p.id), eng.payout_encoder.encode(p))
                        pipe.zadd(self.pk.index, {p.id: p.created_at})
                        pipe.zadd(self.pk.requested, {p.id: p.created_at})
                    for (n, u), pts in added.items():
                        key = self.pk.day(n, u, day)
                        pipe.incrby(key, pts)
                        pipe.expire(key, DAY_TTL_S)
                    pipe.execute()
                    return out
                except redis.WatchError:
                    continue

    def update(self, pid: str, change: object, now: float) -> Payout:
        """Apply an admin move (`change(payout, now)`: engine.payout.retried or voided) by
        CAS, reading again if the payout moved meanwhile; PayoutError if it cannot apply."""
        while True:
            p = self.get(pid)
            if p is None:
                raise PayoutNotFound(f"no payout {pid!r}")
            new = change(p, now)  # type: ignore[operator]
            if self.swap(p, new):
                return new  # type: ignore[no-any-return]

    def prune(self, now: float) -> int:
        """Drop from the listing index the payouts created before the retention window whose
        record has expired; returns how many."""
        if not self.retention_s:
            return 0
        dropped = 0
        start = 0
        while True:
            ids = self.r.zrangebyscore(self.pk.index, "-inf", now - self.retention_s,
                                       start=start, num=LIST_MAX)  # fmt: skip
            if not ids:
                return dropped
            raws = self.get_raw([i.decode() for i in ids])
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:
                dropped += int(self.r.zrem(self.pk.index, *gone))
            start += len(ids) - len(gone)

    def count(self, counts: dict[str, int]) -> None:
        """Add to the payout counters (postats: the metrics endpoint reads them)."""
        if counts:
            pipe = self.r.pipeline(transaction=False)
            for k, v in counts.items():
                pipe.hincrby(self.pk.stats, k, v)
            pipe.execute()

    def due(self, now: float, limit: int) -> list[Payout]:
        ids = self.r.zrangebyscore(self.pk.queue, "-inf", now, start=0, num=limit)
        return self._load(ids)

    def pending(self, index: str, limit: int) -> list[Payout]:
        return self._load(self.r.zrange(index, 0, limit - 1))


# -- sinks -----------------------------------------------------------------------------------
class Outcome(msgspec.Struct, frozen=True):
    """What a sink said about one payout: ok, or why not (`final`: never retry)."""

    ok: bool
    reason: str = ""
    final: bool = False


class WebhookSink:
    """Cashback: a signed POST (engine/webhook.py) per payout to its destination URL. A 2xx
    within the timeout settles; 410 Gone is final; anything else is retried."""

    def __init__(self, secret: str, timeout_s: float) -> None:
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None

    @staticmethod
    def body(p: Payout) -> bytes:
        data = {
            "id": p.id,
            "network": p.network,
            "user_id": p.user_id,
            "points": p.points,
            "amount": p.amount,
            "key": p.key,
        }
        return msgspec.json.encode({"type": "payout.cashback", "data": data})

    async def send(self, p: Payout, now: float) -> Outcome:
        return await self.post(p.destination, p.id, self.body(p), now)

    async def post(
        self, url: str, msg_id: str, body: bytes, now: float, secret: str = ""
    ) -> Outcome:
        """One signed POST (payouts and event webhooks alike): its outcome."""
        secret = secret or self.secret
        if not secret:
            return Outcome(False, "no [payouts] webhook_secret configured")
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=self.timeout
            )
        hdrs = webhook.headers(secret, msg_id, int(now), body)
        try:
            async with self.session.post(url, data=body, headers=hdrs) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Outcome(True)
                return Outcome(False, f"HTTP {resp.status}", final=resp.status == 410)
        except TimeoutError:
            return Outcome(False, f"timeout after {self.timeout_s} s")
        except aiohttp.ClientError as err:
            return Outcome(False, f"{type(err).__name__}: {err}"[:300])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


# -- the actor ---------------------------------------------------------------------------------
class PayoutService:
    """The payout actor (Ray: actors/client.py PayoutActor): one loop thread."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        assert cfg.payouts is not None, "the payout actor needs [payouts] settings"
        self.cfg = cfg
        self.pc: PayoutConfig = cfg.payouts
        self.rules = msgspec.convert(self.pc.rules, PayoutRules)
        self.keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.r = connect(cfg.redis_url, socket_timeout=60)
        self.store = PayoutStore(self.r, self.keys, self.rules, self.pc.retention_s)
        self.pruned_at = 0.0
        self.spends = SyncSpendClient(self.r, self.keys, cfg.member_shards, timeout_s=60)
        seed = self.pc.jitter_seed or (os.getpid() ^ time.time_ns())
        self.rng = random.Random(seed)
        self.sink = WebhookSink(self.pc.webhook_secret, self.pc.webhook_timeout_s)
        book = RuleBook.from_builtins(cfg.rules)
        self.chain_gated = frozenset(
            n for n, rules in book.networks.items() if rules.gating.source == "chain"
        )
        if not self.pc.chain_rpc:  # the embedded chain of an earlier process is gone
            self.r.delete(balances_key(self.keys))
        self.stats = {"settled": 0, "failed": 0, "dead": 0, "reserved": 0, "refunded": 0}
        self.chain: Any = None
        subs = [msgspec.convert(x, Subscription) for x in self.pc.event_subscriptions]
        self.hook_store = HookStore(self.r, self.keys, subs, self.pc.event_retention_s)
        self.hooks = EventHooks(self.r, self.keys, self.hook_store, self.rules, self.rng)
        self.owner = f"payout-{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.owner, daemon=True)
        self.thread.start()

    # ray methods
    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return self.thread.is_alive()

    def info(self) -> dict[str, object]:
        hooks = {f"hooks_{k}": v for k, v in self.hooks.stats.items()}
        return {"owner": self.owner, "alive": self.thread.is_alive(), **self.stats, **hooks}

    def chain_block(self, number: int) -> dict[str, object] | None:
        """Block `number` of the embedded EVM (hash, timestamp), or None if not mined: what
        a chain raffle's beacon names, checked where that chain lives (tests, operators)."""
        if self.pc.chain_rpc or self.chain is None:
            return None
        w3 = self.chain.token.w3
        if number > w3.eth.block_number:
            return None
        block = w3.eth.get_block(number)
        return {"number": number, "hash": w3.to_hex(block["hash"]),
                "timestamp": int(block["timestamp"]), "chain_id": int(w3.eth.chain_id)}  # fmt: skip

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    # the loop
    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    busy = await asyncio.to_thread(self._reserve) + await asyncio.to_thread(
                        self._refund
                    )
                    busy += await asyncio.to_thread(self._beacons)
                    busy += await self._deliver()
                    busy += await asyncio.to_thread(self.hooks.consume)
                    busy += await self._deliver_events()
                    if time.monotonic() - self.pruned_at > PRUNE_INTERVAL_S:
                        self.pruned_at = time.monotonic()
                        await asyncio.to_thread(self.store.prune, time.time())
                except (redis.RedisError, SpendTimeout) as err:
                    log.warning("payout_loop_error error=%r", err)
                    busy = 0
                    await asyncio.sleep(0.5)
                except Exception:  # a bug must not stop every payout: logged, retried later
                    log.exception("payout_loop_failed")
                    self.stats["loop_errors"] = self.stats.get("loop_errors", 0) + 1
                    busy = 0
                    await asyncio.sleep(1.0)
                if not busy:
                    await asyncio.sleep(self.pc.tick_s)
        finally:
            await self.sink.close()

    def _reserve(self) -> int:
        """Reserve the points of requested payouts (debit member -> payout:{network})."""
        todo = self.store.pending(self.store.pk.requested, SPENDS_PER_SUBMIT)
        todo = [p for p in todo if p.status == "requested"]
        if not todo:
            return 0
        transfers = [eng.reservation(p) for p in todo]
        results = self.spends.submit_many(transfers)
        now = time.time()
        counts: dict[str, int] = {}
        for p, res in zip(todo, results, strict=True):
            new = eng.reserved(p, now) if res.code == SPEND_OK else eng.refused(p, now, res.code)
            if self.store.swap(p, new):
                key = "reserved" if new.status == "reserved" else "refused"
                self.stats[key] = self.stats.get(key, 0) + 1
                counts[key] = counts.get(key, 0) + 1
        self.store.count(counts)
        return len(todo)

    def _refund(self) -> int:
        """Credit back the points of voided payouts that had them reserved (once: keyed)."""
        todo = [p for p in self.store.pending(self.store.pk.refunds, SPENDS_PER_SUBMIT)
                if _owes_refund(p)]  # fmt: skip
        if not todo:
            return 0
        transfers = [eng.refund(p) for p in todo]
        results = self.spends.submit_many(transfers)
        now = time.time()
        for p, res in zip(todo, results, strict=True):
            if res.code != SPEND_OK:
                log.error("payout_refund_refused id=%s code=%s", p.id, res.code)
                continue
            done = msgspec.structs.replace(p, refund=False, updated_at=now,
                                           reason=f"{p.reason}; refunded")  # fmt: skip
            if self.store.swap(p, done):
                self.stats["refunded"] += 1
                self.store.count({"refunded": 1})
        return len(todo)

    async def _deliver(self) -> int:
        now = time.time()
        due = await asyncio.to_thread(self.store.due, now, self.rules.batch_size)
        claimed: list[Payout] = []
        for p in due:
            try:
                new = (eng.resent if p.status == "sending" else eng.sending)(self.rules, p, now)
            except PayoutError:
                continue
            if await asyncio.to_thread(self.store.swap, p, new):
                claimed.append(new)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.pc.parallelism)

        async def one(p: Payout) -> tuple[Payout, Outcome]:
            async with gate:
                if p.sink == "webhook":
                    return p, await self.sink.send(p, time.time())
                return p, Outcome(False, f"no {p.sink} sink configured")

        webhooks = [p for p in claimed if p.sink != "chain"]
        on_chain = [p for p in claimed if p.sink == "chain"]
        pending = [asyncio.to_thread(self._mint, on_chain)] if on_chain else []
        done = await asyncio.gather(*(one(p) for p in webhooks), *pending)
        outcomes = [x for x in done if isinstance(x, tuple)]
        for minted in (x for x in done if isinstance(x, list)):
            outcomes.extend(minted)
        await asyncio.to_thread(self._settle, outcomes)
        return len(claimed)

    async def _deliver_events(self) -> int:
        """Due event webhooks: claimed, POSTed (at most `parallelism` at once), recorded."""
        claimed = await asyncio.to_thread(self.hooks.claim, time.time(), self.rules.batch_size)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.pc.parallelism)

        async def one(d: Delivery) -> None:
            async with gate:
                secret = self.hooks.secret_of(d, self.pc.webhook_secret)
                out = await self.sink.post(d.url, d.id, d.body, time.time(), secret)
            await asyncio.to_thread(self.hooks.record, d, out.ok, out.reason, out.final)

        await asyncio.gather(*(one(d) for d in claimed))
        return len(claimed)

    def _chain_sink(self) -> Any:
        """The chain sink, started on first use (the embedded EVM lives in this process);
        chain.client.ChainError if it cannot start."""
        from actors.chain_sink import ChainSink

        if self.chain is None:
            self.chain = ChainSink(self.r, self.keys, self.pc, self.chain_gated)
        return self.chain

    def _beacons(self) -> int:
        """Answer chain raffles' beacon requests from the embedded EVM (with [chain] rpc the
        requesters read the node themselves): the first block after close, mined if none
        is yet (actors/chain_beacon.py)."""
        if self.pc.chain_rpc:
            return 0
        from actors.chain_beacon import serve
        from chain.beacon import mine_after

        return serve(self.r, self.keys, lambda after: mine_after(self._chain_sink().token.w3,
                                                                 after))  # fmt: skip

    def _mint(self, ps: Sequence[Payout]) -> list[tuple[Payout, Outcome]]:
        """Chain payouts through the chain sink (started on first use)."""
        from chain.client import ChainError

        try:
            self._chain_sink()
        except ChainError as err:
            return [(p, Outcome(False, f"chain: {err}"[:300])) for p in ps]
        got = self.chain.send(ps)
        self.stats["chain_gas"] = self.chain.gas_used
        self.stats["chain_batches"] = self.chain.batches
        return [(p, Outcome(*got[p.id])) for p in ps]

    def _settle(self, outcomes: Sequence[tuple[Payout, Outcome]]) -> None:
        """Record each outcome. A paid payout's points move pending -> paid first (keyed:
        a repeat after a crash is a replay), and only a payout whose move is durable is
        marked settled; the others stay `sending` and are sent again after their lease."""
        paid = [p for p, out in outcomes if out.ok]
        moved: set[str] = set()
        if paid:
            results = self.spends.submit_many([eng.payment(p) for p in paid])
            for p, res in zip(paid, results, strict=True):
                if res.code == SPEND_OK:
                    moved.add(p.id)
                else:
                    log.error("payout_paid_move_refused id=%s code=%s", p.id, res.code)
        now = time.time()
        counts: dict[str, int] = {}
        for p, out in outcomes:
            if out.ok and p.id not in moved:
                continue
            if out.ok:
                new = eng.settled(p, now)
            else:
                new = eng.failed(self.rules, p, now, out.reason, self.rng.random(),
                                 final=out.final)  # fmt: skip
            if self.store.swap(p, new):
                key = "settled" if out.ok else ("dead" if new.status == "dead" else "failed")
                self.stats[key] += 1
                name = "retries" if key == "failed" else key
                counts[name] = counts.get(name, 0) + 1
                if out.ok:
                    counts["latency_count"] = counts.get("latency_count", 0) + 1
                    ms = int((now - p.created_at) * 1000)
                    counts["latency_ms_sum"] = counts.get("latency_ms_sum", 0) + ms
        self.store.count(counts)
