"""Referrals through the real shards: links decided on the referral partition, rewards sent
from the referee's member shard to the referrer's, applied in event-time order; exactly
what engine/reference.py computes, duplicates and all."""

from __future__ import annotations

import random

import redis

from actors.keys import Keys
from actors.ledger_sink import ledger_tail
from engine.events import Chat, Event, Online, Referral
from engine.ledger import member_account
from engine.member import state_decoder
from engine.reference import Reference
from engine.routing import shard_of
from engine.rules import RuleBook
from tests.actors.conftest import append

T0 = 1_795_000_000.0


def traffic(seed: int = 7, users: int = 24) -> list[Event]:
    rnd = random.Random(seed)
    events: list[Event] = [Online(id="on", network="n", channel="a", ts=T0)]
    for i in range(60):  # some refer back up their chain (cycles), themselves, or twice
        x, y = f"u{rnd.randrange(users)}", f"u{rnd.randrange(users)}"
        events.append(Referral(id=f"r{i}", network="n", channel="a", user_id=x, referrer=y,
                               ts=T0 + 1 + i * 3.0))  # fmt: skip
    for i in range(300):  # everyone chats, some before being referred
        u = f"u{rnd.randrange(users)}"
        events.append(Chat(id=f"c{i}", network="n", channel="a", user_id=u, user_name=u.upper(),
                           ts=T0 + 20 + i * 11.0))  # fmt: skip
    return sorted(events, key=lambda e: e.ts)  # in time order: none is late


def test_referrals_across_member_shards_match_the_model(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    events = traffic()
    append(r, cfg, events[:200])
    append(r, cfg, events[150:])  # a retried overlap: duplicates change nothing
    assert client.wait_idle(60)
    ref = Reference(RuleBook({}))
    ref.ingest(events, 0.0)
    ref.finish()
    keys = Keys(cfg.namespace)
    cross = 0
    for (network, uid), expected in ref.members.items():
        raw = r.hget(keys.mstate, f"{network}:{uid}")
        assert raw is not None, uid
        got = state_decoder.decode(raw)
        assert got.referral == expected.referral, uid
        assert got.balance == expected.balance, uid
        logged = ledger_tail(r, keys, cfg.member_shards, member_account(network, uid), {})
        assert [e.id for e in logged] == [e.id for e in ref.ledger[(network, uid)]], uid
        for e in logged:
            if e.rule == "referral":
                referee = e.id.split(":", 2)[2].split(">")[0]
                shards = {shard_of(f"n:{u}", cfg.member_shards) for u in (referee, uid)}
                cross += len(shards) == 2
    assert cross, "no reward crossed member shards: the traffic tests too little"
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}
    assert stats["referrals_ok"] > 0
    assert stats["referrals_already"] + stats["referrals_cycle"] + stats["referrals_self"] > 0
    assert sum(v for k, v in stats.items() if k.startswith("referrals_")) == 60
