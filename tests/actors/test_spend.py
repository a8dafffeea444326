"""The spend path with real Redis and Ray: transfers applied by the member shards exactly once,
through retries, conflicts, concurrency and kill -9 of a member shard; the audit stays clean."""

from __future__ import annotations

import asyncio
import threading
import time

import redis
import redis.asyncio as aioredis

from actors.keys import Keys
from actors.shards import ledger_decoder
from actors.spend import SpendClient, SyncSpendClient
from engine.member import state_decoder
from engine.rules import RuleBook
from engine.spend import CONFLICT, INSUFFICIENT_POINTS, LIMIT_REACHED, OK, Guard, Transfer
from gateway.audit import audit
from tests.actors.conftest import append
from tests.actors.test_crash import day_of_traffic

NET = "n"
STORE = f"store:{NET}"


def seed(client, cfg, r: redis.Redis, n_batches: int = 4) -> dict[str, int]:
    """Members u0..u299 earn points; their balances."""
    for b in day_of_traffic(n_batches=n_batches, per_batch=100):
        append(r, cfg, b)
    assert client.wait_idle(60)
    keys = Keys(cfg.namespace)
    return {
        k.decode().partition(":")[2]: state_decoder.decode(v).balance
        for k, v in r.hgetall(keys.mstate).items()
    }


def spend(key: str, user: str, amount: int, **kw: object) -> Transfer:
    kw.setdefault("account", STORE)
    kw.setdefault("rule", "store_redeem")
    return Transfer(key, NET, user, amount, "debit", **kw)  # type: ignore[arg-type]


def balance(r: redis.Redis, keys: Keys, user: str) -> int:
    return int(state_decoder.decode(r.hget(keys.mstate, f"{NET}:{user}")).balance)


