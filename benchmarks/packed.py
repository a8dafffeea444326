"""`python -m benchmarks.packed`: what the member rules would cost over packed state.

A measurement for issue 8's next step, not a rule of the engine. The member shard applies
each credit with `engine.member.apply_credit`, one `MemberState` object at a time. This
prototype applies the core of the same rules (welcome, daily streak, chat cooldown and
daily cap, tier multiplier, tier) to a batch at once, over numpy columns indexed by a dense
member index: a member's k-th credit of the batch goes in round k, and each round is one
vectorised pass over distinct members, so the rules stay sequential per member.

It leaves out what a full design would still have to carry: presence quality, repeated
chat, the weekly activity, per-channel standings, spend-guard counters, referrals, and the
encoding of state and ledger rows to and from Redis. It checks its balances against
`apply_credit` on a chat workload those rules do not touch (no text, no watch credits), and
reports microseconds per credit for both, in this process.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import numpy as np

from engine.member import DAY_S, Applied, Credit, MemberState, apply_credit
from engine.rules import NetworkRules

WELCOME, STREAK, CHAT = 0, 1, 2
"""Rule codes of the ledger rows the prototype emits."""


@dataclass
class Packed:
    """Member state as columns: row i is the member of dense index i."""

    balance: np.ndarray
    lifetime: np.ndarray
    tier: np.ndarray
    streak: np.ndarray
    last_day: np.ndarray
    chat_last_ts: np.ndarray
    chat_day: np.ndarray
    chat_day_points: np.ndarray
    entries: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Packed:
        def i64(v: int) -> np.ndarray:
            return np.full(n, v, dtype=np.int64)

        return cls(i64(0), i64(0), i64(0), i64(0), i64(-1), np.full(n, -1e18), i64(-1),
                   i64(0), i64(0))  # fmt: skip


@dataclass
class Rows:
    """Ledger rows as columns: the credit (its place in the batch), the rule, the amount."""

    credit: list[np.ndarray]
    rule: list[np.ndarray]
    amount: list[np.ndarray]

    def post(self, s: Packed, m: np.ndarray, at: np.ndarray, rule: int, amount: np.ndarray) -> None:
        paid = amount > 0
        m, at, amount = m[paid], at[paid], amount[paid]
        s.balance[m] += amount
        s.lifetime[m] += amount
        s.entries[m] += 1
        self.credit.append(at)
        self.rule.append(np.full(len(at), rule, dtype=np.int8))
        self.amount.append(amount)


def rounds(member: np.ndarray) -> np.ndarray:
    """Each credit's round: how many credits of the same member come before it in the batch."""
    order = np.argsort(member, kind="stable")
    sorted_m = member[order]
    first = np.r_[True, sorted_m[1:] != sorted_m[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(member)), 0))
    rank = np.empty(len(member), dtype=np.int64)
    rank[order] = np.arange(len(member)) - start
    return rank


