"""engine/event_hooks.py: which notices become which deliveries, stable ids, the retry life."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import event_hooks as eh
from engine.event_hooks import HookError, Subscription
from engine.payout import PayoutRules

RULES = PayoutRules(max_attempts=3, backoff_base_s=1.0, backoff_max_s=10.0, lease_s=30.0)
ALL = Subscription(id="all", network="n", url="http://127.0.0.1:1/h")
TIERS = Subscription(id="tiers", network="n", url="http://127.0.0.1:1/t", events=("tier.upgraded",))
OTHER = Subscription(id="other", network="m", url="http://127.0.0.1:1/o")


def test_notice_kinds_map_to_events_and_only_upgrades_count() -> None:
    assert eh.event_of("raffle_drawn", {}) == "raffle.drawn"
    assert eh.event_of("item_redeemed", {}) == "item.redeemed"
    assert eh.event_of("voucher_scanned", {}) == "reward.earned"
    assert eh.event_of("tier_changed", {"old_tier": 0, "new_tier": 2}) == "tier.upgraded"
    assert eh.event_of("tier_changed", {"old_tier": 2, "new_tier": 1}) is None
    assert eh.event_of("item_refunded", {}) is None
    assert eh.event_of("streak_at_risk", {}) is None


def test_deliveries_per_matching_subscription_with_stable_ids() -> None:
    data = {"network": "n", "user_id": "u", "old_tier": 0, "new_tier": 1}
    got = eh.deliveries([ALL, TIERS, OTHER], "1-0", "tier_changed", "n", data, 5.0)
    assert [d.sub_id for d in got] == ["all", "tiers"]
    again = eh.deliveries([ALL, TIERS, OTHER], "1-0", "tier_changed", "n", data, 99.0)
    assert [d.id for d in got] == [d.id for d in again], "a re-read notice: the same ids"
    assert [d.body for d in got] == [d.body for d in again], "and the same bytes"
    body = msgspec.json.decode(got[0].body)
    assert body == {"id": got[0].id, "type": "tier.upgraded", "data": data}
    assert eh.deliveries([TIERS], "2-0", "raffle_drawn", "n", {}, 5.0) == []
    assert eh.delivery_id("all", "1-0") != eh.delivery_id("all", "1-1")


def test_retry_schedule_dead_after_max_attempts_and_410_is_final() -> None:
    (d,) = eh.deliveries([ALL], "1-0", "raffle_drawn", "n", {"network": "n"}, 0.0)
    d = eh.claimed(RULES, d, 0.0)
    assert (d.attempts, d.next_at) == (1, 30.0), "leased: a dead sender's delivery comes back"
    with pytest.raises(HookError):
        eh.claimed(RULES, d, 1.0)
    d = eh.failed(RULES, d, 1.0, "HTTP 500", 0.5)
    assert (d.status, d.next_at) == ("pending", 1.0 + 0.75)
    d = eh.failed(RULES, eh.claimed(RULES, d, 2.0), 2.0, "HTTP 500", 0.0)
    d = eh.failed(RULES, eh.claimed(RULES, d, 5.0), 5.0, "timeout", 0.0)
    assert (d.status, d.attempts, d.reason) == ("dead", 3, "timeout")
    d = eh.retried(d, 6.0)
    assert (d.status, d.attempts, d.next_at) == ("pending", 0, 6.0)
    gone = eh.failed(RULES, eh.claimed(RULES, d, 6.0), 6.0, "HTTP 410", 0.1, final=True)
    assert gone.status == "dead"
    assert eh.delivered(eh.claimed(RULES, d, 6.0), 7.0).status == "delivered"


@given(st.text(max_size=80), st.lists(st.text(max_size=20), max_size=3))
def test_validate_names_the_field(url: str, events: list[str]) -> None:
    sub = Subscription(id="s", network="n", url=url, events=tuple(events))
    ok = url.startswith(("http://", "https://")) and set(events) <= set(eh.EVENT_TYPES)
    if ok:
        assert eh.validate(sub) is sub
    else:
        with pytest.raises(HookError) as err:
            eh.validate(sub)
        assert err.value.field in ("url", "events")
