"""Events appended to the ingest log are credited by the real shards exactly as the engine says."""

from __future__ import annotations

import redis

from actors.keys import Keys
from actors.ledger_sink import ledger_tail
from engine.events import Chat, Join, Online
from engine.ledger import member_account
from engine.member import state_decoder
from engine.reference import Reference
from engine.rules import RuleBook
from tests.actors.conftest import append


def traffic(n_users: int = 50, n_chats: int = 400, t0: float = 1_795_000_000.0):
    events = [
        Online(id="on-a", network="n", channel="a", ts=t0),
        Online(id="on-b", network="n", channel="b", ts=t0),
    ]
    for u in range(n_users):
        ch = "a" if u % 2 else "b"
        events.append(
            Join(id=f"j{u}", network="n", channel=ch, user_id=f"u{u}", user_name=f"U{u}", ts=t0 + u)
        )
    for i in range(n_chats):
        u = i % n_users
        ch = "a" if u % 2 else "b"
        events.append(
            Chat(
                id=f"c{i}",
                network="n",
                channel=ch,
                user_id=f"u{u}",
                ts=t0 + 60 + i * 7.0,
                text="hi",
            )
        )
    return events


def test_shards_match_reference_and_retries_count_once(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    events = traffic()
    append(r, cfg, events[:200])
    append(r, cfg, events[100:])  # overlapping retry: ids 100..199 delivered twice
    assert client.wait_idle(60)
    ref = Reference(RuleBook({}))
    ref.ingest(events, 0.0)
    ref.finish()
    keys = Keys(cfg.namespace)
    for (network, uid), expected in ref.members.items():
        raw = r.hget(keys.mstate, f"{network}:{uid}")
        assert raw is not None, uid
        got = state_decoder.decode(raw)
        assert got.balance == expected.balance, uid
        assert got.tier == expected.tier
        logged = ledger_tail(r, keys, cfg.member_shards, member_account(network, uid), {})
        assert [e.id for e in logged] == [e.id for e in ref.ledger[(network, uid)]], uid
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}
    assert stats["events_applied"] == len(events)
    assert stats["events_dup"] == 100
