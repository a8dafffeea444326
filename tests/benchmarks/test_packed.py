"""benchmarks/packed.py: the packed prototype still agrees with engine.member.apply_credit."""

from __future__ import annotations

import numpy as np

from benchmarks.packed import (
    Packed,
    Rows,
    apply_chats,
    chat_credits,
    one_at_a_time,
    rounds,
    workload,
)
from engine.member import DAY_S
from engine.rules import NetworkRules, TierRules


def test_rounds_number_each_members_credits_in_batch_order() -> None:
    assert rounds(np.array([7, 3, 7, 7, 3, 1])).tolist() == [0, 0, 1, 2, 1, 0]


def test_packed_chats_give_apply_credits_balances_and_rows() -> None:
    """50 members, 400 chats each over a day and a half: cooldowns, the daily cap, two days'
    streaks, and tiers low enough that the multipliers change what a chat earns."""
    rules = NetworkRules(tiers=TierRules(thresholds=(0, 50, 150, 250)))
    earn = rules.earn
    member, ts = workload(20_000, 50, seed=3, t0=1_750_000_000.0)
    points = np.full(len(member), earn.chat_points, dtype=np.int64)
    states, applied = one_at_a_time(chat_credits(member, ts, earn.chat_points), rules)
    for size in (1, 700, 20_000):
        s, out = Packed.empty(50), Rows([], [], [])
        for lo in range(0, len(member), size):
            hi = lo + size
            apply_chats(s, member[lo:hi], ts[lo:hi], points[lo:hi], rules, out)
        assert {m: int(s.balance[m]) for m in states} == {m: st.balance for m, st in states.items()}
        assert {m: int(s.tier[m]) for m in states} == {m: st.tier for m, st in states.items()}
        assert sum(len(a) for a in out.amount) == len(applied.entries)
    assert {st.tier for st in states.values()} == {3}
    per_day: dict[tuple[str, int], int] = {}  # chat entries (a point each) per member and day
    for e in applied.entries:
        if e.rule == "chat":
            k = (e.credit, int(e.ts // DAY_S))
            per_day[k] = per_day.get(k, 0) + 1
    assert max(per_day.values()) == earn.chat_daily_cap
