"""engine/gating.py: who passes a minimum tier, and what a refusal says is missing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.gating import Shortfall, required_tier, shortfall
from engine.rules import TierRules

TIERS = TierRules()  # Bronze 0, Silver 500, Gold 2,000, Diamond 10,000


def test_examples() -> None:
    assert shortfall(TIERS, "Gold", 1, 1_200) == Shortfall("Gold", 800)
    assert shortfall(TIERS, 2, 2, 2_000) is None
    assert shortfall(TIERS, "Bronze", 0, 0) is None
    assert shortfall(TIERS, "Silver", 0, 499) == Shortfall("Silver", 1)


@given(st.integers(0, 3), st.integers(0, 20_000))
def test_passes_exactly_when_the_lifetime_tier_reaches_it(need: int, lifetime: int) -> None:
    rank = TIERS.tier_for(lifetime)
    got = shortfall(TIERS, need, rank, lifetime)
    if rank >= need:
        assert got is None
    else:
        assert got is not None
        assert got.tier_required == TIERS.names[need]
        assert TIERS.tier_for(lifetime + got.points_needed) >= need, "that many more reach it"
        assert TIERS.tier_for(lifetime + got.points_needed - 1) < need, "and no fewer"


def test_the_highest_minimum_applies_and_names_are_checked() -> None:
    import msgspec
    import pytest

    from engine.rules import NetworkRules

    assert required_tier(TIERS.names, "Silver", "Gold") == "Gold"
    assert required_tier(TIERS.names, "", "Silver") == "Silver"
    assert required_tier(TIERS.names, "", "") == ""
    with pytest.raises(msgspec.ValidationError, match=r"channels\.vip\.min_tier"):
        msgspec.convert({"channels": {"vip": {"min_tier": "Platinum"}}}, NetworkRules)
