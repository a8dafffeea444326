"""The member rules: welcome once, daily streaks, chat cooldown and daily cap, tier
multipliers (tier before the credit), tier changes, deterministic entry ids, encodings."""

from __future__ import annotations

import msgspec
import pytest

from engine.member import (
    Credit,
    MemberState,
    TierChange,
    credits_decoder,
    day_of,
    effective_streak,
    roll_over,
    state_decoder,
    state_encoder,
)
from engine.rules import EarnRules, NetworkRules, TierRules
from tests.engine.factories import DAY, NET, T0, amounts, apply, credit, ledger_balance, settled

D0 = day_of(T0)
TIERS = TierRules()


def test_day_of_is_the_utc_day() -> None:
    assert day_of(T0) == D0 == 19_676
    assert day_of(T0 - 0.001) == D0 - 1
    assert day_of(T0 + DAY - 0.001) == D0
    assert day_of(0.0) == 0


def test_first_credit_gets_welcome_and_streak_then_never_welcome_again() -> None:
    state = MemberState()
    first = apply(state, credit("e1", T0 + 5, "follow", 50, name="Alice"))
    assert [(e.id, e.rule, e.amount) for e in first.entries] == [
        (f"{NET}:u1/welcome", "welcome", 100),
        (f"{NET}:u1/streak/{D0}", "streak", 1),
        (f"{NET}:e1/follow", "follow", 50),
    ]
    assert (state.balance, state.lifetime, state.entries, state.name) == (151, 151, 3, "Alice")
    same_day = apply(state, credit("e2", T0 + 50, "follow", 50))
    assert amounts(same_day) == {"follow": 50}
    next_day = apply(state, credit("e3", T0 + DAY, "follow", 50))
    assert amounts(next_day) == {"streak": 1, "follow": 50}
    assert state.name == "Alice"  # an empty user_name never erases the known name
    assert state.balance == state.lifetime == 151 + 50 + 51


def test_entries_are_double_entry_from_the_network_treasury() -> None:
    out = apply(MemberState(), credit("e1", T0, "custom", 10, channel="c9"))
    for e in out.entries:
        assert (e.debit, e.credit, e.network, e.channel, e.ts) == (
            f"treasury:{NET}",
            f"member:{NET}:u1",
            NET,
            "c9",
            T0,
        )
        assert e.amount > 0


def test_replay_yields_identical_entry_ids() -> None:
    credits = [credit(f"e{i}", T0 + i * 40_000, "chat", 1) for i in range(6)]
    runs = []
    for _ in range(2):
        state = MemberState()
        runs.append([e for c in credits for e in apply(state, c).entries])
    assert runs[0] == runs[1]
    ids = [e.id for e in runs[0]]
    assert len(ids) == len(set(ids))


def test_nothing_is_posted_for_zero_points() -> None:
    state = settled(100, D0, 0)
    out = apply(state, credit("e1", T0, "custom", 0))
    assert out.entries == []
    assert out.tier_changes == []
    assert state.balance == 100


@pytest.mark.parametrize(
    ("lifetime", "points", "expected"),
    [
        (0, 100, 100),
        (499, 100, 100),
        (500, 100, 125),
        (1_999, 100, 125),
        (2_000, 100, 150),
        (9_999, 100, 150),
        (10_000, 100, 200),
        (0, 7, 7),
        (500, 7, 8),  # floor(8.75)
        (2_000, 7, 10),  # floor(10.5)
        (10_000, 7, 14),
        (500, 1, 1),  # floor(1.25)
        (500, 3, 3),  # floor(3.75)
    ],
)
def test_multiplier_per_tier_boundary(lifetime: int, points: int, expected: int) -> None:
    state = settled(lifetime, D0, TIERS.tier_for(lifetime))
    out = apply(state, credit("e1", T0 + 1, "custom", points))
    assert amounts(out) == {"custom": expected}


def test_multiplier_uses_the_tier_before_the_credit() -> None:
    state = settled(490, D0, 0)
    out = apply(state, credit("e1", T0 + 1, "custom", 100))
    assert amounts(out) == {"custom": 100}
    assert out.tier_changes == [TierChange(NET, "u1", 0, 1, T0 + 1, 590)]
    assert state.tier == 1
    assert amounts(apply(state, credit("e2", T0 + 2, "custom", 100))) == {"custom": 125}


