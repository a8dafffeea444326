"""Rule configuration: defaults from the product issue, validation, tiers, streak bonus,
per-channel overrides and the RuleBook builtins round trip."""

from __future__ import annotations

import msgspec
import pytest

from engine.rules import EarnRules, NetworkRules, RuleBook, StreakRules, TierRules

TIERS = TierRules()


def test_default_tiers_are_the_products() -> None:
    assert TIERS.names == ("Bronze", "Silver", "Gold", "Diamond")
    assert TIERS.thresholds == (0, 500, 2_000, 10_000)
    assert TIERS.multipliers_pct == (100, 125, 150, 200)


@pytest.mark.parametrize(
    ("lifetime", "tier", "to_next"),
    [
        (0, 0, 500),
        (1, 0, 499),
        (499, 0, 1),
        (500, 1, 1_500),
        (1_999, 1, 1),
        (2_000, 2, 8_000),
        (9_999, 2, 1),
        (10_000, 3, None),
        (10_000_000, 3, None),
    ],
)
def test_tier_for_and_points_to_next(lifetime: int, tier: int, to_next: int | None) -> None:
    assert TIERS.tier_for(lifetime) == tier
    assert TIERS.points_to_next(lifetime) == to_next


@pytest.mark.parametrize(
    "kwargs",
    [
        {"names": ("A", "B"), "thresholds": (0, 10, 20), "multipliers_pct": (100, 100, 100)},
        {"names": ("A", "B"), "thresholds": (5, 10), "multipliers_pct": (100, 100)},
        {"names": ("A", "B"), "thresholds": (0, 0), "multipliers_pct": (100, 100)},
        {"names": ("A", "B", "C"), "thresholds": (0, 20, 10), "multipliers_pct": (1, 1, 1)},
    ],
)
def test_bad_tiers_are_rejected(kwargs: dict[str, tuple[object, ...]]) -> None:
    with pytest.raises(ValueError, match="tiers"):
        TierRules(**kwargs)  # type: ignore[arg-type]


STREAK_BONUS = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 10: 5, 11: 6, 29: 15, 30: 15, 31: 15, 365: 15}


@pytest.mark.parametrize(("streak", "bonus"), STREAK_BONUS.items())
def test_streak_bonus_is_ceil_of_5_times_capped_streak_over_10(streak: int, bonus: int) -> None:
    assert StreakRules().bonus(streak) == bonus
    assert bonus == -(-5 * min(streak, 30) // 10)


def test_earn_defaults_are_valid_and_validated() -> None:
    earn = EarnRules()
    assert earn.watch_interval_s > 0
    assert earn.ignore == frozenset()
    with pytest.raises(ValueError, match="watch_interval_s"):
        EarnRules(watch_interval_s=0)
    with pytest.raises(ValueError, match="chat_points must not be negative"):
        EarnRules(chat_points=-1)


def _book() -> RuleBook:
    return RuleBook(
        {
            "tw": NetworkRules(
                earn=EarnRules(follow_points=40, ignore=frozenset({"nightbot"})),
                channels={
                    "big": {"follow_points": 7, "ignore": frozenset({"nightbot", "mod"})},
                    "subby": {"sub_points_by_tier": (1, 2, 3), "chat_daily_cap": 5},
                },
            ),
            "yt": NetworkRules(tiers=TierRules(multipliers_pct=(100, 110, 120, 130))),
        }
    )


def test_channel_override_changes_only_its_fields_and_channel() -> None:
    book = _book()
    big = book.earn("tw", "big")
    assert big.follow_points == 7
    assert big.ignore == frozenset({"nightbot", "mod"})
    assert big.chat_points == EarnRules().chat_points
    subby = book.earn("tw", "subby")
    assert (subby.sub_points_by_tier, subby.chat_daily_cap) == ((1, 2, 3), 5)
    assert subby.follow_points == 40  # inherits the network's own rules
    assert book.earn("tw", "other") == book.network("tw").earn
    assert book.earn("nowhere", "big") == EarnRules()
    assert book.network("nowhere") == NetworkRules()
    assert book.network("yt").tiers.multipliers_pct == (100, 110, 120, 130)


def test_rulebook_builtins_round_trip_through_json() -> None:
    book = _book()
    wire = msgspec.json.decode(msgspec.json.encode(book.to_builtins()))
    again = RuleBook.from_builtins(wire)
    assert msgspec.json.decode(msgspec.json.encode(again.to_builtins())) == wire
    for network in ("tw", "yt", "nowhere"):
        assert again.network(network).earn == book.network(network).earn
        assert again.network(network).tiers == book.network(network).tiers
        assert again.network(network).streak == book.network(network).streak
        for channel in ("big", "subby", "other"):
            earn = again.earn(network, channel)
            assert earn == book.earn(network, channel)
            assert isinstance(earn.ignore, frozenset)
            assert isinstance(earn.sub_points_by_tier, tuple)


@pytest.mark.parametrize(
    "override",
    [{"chat_points": -1}, {"chat_points": "3"}, {"no_such_rule": 1}, {"watch_interval_s": 0}],
)
def test_bad_channel_override_is_rejected(override: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RuleBook({"tw": NetworkRules(channels={"c": override})})


def test_from_builtins_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        RuleBook.from_builtins({"tw": {"earn": {"chat_pointz": 1}}})
