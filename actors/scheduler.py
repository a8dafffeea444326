"""A durable scheduler (the project's own QStash): one-shot and repeating jobs kept in Redis.

Jobs survive restarts. A due job is claimed with a lease (SET NX PX) so that, however many
schedulers run, one runs it; the claimant completes it by rescheduling (repeating) or
deleting (one-shot) while it still holds the lease. If the claimant dies, the lease
expires and another scheduler runs the job again: handlers must be idempotent (the watch
clock and the streak rollover are, by construction).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.redisconn import connect
from actors.trim import trim_streams
from engine import weekly
from engine.member import DAY_S, state_decoder
from engine.rules import RuleBook, StreakRules, WeeklyRules
from engine.spend import Transfer
from engine.streak import at_risk, first_due, notice, notice_encoder

log = logging.getLogger(__name__)


class Job(msgspec.Struct, frozen=True):
    id: str
    kind: str
    interval_s: float = 0.0
    """0 = one-shot; otherwise the job repeats every interval_s from its first due time."""
    payload: dict[str, Any] = {}


_job_encoder = msgspec.msgpack.Encoder()
job_encoder = _job_encoder
_job_decoder = msgspec.msgpack.Decoder(Job)

CLAIM = r"""
local due, lease_prefix, owner, now, lease_ms, limit = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local out = {}
for i = 1, #ids, 2 do
  if redis.call('SET', lease_prefix .. ids[i], owner, 'NX', 'PX', lease_ms) then
    table.insert(out, ids[i]); table.insert(out, ids[i + 1])
  end
end
return out
"""

COMPLETE = r"""
local due, jobs, lease = KEYS[1], KEYS[2], KEYS[3]
local id, owner, next_due = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lease) ~= owner then return 0 end
if next_due == '' then
  redis.call('ZREM', due, id); redis.call('HDEL', jobs, id)
else
  redis.call('ZADD', due, next_due, id)
end
redis.call('DEL', lease)
return 1
"""


RISK_NOTICES = r"""
local done, notices, ttl = KEYS[1], KEYS[2], ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', done, ARGV[i]) == 1 then
    redis.call('XADD', notices, 'MAXLEN', '~', 100000, '*', 'streak_at_risk', ARGV[i + 1])
    n = n + 1
  end
