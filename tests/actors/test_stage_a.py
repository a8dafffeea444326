"""Stage A of the member shards loads only what referrals wait for (engine/referral.py
`must_see`): a release of routine credits reads and writes no member state, a link still
finds its member seen when stage B has yet to apply the member's earlier channel credit,
and the members waiting for their first earn are found in a deployment that predates
their index (reflinked:{m}).

The shards are driven here one read at a time, without their threads: which batch holds
what is then fixed, not left to timing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from actors.keys import Keys
from actors.shards import MemberShard
from benchmarks.stages import step
from engine.member import Credit, MemberState, state_decoder, state_encoder
from engine.referral import LINK, ReferralState
from engine.routing import shard_of
from tests.actors.conftest import T0, send, without_threads


@contextmanager
def two_member_shards(redis_url: str, namespace: str) -> Iterator[list[MemberShard]]:
    with without_threads(redis_url, namespace, member_shards=2) as cfg:
        yield [MemberShard(cfg, m) for m in range(2)]


def user_on(m: int, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    return next(
        u for i in range(1000) if shard_of(f"n:{(u := f'u{i}')}", 2) == m and u not in taken
    )


def state(r: redis.Redis, keys: Keys, uid: str) -> MemberState:
    return state_decoder.decode(r.hget(keys.mstate, f"n:{uid}"))


def test_a_link_finds_seen_a_member_whose_channel_credit_stage_b_still_holds(
    redis_server, namespace: str
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    u = user_on(0)
    v = user_on(1)
    with two_member_shards(redis_server.url, namespace) as (m0, m1):
        send(r, keys, 0, [Credit("f1", "n", "c", u, "", T0 + 1, "follow", 5)], T0 + 2)
        step(m0, r)  # stage A releases the follow; stage B waits for shard 1's mark
        assert len(m0.held) == 1
        assert r.hlen(keys.mstate) == 0  # routine credits: stage A wrote no member state
        send(r, keys, 0, [Credit("ref:u/link", "n", "_referrals", u, "", T0 + 3, LINK, 0, v)],
             T0 + 4)  # fmt: skip
        send(r, keys, 1, [], T0 + 4)
        step(m0, r)  # stage A: the link, after the follow stage B has yet to apply
        step(m1, r)  # shard 1's stage-A mark goes to shard 0
        step(m0, r)  # stage B applies the follow and the link
        assert not m0.held
        got = state(r, keys, u)
        assert got.referral == ReferralState(referrer=v, seen=True, status="existing")
        assert got.balance > 0
        assert not r.smembers(keys.ref_linked(0))
        step(m1, r)
        assert not r.hexists(keys.mstate, f"n:{v}")  # no reward: u had earned already


def test_members_linked_before_their_index_are_found_and_paid(redis_server, namespace: str) -> None:
    """A deployment from before reflinked:{m}: a member stored as linked (waiting for its
    first earn) is found by the shard's scan as it loads, and its first earn pays."""
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    u = user_on(0)
    v = user_on(0, {u})
    waiting = MemberState(referral=ReferralState(referrer=v, seen=False, status="linked"))
    r.hset(keys.mstate, mapping={f"n:{u}": state_encoder.encode(waiting),
                                 "n:other": state_encoder.encode(MemberState())})  # fmt: skip
    with two_member_shards(redis_server.url, namespace) as (m0, m1):
        send(r, keys, 0, [Credit("f1", "n", "c", u, "", T0 + 1, "follow", 5)], T0 + 2)
        send(r, keys, 1, [], T0 + 2)
        step(m0, r)
        assert r.smembers(keys.ref_linked(0)) == set()  # paid: out of the index again
        step(m1, r)
        step(m0, r)
        assert state(r, keys, u).referral.status == "paid"
        assert state(r, keys, v).referral.rewarded == 1  # the referrer, on the same shard
        assert m0.progress.linked_for == 2