@pytest.mark.parametrize(
    ("lifetime", "points", "change"),
    [
        (0, 499, None),
        (399, 100, None),
        (400, 100, (0, 1)),
        (499, 1, (0, 1)),
        (500, 1_000, None),  # 500 + 1250 = 1750, still Silver
        (1_900, 80, (1, 2)),  # 80 * 1.25 = 100 -> 2000
        (1_900, 79, None),  # floor(98.75) = 98 -> 1998
        (9_000, 700, (2, 3)),  # 700 * 1.5 = 1050 -> 10050
        (0, 10_000, (0, 3)),  # several tiers at once: one change
        (10_000, 10_000, None),
    ],
)
def test_tier_change_emitted_exactly_when_crossing(
    lifetime: int, points: int, change: tuple[int, int] | None
) -> None:
    state = settled(lifetime, D0, TIERS.tier_for(lifetime))
    out = apply(state, credit("e1", T0 + 1, "custom", points))
    got = [(t.old_tier, t.new_tier) for t in out.tier_changes]
    assert got == ([change] if change else [])
    assert state.tier == TIERS.tier_for(state.lifetime)
    for t in out.tier_changes:
        assert (t.network, t.user_id, t.ts, t.lifetime) == (NET, "u1", T0 + 1, state.lifetime)


def test_welcome_and_streak_can_cross_a_tier_without_the_multiplier() -> None:
    rules = NetworkRules(
        earn=EarnRules(welcome_points=600),
        tiers=TierRules(multipliers_pct=(100, 300, 300, 300)),
    )
    state = MemberState()
    out = apply(state, credit("e1", T0, "custom", 10), rules)
    assert amounts(out) == {"welcome": 600, "streak": 1, "custom": 10}  # tier before = Bronze
    assert [(t.old_tier, t.new_tier) for t in out.tier_changes] == [(0, 1)]


def test_welcome_and_streak_are_never_multiplied() -> None:
    rules = NetworkRules(tiers=TierRules(multipliers_pct=(300, 300, 300, 300)))
    state = MemberState()
    assert amounts(apply(state, credit("e1", T0, "follow", 50), rules)) == {
        "welcome": 100,
        "streak": 1,
        "follow": 150,
    }
    diamond = MemberState(balance=20_000, lifetime=20_000, tier=3, streak=29, last_day=D0 - 1)
    assert amounts(apply(diamond, credit("e2", T0, "follow", 50))) == {"streak": 15, "follow": 100}


@pytest.mark.parametrize(
    ("days", "streaks", "bonuses"),
    [
        ([0], [1], [1]),
        ([0, 1, 2], [1, 2, 3], [1, 1, 2]),
        ([0, 0, 0, 1], [1, 1, 1, 2], [1, 1]),  # once per day
        ([0, 1, 3], [1, 2, 1], [1, 1, 1]),  # a missed day resets
        ([0, 1, 2, 3, 10, 11], [1, 2, 3, 4, 1, 2], [1, 1, 2, 2, 1, 1]),
    ],
)
def test_streak_increments_once_per_day_and_resets_after_a_missed_day(
    days: list[int], streaks: list[int], bonuses: list[int]
) -> None:
    state = MemberState()
    got_streaks, got_bonuses = [], []
    for i, d in enumerate(days):
        out = apply(state, credit(f"e{i}", T0 + d * DAY + 3_600, "custom", 1))
        got_streaks.append(state.streak)
        got_bonuses += [e.amount for e in out.entries if e.rule == "streak"]
        assert state.last_day == D0 + d
    assert got_streaks == streaks
    assert got_bonuses == bonuses


def test_streak_bonus_caps_at_30_days() -> None:
    state = MemberState(balance=1, lifetime=1, streak=28, last_day=D0 - 1)
    got = []
    for d in range(4):
        out = apply(state, credit(f"e{d}", T0 + d * DAY, "custom", 1))
        got.append((state.streak, amounts(out)["streak"]))
    assert got == [(29, 15), (30, 15), (31, 15), (32, 15)]


def test_credit_from_an_earlier_day_gives_no_streak() -> None:
    state = settled(100, D0, 0)
    out = apply(state, credit("e1", T0 - DAY, "custom", 5))
    assert amounts(out) == {"custom": 5}
    assert (state.streak, state.last_day) == (1, D0)