end
redis.call('EXPIRE', done, ttl)
return n
"""
"""KEYS: the day's set of members notified, notices; ARGV: ttl, then (user, notice) pairs.
A member already in the set is skipped, so a job re-run after a crash notifies nobody twice."""
RISK_SCAN_COUNT = 2_000


def streak_risk_notices(
    r: redis.Redis, keys: Keys, network: str, rules: StreakRules, today: int
) -> int:
    """Append a `streak_at_risk` notice for every member of `network` at risk `today`
    (engine/streak.py), once per member and day; returns how many were appended."""
    script = r.register_script(RISK_NOTICES)
    done = keys.k("streakrisk", network, str(today))
    prefix = f"{network}:"
    sent = 0
    batch: list[bytes | str] = []
    for raw_key, raw in r.hscan_iter(keys.mstate, match=f"{network}:*", count=RISK_SCAN_COUNT):
        nu = raw_key.decode()
        if not nu.startswith(prefix):
            continue
        state = state_decoder.decode(raw)
        if at_risk(state, today, rules):
            user = nu[len(prefix) :]
            batch += [user, notice_encoder.encode(notice(network, user, state, today))]
        if len(batch) >= 2 * RISK_SCAN_COUNT:
            sent += int(script(keys=[done, keys.notices], args=[2 * DAY_S, *batch]))
            batch = []
    if batch:
        sent += int(script(keys=[done, keys.notices], args=[2 * DAY_S, *batch]))
    return sent


BONUS_WINDOW = 5_000
BONUS_TIMEOUT_S = 120.0


def pay_weekly_bonus(
    r: redis.Redis, keys: Keys, cfg: RuntimeConfig, network: str, rules: WeeklyRules, due: float
) -> tuple[int, int]:
    """Credit every member of `network` their bonus for the week paid at `due` (engine/
    weekly.py) through the spend path, keyed by the week: a re-run pays nobody twice.
    Returns (members paid, points)."""
    from actors.spend import SyncSpendClient

    week = weekly.week_paid_at(due, rules)
    prefix = f"{network}:"
    client = SyncSpendClient(r, keys, cfg.member_shards, timeout_s=BONUS_TIMEOUT_S)
    paid = points = 0
    batch: list[Transfer] = []

    def flush() -> None:
        nonlocal paid, points
        for t, res in zip(batch, client.submit_many(batch), strict=True):
            if res.ok:
                paid += 1
                points += t.amount
        batch.clear()

    try:
        for raw_key, raw in r.hscan_iter(keys.mstate, match=f"{network}:*", count=RISK_SCAN_COUNT):
            nu = raw_key.decode()
            if not nu.startswith(prefix):
                continue
            b = weekly.breakdown(state_decoder.decode(raw), week, rules)
            if b.bonus_points > 0:
                batch.append(Transfer(
                    f"weekly:{week}", network, nu[len(prefix):], b.bonus_points, "credit",
                    f"bonus:{network}", weekly.RULE, ref=str(week), ts=due,
                ))  # fmt: skip
            if len(batch) >= BONUS_WINDOW:
                flush()
        if batch:
            flush()
    finally:
        client.close()
    log.info("weekly_bonus network=%s week=%d paid=%d points=%d", network, week, paid, points)
    return paid, points


class JobStore:
    """The jobs in Redis: add, claim, complete."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._claim = r.register_script(CLAIM)
        self._complete = r.register_script(COMPLETE)

    def add(self, job: Job, due: float, *, replace: bool = False) -> bool:
        """Schedule `job` at `due`. A repeating job already scheduled keeps its time."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.sched_jobs, job.id, _job_encoder.encode(job))
            pipe.zadd(self.keys.sched_due, {job.id: due}, nx=not replace)
            added = pipe.execute()[1]
        return bool(added)

    def remove(self, job_id: str) -> None:
        self.r.zrem(self.keys.sched_due, job_id)
        self.r.hdel(self.keys.sched_jobs, job_id)

    def claim(
        self, owner: str, now: float, lease_s: float, limit: int = 100
    ) -> list[tuple[Job, float]]:
        got = self._claim(
            keys=[self.keys.sched_due],
            args=[self.keys.sched_lease(""), owner, now, int(lease_s * 1000), limit],
        )
        out: list[tuple[Job, float]] = []
        for i in range(0, len(got), 2):
            raw = self.r.hget(self.keys.sched_jobs, got[i])
            if raw is not None:
                out.append((_job_decoder.decode(raw), float(got[i + 1])))
        return out

    def complete(self, job: Job, owner: str, due: float, now: float) -> bool:
        """Reschedule (repeating) or delete (one-shot), if `owner` still holds the lease."""
        if job.interval_s > 0:
            periods = max(1, math.floor((now - due) / job.interval_s) + 1)
            next_due: float | str = due + periods * job.interval_s
        else:
            next_due = ""
        done = self._complete(
            keys=[self.keys.sched_due, self.keys.sched_jobs, self.keys.sched_lease(job.id)],
            args=[job.id, owner, next_due],
        )
        return bool(done)

    def due_time(self, job_id: str) -> float | None:
        score = self.r.zscore(self.keys.sched_due, job_id)
        return None if score is None else float(score)


Handler = Callable[[Job, float], None]


class Scheduler:
    """Runs due jobs with registered handlers, polling every `poll_s` (a thread)."""

    def __init__(
        self, cfg: RuntimeConfig, handlers: dict[str, Handler] | None = None,
        *, poll_s: float = 0.1, lease_s: float = 30.0, start: bool = True,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.r = connect(cfg.redis_url)
        self.store = JobStore(self.r, self.keys)
        self.owner = f"sched-{uuid.uuid4().hex[:12]}"
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.handlers: dict[str, Handler] = {
            "watch_clock": self._watch_clock,
            "streak_rollover": self._streak_rollover,
            "incr": self._incr,
            "trim": self._trim,
            "raffle_close": self._raffle_close,
            "streak_risk": self._streak_risk,
            "weekly_bonus": self._weekly_bonus,
        }
        self.handlers.update(handlers or {})
        self.runs = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.owner, daemon=True)
        if start:
            self.thread.start()

    def ensure_system_jobs(self, now: float) -> None:
        """The jobs every deployment has: the watch clock and the stream trimmer. (The daily
        streak rollover is run by the member shards when their watermark enters a new day.)"""
        if self.cfg.watch_clock_interval_s > 0:
            job = Job("system:watch_clock", "watch_clock", self.cfg.watch_clock_interval_s)
            self.store.add(job, now + self.cfg.watch_clock_interval_s)
        if self.cfg.trim_interval_s > 0:
            job = Job("system:trim", "trim", self.cfg.trim_interval_s)
            self.store.add(job, now + self.cfg.trim_interval_s)
        book = RuleBook.from_builtins(self.cfg.rules)
        for network, rules in sorted(book.networks.items()):
            job_id = f"system:streak_risk:{network}"
            if rules.streak.at_risk_min_days <= 0:
                self.store.remove(job_id)
            else:
                job = Job(job_id, "streak_risk", DAY_S, {"network": network})
                self.store.add(job, first_due(now, rules.streak))
            bonus_id = f"system:weekly_bonus:{network}"
            if rules.weekly.bonus_points <= 0:
                self.store.remove(bonus_id)
                continue
            job = Job(bonus_id, "weekly_bonus", weekly.WEEK_S, {"network": network})
            self.store.add(job, weekly.first_due(now, rules.weekly))

    def run_due(self, now: float | None = None) -> int:
        """Claim and run every due job once; returns how many ran."""
        now = time.time() if now is None else now
        ran = 0
        for job, due in self.store.claim(self.owner, now, self.lease_s):
            handler = self.handlers.get(job.kind)
            if handler is None:
                log.error("no handler for job kind %r (%s)", job.kind, job.id)
                continue
            handler(job, due)
            if self.store.complete(job, self.owner, due, time.time()):
                ran += 1
            else:
                log.warning("lost the lease of %s while running it", job.id)
        self.runs += ran
        return ran

    def _run(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                self.run_due()
            except redis.ConnectionError:
                log.warning("scheduler lost Redis; retrying")
                time.sleep(0.5)
            except Exception:
                log.exception("scheduler loop failed")
                time.sleep(1.0)

    # -- handlers -------------------------------------------------------------------------
    def _watch_clock(self, job: Job, due: float) -> None:
        now = time.time()
        with self.r.pipeline(transaction=False) as pipe:
            for p in range(self.cfg.channel_shards):
                pipe.xadd(self.keys.ingest(p), {"clock": repr(now)})
            pipe.execute()

    def _streak_rollover(self, job: Job, due: float) -> None:
        """Retired: member shards roll streaks over on their watermark. A deployment that
        still has the job drops it."""
        self.store.remove(job.id)

    def _streak_risk(self, job: Job, due: float) -> None:
        """Notices for the network's members whose streak is at risk on the day of `due`."""
        network = str(job.payload["network"])
        rules = RuleBook.from_builtins(self.cfg.rules).network(network).streak
        streak_risk_notices(self.r, self.keys, network, rules, int(due // DAY_S))

    def _weekly_bonus(self, job: Job, due: float) -> None:
        """Pay the network's weekly bonus for the week that ended before `due`."""
        network = str(job.payload["network"])
        rules = RuleBook.from_builtins(self.cfg.rules).network(network).weekly
        pay_weekly_bonus(self.r, self.keys, self.cfg, network, rules, due)

    def _trim(self, job: Job, due: float) -> None:
        trim_streams(self.r, self.keys, self.cfg)

    def _raffle_close(self, job: Job, due: float) -> None:
        """A raffle's automatic close: a close command in the raffle actor's log (which
        applies it once, after every purchase appended before it; closing twice is refused
        the second time)."""
        from actors.raffle import Command, append_command

        net, rid = str(job.payload["network"]), str(job.payload["raffle"])
        append_command(self.r, self.keys, Command(op="close", network=net, raffle=rid, ts=due))

    def _incr(self, job: Job, due: float) -> None:
        """A test and diagnostics job: count a run in a Redis hash."""
        self.r.hincrby(self.keys.k("sched", "runs"), job.id, 1)
        delay = float(job.payload.get("sleep_s", 0))
        if delay:
            time.sleep(delay)

    # -- actor methods --------------------------------------------------------------------
    def add(self, job: Job, due: float, replace: bool = False) -> bool:
        return self.store.add(job, due, replace=replace)

    def pid(self) -> int:
        import os

        return os.getpid()

    def ping(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
