"""Streak at risk: who is at risk on a day, and when the scheduler's job is due."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.member import DAY_S, MemberState, effective_streak
from engine.rules import StreakRules
from engine.streak import at_risk, first_due, notice, notice_decoder, notice_encoder

RULES = StreakRules(at_risk_min_days=3, at_risk_hour_utc=20)


@given(st.integers(0, 60), st.integers(-1, 100), st.integers(1, 100), st.integers(0, 10))
def test_at_risk_exactly_when_the_streak_would_end_tonight(
    streak: int, last_day: int, today: int, min_days: int
) -> None:
    rules = StreakRules(at_risk_min_days=min_days)
    state = MemberState(streak=streak, last_day=last_day)
    risky = at_risk(state, today, rules)
    # at risk: the streak is still alive today, and would be gone tomorrow without activity
    alive_today = effective_streak(state, today) == streak
    gone_tomorrow = effective_streak(state, today + 1) == 0
    expected = min_days > 0 and streak >= min_days and alive_today and gone_tomorrow and streak > 0
    assert risky == (expected and last_day == today - 1)


@given(st.floats(0, 4e9, allow_nan=False))
def test_first_due_is_the_next_configured_hour(now: float) -> None:
    due = first_due(now, RULES)
    assert now <= due < now + DAY_S
    assert due % DAY_S == 20 * 3_600


def test_notice_round_trips_and_names_the_deadline() -> None:
    n = notice("acme", "u1", MemberState(streak=7, last_day=99), 100)
    assert notice_decoder.decode(notice_encoder.encode(n)) == n
    assert (n.streak, n.day, n.ends_at) == (7, 100, 101 * DAY_S)


def test_rules_checked() -> None:
    with pytest.raises(ValueError, match="0-23"):
        StreakRules(at_risk_hour_utc=24)
    assert not at_risk(MemberState(streak=9, last_day=4), 5, StreakRules(at_risk_min_days=0))
