"""The durable scheduler: jobs survive restarts, run once across several schedulers, and are
re-run when their claimant dies; it drives the watch clock."""

from __future__ import annotations

import time

import redis

from actors.client import RallyClient
from actors.keys import Keys
from actors.scheduler import Job, JobStore, Scheduler
from engine.events import Join, Online
from engine.member import state_decoder
from tests.actors.conftest import append, make_cfg


def runs(r: redis.Redis, ns: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(Keys(ns).k("sched", "runs")).items()}


def test_each_due_job_runs_once_across_schedulers(redis_server, namespace) -> None:
    cfg = make_cfg(redis_server.url, namespace)
    r = redis.Redis.from_url(redis_server.url)
    a = Scheduler(cfg, poll_s=0.01)
    b = Scheduler(cfg, poll_s=0.01)
    now = time.time()
    for i in range(20):
        a.add(Job(f"once-{i}", "incr"), now - 1)
    a.add(Job("every", "incr", interval_s=0.2), now)
    time.sleep(1.1)
    a.stop()
    b.stop()
    got = runs(r, namespace)
    assert all(got[f"once-{i}"] == 1 for i in range(20)), got
    assert 4 <= got["every"] <= 7, got  # due at 0, .2, .4, .6, .8, 1.0
    assert a.runs + b.runs == 20 + got["every"]  # no job ran twice
    assert JobStore(r, Keys(namespace)).due_time("once-3") is None  # one-shots are gone


def test_job_of_a_dead_claimant_runs_again_after_its_lease(redis_server, namespace) -> None:
    cfg = make_cfg(redis_server.url, namespace)
    r = redis.Redis.from_url(redis_server.url)
    store = JobStore(r, Keys(namespace))
    store.add(Job("orphan", "incr"), time.time() - 1)
    claimed = store.claim("dead-owner", time.time(), lease_s=0.3)  # claims, then "dies"
    assert [j.id for j, _ in claimed] == ["orphan"]
    s = Scheduler(cfg, poll_s=0.02, start=False)
    assert s.run_due() == 0  # the lease still holds
    time.sleep(0.35)
    assert s.run_due() == 1
    assert runs(r, namespace) == {"orphan": 1}
    assert not store.complete(claimed[0][0], "dead-owner", claimed[0][1], time.time())


def test_jobs_survive_a_scheduler_restart(redis_server, namespace) -> None:
    cfg = make_cfg(redis_server.url, namespace)
    r = redis.Redis.from_url(redis_server.url)
    first = Scheduler(cfg, start=False)
    first.add(Job("later", "incr"), time.time() + 0.3)
    first.stop()
    second = Scheduler(cfg, start=False)
    assert second.run_due() == 0
    time.sleep(0.35)
    assert second.run_due() == 1
    assert runs(r, namespace) == {"later": 1}


def test_watch_clock_pays_a_quiet_live_channel(ray_cluster, redis_server, namespace) -> None:
    from engine.rules import EarnRules, NetworkRules, RuleBook

    book = RuleBook({"n": NetworkRules(earn=EarnRules(watch_interval_s=1, welcome_points=0))})
    cfg = make_cfg(redis_server.url, namespace, book, watch_clock_interval_s=0.25, lateness_s=0.2)
    client = RallyClient(cfg).start(scheduler=True)
    try:
        r = redis.Redis.from_url(redis_server.url)
        now = time.time()
        append(r, cfg, [Online(id="on", network="n", channel="quiet", ts=now),
                        Join(id="j", network="n", channel="quiet", user_id="v", ts=now)])  # fmt: skip
        # no events: only the scheduler's clock moves the channel
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            raw = r.hget(Keys(namespace).mstate, "n:v")
            if raw is not None and state_decoder.decode(raw).balance >= 2 * 10:
                break
            time.sleep(0.05)
        assert client.wait_idle(30)
        state = state_decoder.decode(r.hget(Keys(namespace).mstate, "n:v"))
        assert state.balance >= 2 * 10, state  # at least two watch ticks of 10 points
        assert state.entries >= 2
    finally:
        client.stop()


def test_streak_at_risk_notices_once_per_member_and_day(redis_server, namespace) -> None:
    from actors.scheduler import streak_risk_notices
    from engine.member import MemberState, state_encoder
    from engine.rules import NetworkRules, RuleBook, StreakRules
    from engine.streak import notice_decoder

    book = RuleBook(
        {"acme": NetworkRules(), "quiet": NetworkRules(streak=StreakRules(at_risk_min_days=0))}
    )
    cfg = make_cfg(redis_server.url, namespace, book=book)
    keys = Keys(namespace)
    r = redis.Redis.from_url(redis_server.url)
    today = 20_000
    states = {
        "acme:keen": MemberState(streak=5, last_day=today - 1),  # at risk
        "acme:done": MemberState(streak=6, last_day=today),  # active today already
        "acme:new": MemberState(streak=2, last_day=today - 1),  # too short a streak
        "acme:lapsed": MemberState(streak=9, last_day=today - 3),  # already lost it
        "other:keen": MemberState(streak=5, last_day=today - 1),  # another network
    }
    r.hset(keys.mstate, mapping={k: state_encoder.encode(v) for k, v in states.items()})
    rules = StreakRules(at_risk_min_days=3)
    assert streak_risk_notices(r, keys, "acme", rules, today) == 1
    assert streak_risk_notices(r, keys, "acme", rules, today) == 0  # a re-run: nobody twice
    notices = [f for _, f in r.xrange(keys.notices) if b"streak_at_risk" in f]
    got = [notice_decoder.decode(f[b"streak_at_risk"]) for f in notices]
    assert [(n.network, n.user_id, n.streak, n.day) for n in got] == [("acme", "keen", 5, today)]
    # the job is scheduled for every network with notices on, at the configured hour
    s = Scheduler(cfg, poll_s=0.02, start=False)
    s.ensure_system_jobs(time.time())
    store = JobStore(r, keys)
    due = store.due_time("system:streak_risk:acme")
    assert due is not None
    assert due % 86_400 == 20 * 3_600
    assert store.due_time("system:streak_risk:quiet") is None  # notices off
