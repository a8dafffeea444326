"""The reward_earned notices of a member shard's ledger entries are the ledger projector's to
write: once each, after the balance, and none twice for entries a member shard wrote while it
still noticed them itself (an upgrade with the log not yet projected)."""

from __future__ import annotations

import msgspec
import redis

from actors.keys import Keys
from actors.shards import LedgerProjector, MemberShard, ledger_encoder
from benchmarks.stages import step
from engine.ledger import Entry
from engine.member import Credit
from tests.actors.conftest import T0, send, without_threads


def test_the_projector_notices_each_reward_once_and_none_of_an_older_log(
    redis_server, namespace: str
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    older = Entry("n:old/welcome", T0, "n", "treasury:n", "member:n:old", 100, "welcome", "c")
    r.xadd(keys.ledgerlog(0), {"l": ledger_encoder.encode([older]), "n": 1})  # no "r"
    with without_threads(redis_server.url, namespace, member_shards=1) as cfg:
        member, projector = MemberShard(cfg, 0), LedgerProjector(cfg, 0)
    send(r, keys, 0, [Credit("f1", "n", "c", "u1", "", T0 + 1, "follow", 5),
                      Credit("w1", "n", "c", "u1", "", T0 + 2, "watch", 10)], T0 + 3)  # fmt: skip
    step(member, r)
    assert r.hget(keys.mstate, "n:u1") is not None
    assert r.xlen(keys.notices) == 0  # the balance did not wait for the notices
    step(projector, r)
    step(projector, r)  # nothing more: once each
    got = [
        (n["user_id"], n["rule"], n["points"])
        for _, fields in r.xrange(keys.notices)
        for n in msgspec.json.decode(fields[b"reward_earned"])
    ]
    # welcome, streak and the follow: rewards; the watch credit is routine; "old" was
    # noticed by the member shard that wrote its entry
    assert got == [("u1", "welcome", 100), ("u1", "streak", 1), ("u1", "follow", 5)]
    assert int(r.hget(keys.stats, "entries_projected")) == 4 + 1