def test_spends_apply_once_and_the_audit_stays_clean(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    balances = seed(client, cfg, r)
    sc = SyncSpendClient(r, keys, cfg.member_shards, timeout_s=120)
    have = balances["u1"]
    assert have > 10

    first = sc.submit(spend("buy-1", "u1", 10, ref="item9", channel="c1"))
    assert (first.code, first.balance) == (OK, have - 10)
    again = sc.submit(spend("buy-1", "u1", 10, ref="item9", channel="c1"))
    assert again == first, "a retry gets the recorded result"
    assert sc.submit(spend("buy-1", "u1", 11)).code == CONFLICT
    short = sc.submit(spend("buy-2", "u1", have * 10))
    assert (short.code, short.balance) == (INSUFFICIENT_POINTS, have - 10)
    g = (Guard("item9", limit=1),)
    assert sc.submit(spend("buy-3", "u1", 1, guards=g)).code == OK
    assert sc.submit(spend("buy-4", "u1", 1, guards=g)).code == LIMIT_REACHED
    free = (Guard("item0", limit=1),)  # a free item: no points move, only its counter
    assert sc.submit(spend("free-1", "u1", 0, guards=free)).code == OK
    assert sc.submit(spend("free-2", "u1", 0, guards=free)).code == LIMIT_REACHED
    stored = state_decoder.decode(r.hget(keys.mstate, f"{NET}:u1"))
    assert stored.uses["item0"].n == 1, "the counter is in Redis, not only in a cache"
    back = sc.submit(Transfer("refund-1", NET, "u1", 10, "credit", STORE, "refund"))
    assert (back.code, back.balance) == (OK, have - 1)
    assert balance(r, keys, "u1") == have - 1
    assert int(r.hget(keys.accounts, STORE)) == 1

    assert client.wait_idle(60)
    rows = [
        e
        for m in range(cfg.member_shards)
        for _, fields in r.xrange(keys.ledgerlog(m))
        for e in ledger_decoder.decode(fields[b"l"])
    ]
    spends = [e for e in rows if e.rule in ("store_redeem", "refund")]
    assert [(e.id, e.debit, e.credit, e.amount) for e in spends] == [
        (f"{NET}:u1/x/buy-1", f"member:{NET}:u1", STORE, 10),
        (f"{NET}:u1/x/buy-3", f"member:{NET}:u1", STORE, 1),
        (f"{NET}:u1/x/refund-1", STORE, f"member:{NET}:u1", 10),
    ]
    state = state_decoder.decode(r.hget(keys.mstate, f"{NET}:u1"))
    assert sum(state.earned_in.values()) == state.lifetime, "spends are not earnings"
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems
    assert report.accounts == {STORE: 1}
    sc.close()


def test_concurrent_spends_of_one_member_never_overdraw(rally, redis_server) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    have = seed(client, cfg, r, n_batches=3)["u7"]
    price = max(1, have // 7)

    async def storm() -> list[str]:
        ar = aioredis.Redis.from_url(redis_server.url)
        sc = SpendClient(ar, keys, cfg.member_shards, timeout_s=120)
        try:
            results = await asyncio.gather(
                *[sc.submit(spend(f"s{i}", "u7", price)) for i in range(60)]
            )
            return [x.code for x in results]
        finally:
            await sc.close()
            await ar.aclose()

    codes = asyncio.run(storm())
    assert codes.count(OK) == have // price
    assert codes.count(INSUFFICIENT_POINTS) == 60 - have // price
    assert balance(r, keys, "u7") == have - price * (have // price) >= 0
    assert client.wait_idle(60)
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems


def test_kill9_of_a_member_shard_while_spends_are_in_flight(rally, redis_server) -> None:
    """Spends keep coming while member-0 is killed: every transfer gets a result, none twice,
    and resubmitting all of them afterwards returns the very same results."""
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    before = seed(client, cfg, r)
    users = sorted(before)[:80]
    transfers = [spend(f"k{i}", users[i % len(users)], 7) for i in range(800)]
    results: dict[str, object] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        sc = SyncSpendClient(redis.Redis.from_url(redis_server.url), keys, cfg.member_shards,
                             timeout_s=90)  # fmt: skip
        try:
            for i in range(0, len(transfers), 20):
                chunk = transfers[i : i + 20]
                for t, res in zip(chunk, sc.submit_many(chunk), strict=True):
                    results[t.key] = res
        except BaseException as err:  # reported by the test thread
            errors.append(err)
        finally:
            done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    deadline = time.monotonic() + 30
    while len(results) < 100 and time.monotonic() < deadline and not done.is_set():
        time.sleep(0.01)
    old_pid = client.kill9("member-0")
    feeder.join(180)
    assert not errors, errors
    assert len(results) == len(transfers)
    assert client.pids()["member-0"] != old_pid, "Ray did not restart the shard"

    sc = SyncSpendClient(r, keys, cfg.member_shards, timeout_s=60)
    replayed = sc.submit_many(transfers)
    assert {t.key: x for t, x in zip(transfers, replayed, strict=True)} == results
    ok = [t for t in transfers if results[t.key].code == OK]  # type: ignore[attr-defined]
    spent: dict[str, int] = {}
    for t in ok:
        spent[t.user_id] = spent.get(t.user_id, 0) + t.amount
    for u in users:
        assert balance(r, keys, u) == before[u] - spent.get(u, 0), u
    assert int(r.hget(keys.accounts, STORE)) == 7 * len(ok)
    assert client.wait_idle(60)
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems


def test_gifts_arrive_exactly_once_through_a_kill9(rally, redis_server) -> None:
    """Member-to-member gifts (a debit naming the recipient; the credit leg follows from the
    giver's shard) while member-0 is killed: each accepted gift is debited once and credited
    once, a resubmission changes nothing, the gift account ends at zero, the audit is clean."""
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    before = seed(client, cfg, r, n_batches=2)
    users = sorted(before)[:40]
    gifts = [
        spend(f"g{i}", users[i % len(users)], 3, account=f"gift:{NET}", rule="gift",
              to_user=users[(i * 7 + 1) % len(users)])
        for i in range(300)
    ]  # fmt: skip
    gifts = [g for g in gifts if g.to_user != g.user_id]
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def feed() -> None:
        sc = SyncSpendClient(redis.Redis.from_url(redis_server.url), keys, cfg.member_shards,
                             timeout_s=90)  # fmt: skip
        try:
            for i in range(0, len(gifts), 20):
                chunk = gifts[i : i + 20]
                for t, res in zip(chunk, sc.submit_many(chunk), strict=True):
                    results[t.key] = res
        except BaseException as err:  # reported by the test thread
            errors.append(err)

    feeder = threading.Thread(target=feed)
    feeder.start()
    deadline = time.monotonic() + 30
    while len(results) < 60 and time.monotonic() < deadline and feeder.is_alive():
        time.sleep(0.01)
    old_pid = client.kill9("member-0")
    feeder.join(180)
    assert not errors, errors
    assert len(results) == len(gifts)
    assert client.pids()["member-0"] != old_pid, "Ray did not restart the shard"
    sc = SyncSpendClient(r, keys, cfg.member_shards, timeout_s=60)
    assert dict(zip([g.key for g in gifts], sc.submit_many(gifts), strict=True)) == results
    assert client.wait_idle(60)
    ok = [g for g in gifts if results[g.key].code == OK]  # type: ignore[attr-defined]
    assert ok
    moved: dict[str, int] = {}
    for g in ok:
        moved[g.user_id] = moved.get(g.user_id, 0) - g.amount
        moved[g.to_user] = moved.get(g.to_user, 0) + g.amount
    for u in users:
        assert balance(r, keys, u) == before[u] + moved.get(u, 0), u
    assert int(r.hget(keys.accounts, f"gift:{NET}") or 0) == 0
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems
