"""The raffle actor on real Redis and Ray: lifecycle through its command log, state that
survives kill -9, the automatic close, giveaways from presence, and the published record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import msgspec
import pytest
import redis

from actors import health
from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.raffle import Command, RaffleKeys, Reply, SyncRaffleClient, load_raffle
from actors.scheduler import JobStore
from actors.trim import trim_streams
from engine import raffle as eng
from engine.events import Chat, Follow, Join, Online
from engine.member import state_decoder
from engine.rules import RuleBook
from gateway.audit import audit
from tests.actors.conftest import append, make_cfg

BASE = 151
BEACON = eng.Beacon("admin", "drand-round-99-0123456789abcdef", "drand 99")


@pytest.fixture
def raffles(
    ray_cluster: None, redis_server, namespace: str
) -> Iterator[tuple[RallyClient, RuntimeConfig, redis.Redis]]:
    cfg = make_cfg(redis_server.url, namespace)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg, redis.Redis.from_url(redis_server.url)
    client.stop()


def send(r: redis.Redis, cfg: RuntimeConfig, op: str, rid: str = "r1", **kw: object) -> Reply:
    cmd = Command(op=op, network="n", raffle=rid, ts=kw.pop("ts", 0.0), **kw)  # type: ignore[arg-type]
    return SyncRaffleClient(r, Keys(cfg.namespace), timeout_s=120).send(cmd)


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def ok(reply: Reply) -> dict[str, object]:
    assert reply.ok, (reply.code, reply.message)
    return reply.body


def test_free_raffle_lifecycle_publishes_a_verifiable_record(raffles) -> None:
    _client, cfg, r = raffles
    terms = eng.Terms(id="r1", network="n", max_tickets_per_member=3, winners=2, title="Free")
    ok(send(r, cfg, "create", terms=terms))
    assert send(r, cfg, "create", terms=terms).code == "raffle_exists"
    assert send(r, cfg, "buy", user_id="a", key="k", tickets=1).code == "raffle_not_open"
    opened = ok(send(r, cfg, "open"))
    assert len(str(opened["commitment"])) == 64
    for u, n in [("a", 1), ("b", 3), ("c", 2)]:
        body = ok(send(r, cfg, "buy", user_id=u, key=f"k-{u}", tickets=n))
        assert body["tickets"] == n
    # the same key again: the recorded answer, nothing added; another payload: a conflict
    assert ok(send(r, cfg, "buy", user_id="a", key="k-a", tickets=1))["tickets"] == 1
    assert send(r, cfg, "buy", user_id="a", key="k-a", tickets=2).code == "idempotency_conflict"
    assert send(r, cfg, "buy", user_id="b", key="k2", tickets=1).code == "ticket_limit"
    ok(send(r, cfg, "close"))
    assert send(r, cfg, "buy", user_id="d", key="k", tickets=1).code == "raffle_closed"
    drawn = ok(send(r, cfg, "draw", beacon=BEACON))
    assert len(drawn["winners"]) == 2  # type: ignore[arg-type]
    raffle = load_raffle(r, RaffleKeys(Keys(cfg.namespace)), "n", "r1")
    assert raffle is not None
    assert {u: h.tickets for u, h in raffle.holdings.items()} == {"a": 1, "b": 3, "c": 2}
    record = eng.published_decoder.decode(eng.published_encoder.encode(eng.publish(raffle)))
    assert eng.verify(record).ok
    assert record.seed
    assert eng.commitment_of(record.seed) == opened["commitment"]
    notices = [(k.decode(), msgspec.json.decode(v)) for _, f in r.xrange(Keys(cfg.namespace).notices)
               for k, v in f.items() if k.startswith(b"raffle_")]  # fmt: skip
    assert [k for k, _ in notices] == ["raffle_opened", "raffle_closed", "raffle_drawn"]
    (_, opened_notice), (_, closed_notice), (_, drawn_notice) = notices
    assert (opened_notice["raffle"], opened_notice["title"]) == ("r1", "Free")
    assert opened_notice["commitment"] == opened["commitment"]
    assert (closed_notice["tickets"], closed_notice["entrants"]) == (6, 3)
    assert drawn_notice["winners"] == [w.user_id for w in raffle.winners]


def test_state_survives_kill9_of_the_raffle_actor_during_sales(raffles) -> None:
    """Purchases stream in while the raffle actor is killed: every purchase answered once
    its tickets are committed, none lost, none doubled, retries answered as recorded."""
    client, cfg, r = raffles
    ok(send(r, cfg, "create", terms=eng.Terms(id="r1", network="n", max_tickets_per_member=50)))
    ok(send(r, cfg, "open"))
    members = [f"m{i}" for i in range(40)]
    answers: dict[tuple[str, int], Reply] = {}
    errors: list[BaseException] = []

    def buyer(user: str) -> None:
        try:
            for k in range(10):
                answers[(user, k)] = send(r, cfg, "buy", user_id=user, key=f"{user}-{k}", tickets=2)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=buyer, args=(u,)) for u in members]
    for t in threads:
        t.start()
    wait_for(lambda: len(answers) >= 20)
    answered_before_kill = len(answers)
    old = client.kill9("raffle")
    for t in threads:
        t.join()
    assert not errors, errors
    assert client.pids()["raffle"] != old
    assert answered_before_kill < len(answers), "the kill came after the sales"
    assert all(a.ok for a in answers.values()), [a for a in answers.values() if not a.ok][:3]
    # retries of every purchase: the recorded answers, nothing added
    for u in members[:5]:
        assert ok(send(r, cfg, "buy", user_id=u, key=f"{u}-0", tickets=2))["tickets"] == 2
    raffle = load_raffle(r, RaffleKeys(Keys(cfg.namespace)), "n", "r1")
    assert raffle is not None
    assert {u: h.tickets for u, h in raffle.holdings.items()} == dict.fromkeys(members, 20)


def test_automatic_close_through_the_durable_scheduler(raffles) -> None:
    _client, cfg, r = raffles
    close_at = int(time.time()) + 2
    terms = eng.Terms(id="r1", network="n", close_at=close_at)
    ok(send(r, cfg, "create", terms=terms))
    ok(send(r, cfg, "open"))
    ok(send(r, cfg, "buy", user_id="a", key="k", tickets=1))
    keys = Keys(cfg.namespace)
    store = JobStore(r, keys)
    assert store.due_time("raffle-close:n:r1") == close_at
    from actors.scheduler import Scheduler

    sched = Scheduler(cfg, start=False)
    deadline = time.monotonic() + 30
    status = "open"
    while time.monotonic() < deadline and status != "closed":
        sched.run_due()
        raffle = load_raffle(r, RaffleKeys(keys), "n", "r1")
        assert raffle is not None
        status = raffle.status
        time.sleep(0.1)
    assert status == "closed"
    assert store.due_time("raffle-close:n:r1") is None  # one-shot: done
    assert send(r, cfg, "buy", user_id="b", key="k", tickets=1).code == "raffle_closed"


def test_giveaway_enters_every_viewer_present(raffles) -> None:
    client, cfg, r = raffles
    now = time.time()
    events = [Online(id="on", network="n", channel="c", ts=now)] + [
        Join(id=f"j{i}", network="n", channel="c", user_id=f"v{i}", ts=now) for i in range(25)
    ]
    append(r, cfg, events)
    assert client.wait_idle(60)
    terms = eng.Terms(id="g1", network="n", kind="giveaway", channel="c", winners=3)
    ok(send(r, cfg, "create", "g1", terms=terms))
    ok(send(r, cfg, "open", "g1"))
    assert send(r, cfg, "buy", "g1", user_id="v1", key="k", tickets=1).code == "not_purchasable"
    closed = ok(send(r, cfg, "close", "g1"))
    assert closed["count"] == 25
    drawn = ok(send(r, cfg, "draw", "g1", beacon=BEACON))
    assert len({w["user_id"] for w in drawn["winners"]}) == 3  # type: ignore[union-attr]


# -- paid raffles: ticket sales, refunds and prizes are spends --------------------------------
def fund(client: RallyClient, r: redis.Redis, cfg: RuntimeConfig, users: list[str]) -> None:
    """Each member earns BASE points (welcome 100 + follow 50 + a first day's streak 1)."""
    now = time.time()
    append(
        r, cfg, [Follow(id=f"f-{u}", network="n", channel="c", user_id=u, ts=now) for u in users]
    )
    assert client.wait_idle(60)
    for u in users:
        assert balance(r, cfg, u) == BASE


def balance(r: redis.Redis, cfg: RuntimeConfig, user: str) -> int:
    raw = r.hget(Keys(cfg.namespace).mstate, f"n:{user}")
    return state_decoder.decode(raw).balance if raw else 0


def account(r: redis.Redis, cfg: RuntimeConfig, rid: str = "r1") -> int:
    return int(r.hget(Keys(cfg.namespace).accounts, f"raffle:n:{rid}") or 0)


def audited(client: RallyClient, r: redis.Redis, cfg: RuntimeConfig) -> None:
    assert client.wait_idle(60)
    report = audit(r, Keys(cfg.namespace), RuleBook({}))
    assert report.ok, report.problems


def test_ticket_sales_refunds_and_prizes_are_spends(raffles) -> None:
    client, cfg, r = raffles
    fund(client, r, cfg, ["a", "b", "c"])
    terms = eng.Terms(id="r1", network="n", price_points=40, max_tickets_per_member=3,
                      free_first_ticket=True, prize_points=500, winners=1)  # fmt: skip
    ok(send(r, cfg, "create", terms=terms))
    ok(send(r, cfg, "open"))
    assert ok(send(r, cfg, "buy", user_id="a", key="1", tickets=3))["cost_points"] == 80
    assert balance(r, cfg, "a") == BASE - 80
    refused = send(r, cfg, "buy", user_id="b", key="1", tickets=5)
    assert (refused.code, refused.field) == ("ticket_limit", "tickets")
    short = send(r, cfg, "buy", user_id="c", key="1", tickets=3)  # 80 of BASE: fine
    assert short.ok
    poor = send(r, cfg, "buy", user_id="c", key="2", tickets=1)  # holds 3 of 3 already
    assert poor.code == "ticket_limit"
    assert account(r, cfg) == 160
    ok(send(r, cfg, "close"))
    drawn = ok(send(r, cfg, "draw", beacon=BEACON))
    (winner,) = [w["user_id"] for w in drawn["winners"]]  # type: ignore[union-attr]
    assert balance(r, cfg, winner) == BASE - 80 + 500
    assert account(r, cfg) == 160 - 500
    audited(client, r, cfg)


def test_insufficient_points_and_cancel_refunds_everyone(raffles) -> None:
    client, cfg, r = raffles
    fund(client, r, cfg, ["a", "b"])
    ok(send(r, cfg, "create", terms=eng.Terms(id="r1", network="n", price_points=60,
                                              max_tickets_per_member=5)))  # fmt: skip
    ok(send(r, cfg, "open"))
    ok(send(r, cfg, "buy", user_id="a", key="1", tickets=2))
    short = send(r, cfg, "buy", user_id="b", key="1", tickets=3)
    assert (short.code, short.field) == ("insufficient_points", "tickets")
    assert (short.body["balance"], short.body["cost_points"]) == (BASE, 180)
    ok(send(r, cfg, "buy", user_id="b", key="2", tickets=1))
    assert (balance(r, cfg, "a"), balance(r, cfg, "b"), account(r, cfg)) == (
        BASE - 120,
        BASE - 60,
        180,
    )
    assert ok(send(r, cfg, "cancel"))["status"] == "cancelled"
    assert (balance(r, cfg, "a"), balance(r, cfg, "b"), account(r, cfg)) == (BASE, BASE, 0)
    assert send(r, cfg, "draw", beacon=BEACON).code == "raffle_cancelled"
    kinds = [
        k for _, f in r.xrange(Keys(cfg.namespace).notices) for k in f if k.startswith(b"raffle_")
    ]
    assert kinds == [b"raffle_opened", b"raffle_cancelled"]  # a refused draw appends nothing
    audited(client, r, cfg)


@pytest.mark.parametrize("victims", [("raffle",), ("member-0",), ("raffle", "member-1")])
def test_kill9_during_paid_ticket_sales(raffles, victims: tuple[str, ...]) -> None:
    """Members buy tickets while the raffle actor and/or a member shard is killed: every
    member paid exactly for the tickets they hold, the pool holds exactly the sales, retries
    change nothing, and the ledger audits clean."""
    client, cfg, r = raffles
    members = [f"m{i}" for i in range(30)]
    fund(client, r, cfg, members)
    ok(send(r, cfg, "create", terms=eng.Terms(id="r1", network="n", price_points=10,
                                              max_tickets_per_member=12)))  # fmt: skip
    ok(send(r, cfg, "open"))
    answers: dict[tuple[str, int], Reply] = {}
    errors: list[BaseException] = []

    def buyer(user: str) -> None:
        try:
            for k in range(6):
                answers[(user, k)] = send(r, cfg, "buy", user_id=user, key=f"{user}-{k}", tickets=2)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=buyer, args=(u,)) for u in members]
    for t in threads:
        t.start()
    wait_for(lambda: len(answers) >= 20)
    answered_before_kill = len(answers)
    old = {v: client.kill9(v) for v in victims}
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(client.pids()[v] != pid for v, pid in old.items())
    assert answered_before_kill < len(answers), "the kill came after the sales"
    assert all(a.ok for a in answers.values()), [(k, a) for k, a in answers.items() if not a.ok][:3]
    for u in members[:5]:  # retries: recorded answers, nothing paid twice
        assert ok(send(r, cfg, "buy", user_id=u, key=f"{u}-3", tickets=2))["cost_points"] == 20
    raffle = load_raffle(r, RaffleKeys(Keys(cfg.namespace)), "n", "r1")
    assert raffle is not None
    assert {u: h.tickets for u, h in raffle.holdings.items()} == dict.fromkeys(members, 12)
    assert client.wait_idle(60)
    for u in members:
        assert balance(r, cfg, u) == BASE - 120, u
    assert account(r, cfg) == 120 * len(members)
    audited(client, r, cfg)


def test_keyword_raffle_entered_from_chat(raffles) -> None:
    """Chats whose first word is the keyword, in the raffle's channel, after the open, enter
    once each (paying the entry price); other chats, channels and duplicates do not."""
    client, cfg, r = raffles
    fund(client, r, cfg, ["a", "b", "c", "poor"])
    terms = eng.Terms(id="kw", network="n", kind="keyword", keyword="!join", channel="c",
                      price_points=7)  # fmt: skip
    ok(send(r, cfg, "create", "kw", terms=terms))
    now = time.time()
    append(r, cfg, [Chat(id="early", network="n", channel="c", user_id="a", ts=now, text="!join")])
    assert client.wait_idle(60)
    ok(send(r, cfg, "open", "kw"))
    assert send(r, cfg, "buy", "kw", user_id="a", key="k", tickets=1).code == "keyword_only"
    t = time.time() + 1
    chats = [
        Chat(id="1", network="n", channel="c", user_id="a", ts=t, text="!join please"),
        Chat(id="2", network="n", channel="c", user_id="a", ts=t, text="!join"),  # again
        Chat(id="3", network="n", channel="c", user_id="b", ts=t, text="!join"),
        Chat(id="4", network="n", channel="other", user_id="c", ts=t, text="!join"),
        Chat(id="5", network="n", channel="c", user_id="c", ts=t, text="I will !join"),
    ]
    append(r, cfg, chats)
    append(r, cfg, chats[2:3])  # a duplicate delivery
    assert client.wait_idle(60)
    keys = Keys(cfg.namespace)
    # the channel shards have read every chat (wait_idle); a marker command queued
    # behind its enter commands answers once they are applied
    assert send(r, cfg, "buy", "kw", user_id="z", key="marker", tickets=1).code == "keyword_only"
    ok(send(r, cfg, "close", "kw"))
    raffle = load_raffle(r, RaffleKeys(keys), "n", "kw")
    assert raffle is not None
    assert {u: h.tickets for u, h in raffle.holdings.items()} == {"a": 1, "b": 1}
    chatted = BASE + 1  # one chat point each (the rest within the chat cooldown)
    got = (balance(r, cfg, "a"), balance(r, cfg, "b"), balance(r, cfg, "c"))
    assert got == (chatted - 7, chatted - 7, chatted)
    assert account(r, cfg, "kw") == 14
    assert not r.hgetall(RaffleKeys(keys).keywords)  # closed: the feed looks for it no more
    audited(client, r, cfg)


def test_the_retired_keyword_feed_leaves_nothing_behind(
    ray_cluster: None, redis_server, namespace: str
) -> None:
    """A deployment upgraded from a version whose raffle actor read each ingest stream a
    second time (group `raffle`, offsets in `offsets:raffle`, consumers `rafflefeed-{p}`):
    the channel shards remove all of it, so that neither the trimmer nor wait_idle waits
    for that group, and the health report calls no retired consumer dead."""
    cfg = make_cfg(redis_server.url, namespace)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    now = time.time()
    append(r, cfg, [Chat(id=f"c{i}", network="n", channel=f"ch{i}", user_id="a", ts=now)
                    for i in range(4)])  # fmt: skip
    old = health.Heartbeat(shard="", kind="rafflefeed", index=0, stream="", group="raffle",
                           pid=1, epoch=1, state="running", since=now - 600, ts=now - 600)  # fmt: skip
    for p in range(cfg.channel_shards):
        r.xgroup_create(keys.ingest(p), "raffle", id="0", mkstream=True)  # all is its lag
        r.hset(keys.k("offsets", "raffle"), keys.ingest(p), "0-0")
        beat = msgspec.structs.replace(old, shard=f"rafflefeed-{p}", index=p)
        r.hset(health.health_key(keys), beat.shard, health.heartbeat_encoder.encode(beat))
        r.set(health.epoch_key(keys, "rafflefeed", p), 1)
    client = RallyClient(cfg).start(scheduler=False)
    try:
        assert client.wait_idle(60)
        for p in range(cfg.channel_shards):
            groups = {g["name"].decode() for g in r.xinfo_groups(keys.ingest(p))}
            assert "raffle" not in groups
            assert not r.exists(health.epoch_key(keys, "rafflefeed", p))
        assert not r.exists(keys.k("offsets", "raffle"))
        shards = health.expected_shards(cfg.channel_shards, cfg.member_shards)
        wait_for(lambda: health.read_health(r, keys, shards).ready)
        names = {s.shard for s in health.read_health(r, keys, shards).shards}
        assert not {n for n in names if n.startswith("rafflefeed")}
        trimmed = trim_streams(r, keys, cfg)  # everything: every group there committed it
        for p in range(cfg.channel_shards):
            assert trimmed.get(keys.ingest(p), 0) > 0
            assert r.xlen(keys.ingest(p)) == 0
    finally:
        client.stop()
