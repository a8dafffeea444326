"""Streak at risk: a member whose daily streak ends tonight unless they come back today.

A member with a streak of at least `at_risk_min_days` who was active yesterday (UTC) but
not yet today is at risk once the day reaches `at_risk_hour_utc`: the scheduler appends a
`streak_at_risk` notice for them to the notices stream (the bot and the feed announce it),
once per member and day. Time is an argument; nothing here does I/O.
"""

from __future__ import annotations

import msgspec

from engine.member import DAY_S, MemberState
from engine.rules import StreakRules


class StreakAtRisk(msgspec.Struct, frozen=True):
    """The notice: `user_id` of `network` loses a `streak`-day streak at `ends_at`."""

    network: str
    user_id: str
    streak: int
    day: int
    """The UTC day (days since the epoch) on which the member has not been active yet."""
    ends_at: float
    """When that day ends (unix seconds): come back before it to keep the streak."""


def at_risk(state: MemberState, today: int, rules: StreakRules) -> bool:
    """True if `state`'s streak ends tonight unless the member is active `today`."""
    return (
        rules.at_risk_min_days > 0
        and state.streak >= rules.at_risk_min_days
        and state.last_day == today - 1
    )


def first_due(now: float, rules: StreakRules) -> float:
    """The first time at or after `now` at the configured hour of a UTC day."""
    due = (now // DAY_S) * DAY_S + rules.at_risk_hour_utc * 3_600
    return due if due >= now else due + DAY_S


def notice(network: str, user_id: str, state: MemberState, today: int) -> StreakAtRisk:
    return StreakAtRisk(network, user_id, state.streak, today, float((today + 1) * DAY_S))


notice_encoder = msgspec.msgpack.Encoder()
notice_decoder = msgspec.msgpack.Decoder(StreakAtRisk)
