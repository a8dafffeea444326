"""The payout actor with real Redis, Ray and a real (misbehaving) webhook receiver: 5,000
cashback payouts in one event, through failures, timeouts, 410s and a kill -9 of the payout
actor mid-batch: none lost, none paid twice, the ledger audit clean; admins retry and void."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest
import redis

from actors.client import RallyClient
from actors.config import PayoutConfig
from actors.keys import Keys
from actors.payout import PayoutStore
from benchmarks.receiver import Receiver
from engine import payout as eng
from engine import webhook
from engine.payout import PayoutRules, Request
from engine.rules import RuleBook
from gateway.audit import audit
from tests.actors.conftest import make_cfg
from tests.actors.test_spend import balance, seed

SECRET = webhook.new_secret(b"0123456789abcdef0123")
RULES = PayoutRules(min_points=1, daily_limit_points=10_000, max_attempts=6,
                    backoff_base_s=0.05, backoff_max_s=0.5, lease_s=3.0, batch_size=500)  # fmt: skip
N = 5_000
GONE = "u299"


def wait_for(cond, timeout_s: float, poll_s: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll_s)
    return bool(cond())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET, gone=frozenset({GONE})).start()
    yield rec
    rec.stop()


@pytest.fixture
def payouts(
    ray_cluster: None, redis_server, namespace: str
) -> Iterator[tuple[RallyClient, object]]:
    pc = PayoutConfig(rules=msgspec.to_builtins(RULES), parallelism=64, webhook_secret=SECRET,
                      webhook_timeout_s=1.0, jitter_seed=7)  # fmt: skip
    cfg = make_cfg(redis_server.url, namespace, payouts=pc)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg
    client.stop()


def test_5000_payouts_through_failures_and_kill9(payouts, redis_server, receiver) -> None:
    client, cfg = payouts
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    before = seed(client, cfg, r)
    users = sorted(before)
    per_user = -(-N // len(users))
    assert min(before.values()) >= per_user, "every member can afford its payouts"
    store = PayoutStore(r, keys, RULES)
    check_refusals(store, r, keys, before, receiver.url)
    reqs = [
        Request(
            network="n",
            user_id=users[i % len(users)],
            points=1,
            key=f"promo-{i}",
            destination=receiver.url,
        )
        for i in range(N)
    ]
    t0 = time.monotonic()
    out = store.create(reqs, time.time())
    assert [c for c, _ in out] == [eng.OK] * N
    # a replay answers with the same payouts (as stored now: the running service may have
    # reserved some of them since), not new ones
    again = store.create(reqs[:10], time.time())
    assert [(c, p and (p.id, p.points, p.created_at)) for c, p in again] == [
        (c, p and (p.id, p.points, p.created_at)) for c, p in out[:10]
    ], "a replayed request answers as before"

    assert wait_for(lambda: len(receiver.paid) >= 1_500, 60), len(receiver.paid)
    client.kill9("payouts")  # mid-batch: some payouts are `sending`, some not reserved yet

    gone = {p.id for _, p in out if p is not None and p.user_id == GONE}

    def finished() -> bool:
        c = store.counts()
        return c.get("settled", 0) + c.get("dead", 0) == N

    assert wait_for(finished, 90, 0.25), store.counts()
    seconds = time.monotonic() - t0
    counts = store.counts()
    assert counts["settled"] == N - len(gone)
    assert {p.id for p in store.list("dead", 1_000)} == gone
    assert all(p.reason == "HTTP 410" for p in store.list("dead"))
    # none lost, none paid twice (the receiver dedupes by webhook-id; retries happened)
    assert set(receiver.paid) == {p.id for _, p in out if p is not None} - gone
    assert receiver.bad_signatures == 0
    assert sum(receiver.deliveries.values()) > N, "failures and timeouts were retried"
    print(f"\n{N} payouts settled in {seconds:.1f} s ({N / seconds:.0f}/s), "
          f"{sum(receiver.deliveries.values())} deliveries")  # fmt: skip

    # admin: a dead payout is voided (points back to the member) or retried (dead again: 410)
    victim = sorted(gone)[0]
    had = balance(r, keys, GONE)
    voided = store.update(victim, eng.voided, time.time())
    assert voided.refund
    assert wait_for(lambda: balance(r, keys, GONE) == had + 1, 30)
    assert wait_for(lambda: not store.get(victim).refund, 30)  # type: ignore[union-attr]
    with pytest.raises(eng.PayoutError):
        store.update(victim, eng.retried, time.time())
    other = sorted(gone)[1]
    assert store.update(other, eng.retried, time.time()).status == "reserved"
    assert wait_for(lambda: store.get(other).status == "dead", 30)  # type: ignore[union-attr]

    # the ledger: settled payouts' points moved pending -> paid; the dead one still pending;
    # the voided one refunded
    assert client.wait_idle(60)
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems
    assert report.accounts[eng.paid_account("n")] == N - len(gone)
    assert report.accounts[eng.account("n")] == len(gone) - 1
    for u in users[:5]:
        paid = sum(1 for _, p in out if p is not None and p.user_id == u)
        assert balance(r, keys, u) == before[u] - paid


def check_refusals(
    store: PayoutStore, r: redis.Redis, keys: Keys, before: dict[str, int], url: str
) -> None:
    """The daily limit refuses at once; a payout beyond the balance is voided, nothing moved."""
    now = time.time()
    rich = max(before, key=before.__getitem__)
    big = Request(network="n", user_id=rich, points=before[rich] + 1, key="too-much",
                  destination=url)  # fmt: skip
    over = Request(network="n", user_id="u1", points=RULES.daily_limit_points + 1, key="over",
                   destination=url)  # fmt: skip
    [(code_big, p_big), (code_over, _)] = store.create([big, over], now)
    assert code_over == eng.DAILY_LIMIT
    assert code_big == eng.OK
    assert p_big is not None
    assert wait_for(lambda: store.get(p_big.id).status == "voided", 30)  # type: ignore[union-attr]
    got = store.get(p_big.id)
    assert got is not None
    assert (got.reason, got.refund) == ("insufficient_points", False)
    assert balance(r, keys, rich) == before[rich]


def test_final_payouts_expire_after_retention_and_leave_the_index(redis_server, namespace) -> None:
    """Bounded: a settled payout expires after retention_s and prune drops its id from the
    listing index; a payout still owed something (here: reserved) stays."""
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    store = PayoutStore(r, keys, RULES, retention_s=1)
    now = time.time() - 10
    out = store.create([Request(network="n", user_id=f"u{i}", points=5, key=f"ret-{i}",
                                destination="http://127.0.0.1:1/h") for i in range(2)], now)  # fmt: skip
    (_, a), (_, b) = out
    assert a is not None
    assert b is not None
    ra = eng.reserved(a, now)
    assert store.swap(a, ra)
    sent = eng.sending(RULES, ra, now)
    assert store.swap(ra, sent)
    assert store.swap(sent, eng.settled(sent, now))
    assert store.swap(b, eng.reserved(b, now))
    assert 0 < r.ttl(store.pk.payout(a.id)) <= 1, "the settled one expires"
    assert r.ttl(store.pk.payout(b.id)) == -1, "the reserved one is kept"
    assert wait_for(lambda: store.get(a.id) is None, 5)
    assert store.prune(time.time()) == 1
    assert [p.id for p in store.list()] == [b.id]


def test_payout_outcomes_append_feed_notices(redis_server, namespace) -> None:
    """Settled, dead and voided payouts each append one notice (`payout_{status}`, JSON the
    feed decodes, naming the member); the moves in between append none."""
    from actors.notices import decode_notices

    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    store = PayoutStore(r, keys, RULES)
    now = time.time()
    out = store.create([Request(network="n", user_id=f"u{i}", points=5 + i, key=f"nt-{i}",
                                destination="http://127.0.0.1:1/h") for i in range(3)], now)  # fmt: skip
    a, b, c = (p for _, p in out)
    assert a is not None
    assert b is not None
    assert c is not None
    ra = eng.reserved(a, now)
    assert store.swap(a, ra)
    sa = eng.sending(RULES, ra, now)
    assert store.swap(ra, sa)
    assert r.xlen(keys.notices) == 0
    assert store.swap(sa, eng.settled(sa, now))
    rb = eng.reserved(b, now)
    assert store.swap(b, rb)
    sb = eng.sending(RULES, rb, now)
    assert store.swap(rb, sb)
    dead = eng.failed(RULES, sb, now, "receiver said 500", 0.5, final=True)
    assert dead.status == "dead"
    assert store.swap(sb, dead)
    assert store.swap(dead, eng.retried(dead, now))
    assert store.update(b.id, eng.voided, now)
    store.update(c.id, eng.voided, now)
    notices = [n for i, f in r.xrange(keys.notices) for n in decode_notices(i, f)]
    got = [(n.kind, n.user_ids, n.body["payout"], n.body["points"]) for n in notices if n]
    assert got == [("payout_settled", ("u0",), a.id, 5), ("payout_dead", ("u1",), b.id, 6),
                   ("payout_voided", ("u1",), b.id, 6), ("payout_voided", ("u2",), c.id, 7)]  # fmt: skip
    assert notices[1] is not None
    assert notices[1].body["reason"] == "receiver said 500"