def test_effective_streak_and_roll_over() -> None:
    state = MemberState(streak=5, last_day=D0)
    assert effective_streak(state, D0) == 5
    assert effective_streak(state, D0 + 1) == 5
    assert effective_streak(state, D0 + 2) == 0
    assert roll_over(state, D0 + 1) is False
    assert state.streak == 5
    assert roll_over(state, D0 + 2) is True
    assert state.streak == 0
    assert roll_over(state, D0 + 3) is False


@pytest.mark.parametrize(
    ("offsets", "awarded"),
    [
        ([0, 10, 29.9, 30, 59, 60.5], [1, 0, 0, 1, 0, 1]),
        ([0, 31, 62, 93], [1, 1, 1, 1]),
        ([5, 5], [1, 0]),
    ],
)
def test_chat_cooldown_counts_from_the_last_paid_chat(
    offsets: list[float], awarded: list[int]
) -> None:
    state = settled(100, D0, 0)
    got = [
        amounts(apply(state, credit(f"c{i}", T0 + o, "chat", 1))).get("chat", 0)
        for i, o in enumerate(offsets)
    ]
    assert got == awarded


def test_chat_cooldown_is_per_member() -> None:
    alice, bob = settled(100, D0, 0), settled(100, D0, 0)
    assert amounts(apply(alice, credit("a1", T0, "chat", 1))) == {"chat": 1}
    assert amounts(apply(bob, credit("b1", T0 + 1, "chat", 1, user="bob"))) == {"chat": 1}
    assert amounts(apply(alice, credit("a2", T0 + 2, "chat", 1))) == {}


def test_chat_daily_cap_partial_then_zero_then_resets_on_a_new_utc_day() -> None:
    earn = EarnRules(chat_cooldown_s=0, chat_daily_cap=5)
    state = settled(100, D0, 0)
    rules = NetworkRules(earn=earn)
    times = [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + DAY - 1, T0 + DAY, T0 + DAY + 1]
    got = [
        amounts(apply(state, credit(f"c{i}", t, "chat", 2), rules)).get("chat", 0)
        for i, t in enumerate(times)
    ]
    assert got == [2, 2, 1, 0, 0, 2, 2]
    assert (state.chat_day, state.chat_day_points) == (D0 + 1, 4)


def test_chat_daily_cap_counts_base_points_before_the_multiplier() -> None:
    earn = EarnRules(chat_cooldown_s=0, chat_daily_cap=5)
    state = settled(500, D0, 1)  # Silver, 125 %
    rules = NetworkRules(earn=earn)
    got = [
        amounts(apply(state, credit(f"c{i}", T0 + i, "chat", 2), rules)).get("chat", 0)
        for i in range(4)
    ]
    assert got == [2, 2, 1, 0]  # floor(2.5), floor(2.5), floor(1.25)
    assert state.chat_day_points == 5


def test_cap_does_not_apply_to_other_rules() -> None:
    earn = EarnRules(chat_cooldown_s=1_000, chat_daily_cap=0)
    state = settled(100, D0, 0)
    out = apply(state, credit("f1", T0, "follow", 50), NetworkRules(earn=earn))
    assert amounts(out) == {"follow": 50}


def test_member_state_round_trips_through_msgpack() -> None:
    state = MemberState()
    for i in range(5):
        apply(state, credit(f"e{i}", T0 + i * 50_000, "custom", 300, name="Zoë 🎮"))
    assert state.tier == 1
    again = state_decoder.decode(state_encoder.encode(state))
    assert again == state
    assert state_decoder.decode(state_encoder.encode(MemberState())) == MemberState()


def test_credits_and_tier_changes_round_trip_through_msgpack() -> None:
    credits = [
        credit("e1", T0, "chat", 1, name="A"),
        Credit("w:n:c:5:u", "n", "c", "u", "", 1.5, "watch", 15),
    ]
    assert credits_decoder.decode(state_encoder.encode(credits)) == credits
    change = TierChange(NET, "u1", 0, 2, T0, 2_100)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(change), type=TierChange) == change


def test_balance_equals_ledger_for_a_day_of_credits() -> None:
    state = MemberState()
    entries = []
    for i in range(40):
        rule = ("chat", "follow", "custom", "watch")[i % 4]
        entries += apply(state, credit(f"e{i}", T0 + i * 3_000, rule, 10 * i)).entries
    assert state.balance == state.lifetime == ledger_balance(NET, "u1", entries)
    assert state.entries == len(entries)
    assert state.tier == TIERS.tier_for(state.lifetime)
