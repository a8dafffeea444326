"""The cross-feature weekly bonus: members active in several features in a UTC week.

Four features count, each at most once a week (weeks start Monday 00:00 UTC): watched (a
`watch` credit), chatted on `chat_days` days or more (days with a `chat` credit), attended
a live event (an `attendance` credit), kept a streak of `streak_days` or more. The member
actor notes them as credits apply (engine/member.py `note_week`, in event-time order like every member rule),
keeping the current week and the one before. After a week ends (plus `pay_delay_s`), the
scheduler pays each member who had at least one feature `bonus_points` times the
multiplier of their feature count (`multipliers_pct`, 1 to 4 features), as a spend-path
credit from `bonus:{network}` keyed by the week, so it is paid once. The breakdown is read
back on the member endpoint (`breakdown`).
"""

from __future__ import annotations

import msgspec

from engine.member import (
    ATTENDED,
    DAY_S,
    EPOCH_MONDAY_DAYS,
    STREAK,
    WATCHED,
    MemberState,
    WeekActivity,
)
from engine.member import week_of_day as week_of_day
from engine.rules import WeeklyRules

WEEK_S = 7 * DAY_S
RULE = "weekly_bonus"


class Breakdown(msgspec.Struct, frozen=True):
    week: int
    watched: bool
    chat_days: int
    chatted: bool
    attended: bool
    streak: bool
    features: int
    multiplier_pct: int
    bonus_points: int


def week_start(week: int) -> float:
    return float((week * 7 - EPOCH_MONDAY_DAYS) * DAY_S)


def activity(state: MemberState, week: int) -> WeekActivity:
    for act in (state.week_now, state.week_before):
        if act.week == week:
            return act
    return WeekActivity(week)


def breakdown(state: MemberState, week: int, rules: WeeklyRules) -> Breakdown:
    act = activity(state, week)
    chatted = act.chat_days >= rules.chat_days > 0
    features = (
        bool(act.flags & WATCHED) + chatted + bool(act.flags & ATTENDED) + bool(act.flags & STREAK)
    )
    pct = rules.multipliers_pct[features - 1] if features else 0
    return Breakdown(
        week, bool(act.flags & WATCHED), act.chat_days, chatted, bool(act.flags & ATTENDED),
        bool(act.flags & STREAK), features, pct, rules.bonus_points * pct // 100,
    )  # fmt: skip


def first_due(now: float, rules: WeeklyRules) -> float:
    """When the payout of the week running at `now` is due: its end plus the delay."""
    week = week_of_day(int(now // DAY_S))
    return week_start(week + 1) + rules.pay_delay_s


def week_paid_at(due: float, rules: WeeklyRules) -> int:
    """The week whose bonus a payout due at `due` pays: the one that ended before it."""
    return week_of_day(int((due - rules.pay_delay_s) // DAY_S)) - 1