def apply_chats(s: Packed, member: np.ndarray, ts: np.ndarray, points: np.ndarray,
                rules: NetworkRules, out: Rows) -> None:  # fmt: skip
    """Apply a batch of chat credits (in batch order) to `s`, appending ledger rows."""
    earn = rules.earn
    thresholds = np.asarray(rules.tiers.thresholds)
    multipliers = np.asarray(rules.tiers.multipliers_pct)
    streak_rules = rules.streak
    rank = rounds(member)
    by_round = np.argsort(rank, kind="stable")
    edges = np.searchsorted(rank[by_round], np.arange(int(rank.max()) + 2))
    for r in range(len(edges) - 1):
        at = by_round[edges[r] : edges[r + 1]]
        m, t = member[at], ts[at]
        tier_before = s.tier[m]
        new = s.last_day[m] < 0
        out.post(s, m[new], at[new], WELCOME, np.full(int(new.sum()), earn.welcome_points))
        day = (t // DAY_S).astype(np.int64)
        last = s.last_day[m]
        later = day > last
        streak = np.where(last == day - 1, s.streak[m] + 1, 1)
        s.streak[m[later]] = streak[later]
        s.last_day[m[later]] = day[later]
        capped = np.minimum(streak[later], streak_rules.cap_days)
        bonus = -(-streak_rules.points_per_day * capped // streak_rules.divisor)
        out.post(s, m[later], at[later], STREAK, bonus)
        cooled = t - s.chat_last_ts[m] >= earn.chat_cooldown_s
        fresh_day = s.chat_day[m] != day
        reset = cooled & fresh_day
        s.chat_day[m[reset]] = day[reset]
        s.chat_day_points[m[reset]] = 0
        got = np.minimum(points[at], earn.chat_daily_cap - s.chat_day_points[m])
        got = np.where(cooled & (got > 0), got, 0)
        earned = got > 0
        s.chat_last_ts[m[earned]] = t[earned]
        s.chat_day_points[m] += got
        out.post(s, m, at, CHAT, got * multipliers[tier_before] // 100)
        s.tier[m] = np.maximum(np.searchsorted(thresholds, s.lifetime[m], side="right") - 1, 0)


def chat_credits(member: np.ndarray, ts: np.ndarray, points: int) -> list[Credit]:
    """The chats as the member shard receives them: a `Credit` each, member i as user `u{i}`."""
    return [Credit(f"e{i}", "acme", "c1", f"u{m}", "", t, "chat", points)
            for i, (m, t) in enumerate(zip(member.tolist(), ts.tolist(), strict=True))]  # fmt: skip


def one_at_a_time(
    credits: list[Credit], rules: NetworkRules
) -> tuple[dict[int, MemberState], Applied]:
    """`credits` through `engine.member.apply_credit`, one `MemberState` at a time: the states
    by member index, and what they produced."""
    earn = rules.earn
    states: dict[str, MemberState] = {}
    applied = Applied()
    for c in credits:
        st = states.get(c.user_id)
        if st is None:
            st = states[c.user_id] = MemberState()
        apply_credit(st, c, rules, earn, applied)
    return {int(u.removeprefix("u")): st for u, st in states.items()}, applied


def workload(n: int, members: int, seed: int, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """`n` chats from `members` members, over a day and a half of event time."""
    rng = np.random.default_rng(seed)
    member = rng.integers(0, members, n)
    ts = t0 + np.sort(rng.uniform(0, 1.5 * DAY_S, n))
    return member, ts


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.packed", description=__doc__)
    ap.add_argument("--credits", type=int, default=500_000)
    ap.add_argument("--members", type=int, default=50_000)
    ap.add_argument("--batches", default="1000,5000,50000", help="credits per batch, a list")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rules = NetworkRules()
    earn = rules.earn
    t0 = float(random.Random(args.seed).randrange(1_700_000_000, 1_800_000_000))
    member, ts = workload(args.credits, args.members, args.seed, t0)
    points = np.full(args.credits, earn.chat_points, dtype=np.int64)

    credits = chat_credits(member, ts, earn.chat_points)
    start = time.process_time()
    states, applied = one_at_a_time(credits, rules)
    loop_us = (time.process_time() - start) * 1e6 / len(credits)
    print(f"apply_credit, one object at a time: {loop_us:.2f} us/credit, "
          f"{len(applied.entries):,} ledger rows")  # fmt: skip

    for size in [int(x) for x in args.batches.split(",")]:
        s = Packed.empty(args.members)
        out = Rows([], [], [])
        start = time.process_time()
        for i in range(0, args.credits, size):
            apply_chats(s, member[i : i + size], ts[i : i + size], points[i : i + size], rules,
                        out)  # fmt: skip
        us = (time.process_time() - start) * 1e6 / args.credits
        rows = sum(len(a) for a in out.amount)
        same = all(s.balance[m] == st.balance for m, st in states.items())
        same = same and rows == len(applied.entries)
        print(f"packed, batches of {size:,}: {us:.2f} us/credit ({loop_us / us:.1f}x), "
              f"{rows:,} ledger rows; balances and rows as apply_credit: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
