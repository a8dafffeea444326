"""engine/store.py: item definitions and their checks, redemption ids, the member's guard."""

from __future__ import annotations

import pytest

from engine.member import MemberState
from engine.spend import LIMIT_REACHED, OK, apply_transfer
from engine.store import (
    UNLIMITED,
    Item,
    ItemSpec,
    Redemption,
    StoreError,
    build_item,
    check_redeemable,
    decode_spec,
    redeem_transfer,
    redemption_id,
    refund_transfer,
    stock_of,
)

TIERS = ("Bronze", "Silver", "Gold")


def item(**kw: object) -> Item:
    spec = ItemSpec(**{"name": "Mug", "cost": 10, **kw})  # type: ignore[arg-type]
    return build_item("mug", "acme", spec, TIERS, 100.0)


def test_an_update_keeps_what_it_does_not_name() -> None:
    old = item(description="old", per_member_limit=2)
    new = build_item("mug", "acme", ItemSpec(cost=20), TIERS, 200.0, old)
    assert (new.description, new.per_member_limit, new.cost) == ("old", 2, 20)
    assert (new.created_at, new.updated_at) == (100.0, 200.0)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (b'{"cost": 1}', "name"),
        (b'{"name": "x"}', "cost"),
        (b'{"name": "x", "cost": -1}', "cost"),
        (b'{"name": "x", "cost": "1"}', "cost"),
        (b'{"name": "", "cost": 1}', "name"),
        (b'{"name": "x", "cost": 1, "stock": -2}', "stock"),
        (b'{"name": "x", "cost": 1, "cooldown_s": -1}', "cooldown_s"),
        (b'{"name": "x", "cost": 1, "min_tier": "Iron"}', "min_tier"),
        (
            b'{"name": "x", "cost": 1, "available_from": 10, "available_until": 5}',
            "available_until",
        ),
        (b'{"name": "x", "cost": 1, "per_stream_limit": 3}', "per_stream_limit"),
        (b'{"name": "x", "cost": 1, "size": "L"}', "size"),
        (b"{", "body"),
    ],
)
def test_bad_items_name_their_field(spec: bytes, field: str) -> None:
    def load() -> None:
        parsed = decode_spec(spec)
        build_item("x", "acme", parsed, TIERS, 0.0)
        stock_of(parsed, creating=True)

    with pytest.raises(StoreError) as err:
        load()
    assert err.value.field == field


def test_stock_null_or_absent_is_unlimited_and_an_update_may_leave_it() -> None:
    assert stock_of(decode_spec(b'{"stock": null}'), creating=False) == UNLIMITED
    assert stock_of(decode_spec(b"{}"), creating=True) == UNLIMITED
    assert stock_of(decode_spec(b"{}"), creating=False) is None
    assert stock_of(decode_spec(b'{"stock": 3}'), creating=False) == 3


@pytest.mark.parametrize(
    ("kw", "tier", "now", "code"),
    [
        ({"enabled": False}, "Gold", 100.0, "item_disabled"),
        ({"available_from": 200.0}, "Gold", 100.0, "not_available_yet"),
        ({"available_until": 100.0}, "Gold", 100.0, "no_longer_available"),
        ({"min_tier": "Silver"}, "Bronze", 100.0, "tier_too_low"),
    ],
)
def test_what_the_gateway_checks_before_reserving(
    kw: dict[str, object], tier: str, now: float, code: str
) -> None:
    with pytest.raises(StoreError) as err:
        check_redeemable(item(**kw), tier, TIERS, now)
    assert err.value.code == code
    check_redeemable(item(), tier, TIERS, now)


def test_redemption_ids_depend_on_member_and_key_only() -> None:
    a = redemption_id("acme", "u1", "k")
    assert a == redemption_id("acme", "u1", "k")
    assert len({a, redemption_id("acme", "u2", "k"), redemption_id("acme", "u1", "k2")}) == 3
    assert redemption_id("acme", "u1:x", "k") != redemption_id("acme", "u1", ":xk")


def test_the_member_limit_travels_with_the_debit_and_a_refund_gives_it_back() -> None:
    it = item(per_member_limit=1)
    state = MemberState(balance=100)
    red = Redemption("rd1", "acme", "u1", "mug", "Mug", 10, "", "reserving", 5.0, 5.0, "store/rd1")
    red2 = Redemption("rd2", "acme", "u1", "mug", "Mug", 10, "", "reserving", 6.0, 6.0, "store/rd2")
    assert apply_transfer(state, redeem_transfer(it, red))[0].code == OK
    assert apply_transfer(state, redeem_transfer(it, red2))[0].code == LIMIT_REACHED
    assert apply_transfer(state, refund_transfer(it, red, 7.0))[0].code == OK
    assert apply_transfer(state, redeem_transfer(it, red2))[0].code == OK
    assert state.balance == 90


def test_tier_refusal_says_tier_required_and_points_needed() -> None:
    from engine.rules import TierRules

    rules = TierRules()
    with pytest.raises(StoreError) as err:
        check_redeemable(item(min_tier="Gold"), "Silver", TIERS, 100.0, rules, 1_234)
    assert err.value.extra == {"tier_required": "Gold", "points_needed": 2_000 - 1_234}
