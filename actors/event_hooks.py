"""Event webhooks in Redis (HookStore) and their sender (EventHooks, run by the payout actor).

engine/event_hooks.py holds the rules; this module reads the notices stream through its own
consumer group ("webhooks", created at the stream's end: a deployment delivers what happens
after it subscribes), turns each notice into deliveries and stores them, in one script with
the XACK (a crash before it re-reads the notice; after it, never: each delivery is made
once, and its id is stable anyway). The sender claims due deliveries by compare-and-swap
(a lease, like payouts), POSTs them with the payout actor's WebhookSink and records the
outcome. Keys:

hooksub        hash; subscription id -> msgpack Subscription added by an admin (HTTP); those
               of [events] subscriptions in the configuration are not stored.
hk:{id}        string; msgpack engine.event_hooks.Delivery; a delivered one expires after
               [events] retention_s.
hkq            zset; id -> next_at of pending deliveries (due then, or leased until then).
hkdead         zset; id -> died at, of dead deliveries.
hkstats        hash; delivered, dead, retries, latency_ms_sum, latency_count.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence

import redis

from actors.keys import Keys
from actors.notices import decode_notices
from engine import event_hooks as eng
from engine.event_hooks import Delivery, HookError, Subscription
from engine.payout import PayoutRules

log = logging.getLogger(__name__)

GROUP = "webhooks"
CONSUMER = "hooks"
READ_COUNT = 500
LIST_MAX = 1_000
SUBS_CACHE_S = 1.0

ADD = r"""
local q = KEYS[1]
local made = 0
for i = 1, #ARGV - 2, 4 do
  if redis.call('SET', ARGV[i], ARGV[i + 1], 'NX') then
    redis.call('ZADD', q, ARGV[i + 2], ARGV[i + 3])
    made = made + 1
  end
