"""engine/rewards.py: which ledger entries are rewards, and the notice each becomes."""

from __future__ import annotations

from engine.event_hooks import Subscription, deliveries, event_of
from engine.member import MemberState
from engine.rewards import RewardEarned, rewards
from tests.engine.factories import T0, apply, credit


def test_welcome_streak_and_custom_are_rewards_watch_and_chat_are_not() -> None:
    state = MemberState()
    out = apply(state, credit("w1", T0, "watch", 10))
    out.entries += apply(state, credit("c1", T0 + 60, "chat", 1)).entries
    out.entries += apply(state, credit("x1", T0 + 120, "custom", 30)).entries
    got = rewards(out.entries)
    assert [(r.rule, r.points, r.user_id) for r in got] == [
        ("welcome", 100, "u1"), ("streak", 1, "u1"), ("custom", 30, "u1")]  # fmt: skip
    assert got[0] == RewardEarned("net", "u1", "welcome", 100, "ch", "net:u1/welcome", T0)


def test_a_reward_notice_is_delivered_as_reward_earned() -> None:
    assert event_of("reward_earned", {}) == "reward.earned"
    sub = Subscription(id="s", network="net", url="http://x/h", events=("reward.earned",))
    (d,) = deliveries([sub], "1-0", "reward_earned", "net", {"rule": "weekly_bonus"}, T0)
    assert d.event == "reward.earned"


def test_the_weekly_bonus_paid_through_the_spend_path_is_a_reward() -> None:
    from engine.spend import Transfer, apply_transfer

    t = Transfer("weekly:9", "net", "u1", 75, "credit", "bonus:net", "weekly_bonus", ts=T0)
    result, entry = apply_transfer(MemberState(), t)
    assert result.ok
    assert entry is not None
    (got,) = rewards([entry])
    assert (got.user_id, got.rule, got.points) == ("u1", "weekly_bonus", 75)


def test_referral_rewards_of_both_levels_are_rewards() -> None:
    from engine.ledger import Entry

    entries = [Entry(f"net:r{i}/{rule}", T0, "net", "treasury:net", "member:net:ref", 25, rule, "")
               for i, rule in enumerate(("referral", "referral2", "referral_link", "watch"))]  # fmt: skip
    assert [r.rule for r in rewards(entries)] == ["referral", "referral2"]
