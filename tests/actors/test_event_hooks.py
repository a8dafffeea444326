"""actors/event_hooks.py on real Redis: notices become deliveries exactly once, whatever
crashes between reading and storing; a sender that dies mid-delivery leaves it to be sent
again after its lease; outcomes move the indexes and counters."""

from __future__ import annotations

import random

import msgspec
import redis

from actors.event_hooks import CONSUMER, GROUP, EventHooks, HookStore
from actors.keys import Keys
from engine.event_hooks import Subscription, delivery_id
from engine.member import TierChange
from engine.payout import PayoutRules

RULES = PayoutRules(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, lease_s=0.2)
SUB = Subscription(id="s1", network="n", url="http://127.0.0.1:1/h", events=("tier.upgraded",))


def _hooks(r: redis.Redis, keys: Keys) -> EventHooks:
    store = HookStore(r, keys, [SUB], retention_s=60)
    return EventHooks(r, keys, store, RULES, random.Random(1))


def _tier(r: redis.Redis, keys: Keys, user: str, old: int, new: int) -> str:
    tc = TierChange("n", user, old, new, 1.0, 600)
    return r.xadd(keys.notices, {"tier": msgspec.msgpack.encode(tc)}).decode()


def test_read_then_crash_then_restart_makes_each_delivery_once(redis_client, namespace) -> None:
    r, keys = redis_client, Keys(namespace)
    first = _hooks(r, keys)
    up = _tier(r, keys, "u1", 0, 1)
    _tier(r, keys, "u2", 2, 1)  # a downgrade: no event
    # a consumer that read the notices and died before storing their deliveries
    assert r.xreadgroup(GROUP, CONSUMER, {keys.notices: ">"}, count=10)
    again = _hooks(r, keys)  # the restarted actor: reads its pending notices first
    assert again.consume() == 2
    assert again.consume() == 0
    assert first.consume() == 0, "acknowledged with the deliveries: nothing left to read"
    did = delivery_id("s1", up)
    d = again.store.get(did)
    assert d is not None
    assert (d.event, d.notice_id, d.status) == ("tier.upgraded", up, "pending")
    assert r.zcard(again.store.queue) == 1
    assert r.xinfo_groups(keys.notices)[-1]["pending"] == 0

    # claimed, then the sender dies: after the lease it is due again, one more attempt
    (claimed,) = again.claim(d.next_at, 10)
    assert claimed.attempts == 1
    assert again.claim(claimed.updated_at, 10) == [], "leased"
    (reclaimed,) = again.claim(claimed.next_at, 10)
    assert reclaimed.attempts == 2
    again.record(reclaimed, False, "HTTP 500", False)
    dead = again.store.get(did)
    assert dead is not None
    assert (dead.status, dead.reason) == ("dead", "HTTP 500"), "max_attempts = 2"
    assert again.store.counts()["dead_now"] == 1
    retried = again.store.retry(did, dead.updated_at)
    (sent,) = again.claim(retried.next_at, 10)
    again.record(sent, True, "", False)
    done = again.store.get(did)
    assert done is not None
    assert done.status == "delivered"
    assert 0 < r.ttl(again.store.key(did)) <= 60, "kept retention_s, then dropped"
    counts = again.store.counts()
    assert (counts["pending"], counts["dead_now"], counts["delivered"], counts["dead"]) == (
        0, 0, 1, 1,
    )  # fmt: skip