end
local ids = cjson.decode(ARGV[#ARGV])
for _, id in ipairs(ids) do redis.call('XACK', KEYS[2], ARGV[#ARGV - 1], id) end
return made
"""
"""KEYS: hkq, notices. ARGV: (key, blob, next_at, id) per delivery, then the consumer
group and the JSON list of notice ids it acknowledges. -> deliveries made (an existing one
is kept). Every key name is in KEYS or ARGV's delivery keys, all of the namespace's slot."""

SWAP = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local id, status = ARGV[3], ARGV[4]
if status == 'delivered' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[7])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if status == 'pending' then redis.call('ZADD', KEYS[2], ARGV[5], id) else redis.call('ZREM', KEYS[2], id) end
if status == 'dead' then redis.call('ZADD', KEYS[3], ARGV[6], id) else redis.call('ZREM', KEYS[3], id) end
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[8], 1) end
if status == 'delivered' then
  redis.call('HINCRBY', KEYS[4], 'latency_ms_sum', ARGV[9])
  redis.call('HINCRBY', KEYS[4], 'latency_count', 1)
end
return 1
"""
"""KEYS: hk:{id}, hkq, hkdead, hkstats. ARGV: expected bytes, new bytes, id, status, next_at,
updated_at, retention_s, counter to bump ('' none), latency ms. -> 1 swapped, 0 moved meanwhile."""


class DeliveryNotFound(LookupError):
    """No event delivery has that id."""


class HookStore:
    """Subscriptions (configured + added) and deliveries in Redis."""

    def __init__(
        self, r: redis.Redis, keys: Keys, configured: Sequence[Subscription], retention_s: float
    ) -> None:
        self.r = r
        self.keys = keys
        self.configured = {s.id: s for s in configured}
        self.retention_s = max(1, int(retention_s))
        self.subs_key = keys.k("hooksub")
        self.queue = keys.k("hkq")
        self.dead = keys.k("hkdead")
        self.stats_key = keys.k("hkstats")
        self.prefix = keys.k("hk") + ":"
        self._add = r.register_script(ADD)
        self._swap = r.register_script(SWAP)

    def key(self, did: str) -> str:
        return self.prefix + did

    # -- subscriptions ------------------------------------------------------------------
    def subscriptions(self) -> list[Subscription]:
        added = [eng.sub_decoder.decode(v) for v in self.r.hvals(self.subs_key)]
        return [*self.configured.values(),
                *(s for s in added if s.id not in self.configured)]  # fmt: skip

    def subscribe(self, sub: Subscription) -> bool:
        """Add (or replace) an admin subscription; False if it would replace a configured one."""
        eng.validate(sub)
        if sub.id in self.configured:
            return False
        self.r.hset(self.subs_key, sub.id, eng.sub_encoder.encode(sub))
        return True

    def unsubscribe(self, sub_id: str) -> bool:
        return bool(self.r.hdel(self.subs_key, sub_id))

    # -- deliveries ---------------------------------------------------------------------
    def get(self, did: str) -> Delivery | None:
        raw = self.r.get(self.key(did))
        return None if raw is None else eng.delivery_decoder.decode(raw)  # type: ignore[arg-type]

    def _load(self, ids: Sequence[bytes | str]) -> list[Delivery]:
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else i for i in ids]
        raws = self.r.mget([self.key(i) for i in names])
        return [eng.delivery_decoder.decode(raw) for raw in raws if raw is not None]  # type: ignore[union-attr]

    def due(self, now: float, limit: int) -> list[Delivery]:
        return self._load(self.r.zrangebyscore(self.queue, "-inf", now, start=0, num=limit))

    def list(self, status: str, limit: int) -> list[Delivery]:
        """Pending (by due time) or dead (newest first) deliveries."""
        limit = max(1, min(limit, LIST_MAX))
        if status == "dead":
            return self._load(self.r.zrevrange(self.dead, 0, limit - 1))
        return self._load(self.r.zrange(self.queue, 0, limit - 1))

    def counts(self) -> dict[str, int]:
        stats = {k.decode(): int(v) for k, v in self.r.hgetall(self.stats_key).items()}  # type: ignore[union-attr]
        return {"pending": int(self.r.zcard(self.queue)),
                "dead_now": int(self.r.zcard(self.dead)), **stats}  # fmt: skip

    def add(self, made: Sequence[Delivery], acked: Sequence[str], notices: str) -> int:
        args: list[bytes | str | float] = []
        for d in made:
            args += [self.key(d.id), eng.delivery_encoder.encode(d), d.next_at, d.id]
        args += [GROUP, json.dumps(list(acked))]
        return int(self._add(keys=[self.queue, notices], args=args))

    def swap(self, old: Delivery, new: Delivery, counter: str = "") -> bool:
        latency_ms = int(max(0.0, new.updated_at - new.created_at) * 1000)
        return bool(
            self._swap(
                keys=[self.key(new.id), self.queue, self.dead, self.stats_key],
                args=[
                    eng.delivery_encoder.encode(old),
                    eng.delivery_encoder.encode(new),
                    new.id,
                    new.status,
                    new.next_at,
                    new.updated_at,
                    self.retention_s,
                    counter,
                    latency_ms,
                ],
            )
        )

    def retry(self, did: str, now: float) -> Delivery:
        """An admin sends a dead delivery again (HookError if it is not dead)."""
        while True:
            d = self.get(did)
            if d is None:
                raise DeliveryNotFound(f"no delivery {did!r}")
            new = eng.retried(d, now)
            if self.swap(d, new):
                return new


class EventHooks:
    """The payout actor's event-webhook half: consume notices, deliver, record outcomes."""

    def __init__(
        self, r: redis.Redis, keys: Keys, store: HookStore, rules: PayoutRules, rng: random.Random
    ) -> None:
        self.r = r
        self.notices = keys.notices
        self.store = store
        self.rules = rules
        self.rng = rng
        self.stats = {"made": 0, "delivered": 0, "retries": 0, "dead": 0}
        self._subs: list[Subscription] = []
        self._subs_at = -1e9
        self._caught_up = False
        try:
            r.xgroup_create(self.notices, GROUP, id="$", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _subscriptions(self) -> list[Subscription]:
        now = time.monotonic()
        if now - self._subs_at > SUBS_CACHE_S:
            self._subs = self.store.subscriptions()
            self._subs_at = now
        return self._subs

    def consume(self) -> int:
        """Read notices (first this consumer's pending ones, after a restart), store their
        deliveries and acknowledge them in one script; returns the notices read."""
        start = ">" if self._caught_up else "0"
        got = self.r.xreadgroup(GROUP, CONSUMER, {self.notices: start}, count=READ_COUNT)
        entries = got[0][1] if got else []
        if not entries and start == "0":
            self._caught_up = True
            return 0
        if not entries:
            return 0
        subs = self._subscriptions()
        now = time.time()
        made: list[Delivery] = []
        acked: list[str] = []
        for eid, fields in entries:
            acked.append(eid.decode() if isinstance(eid, bytes) else eid)
            if not fields or not subs:  # trimmed while pending; or nobody subscribed
                continue
            for notice in decode_notices(eid, fields):
                data = {k: v for k, v in notice.body.items() if k not in ("id", "kind")}
                made += eng.deliveries(subs, notice.id, notice.kind, notice.network, data, now)
        self.stats["made"] += self.store.add(made, acked, self.notices)
        return len(entries)

    def claim(self, now: float, limit: int) -> list[Delivery]:
        out = []
        for d in self.store.due(now, limit):
            try:
                new = eng.claimed(self.rules, d, now)
            except HookError:
                continue
            if self.store.swap(d, new):
                out.append(new)
        return out

    def secret_of(self, d: Delivery, default: str) -> str:
        sub = next((s for s in self._subscriptions() if s.id == d.sub_id), None)
        return (sub.secret if sub is not None and sub.secret else "") or default

    def record(self, d: Delivery, ok: bool, reason: str, final: bool) -> None:
        now = time.time()
        if ok:
            new, counter = eng.delivered(d, now), "delivered"
        else:
            new = eng.failed(self.rules, d, now, reason, self.rng.random(), final=final)
            counter = "dead" if new.status == "dead" else "retries"
        if self.store.swap(d, new, counter):
            self.stats[counter] += 1
