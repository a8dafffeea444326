"""Custom-action gating (engine/gating.py custom_refusal, applied by engine/member.py): a
channel's custom actions from a member below its `custom_min_tier` earn nothing, judged with
the member's tier at the action's event time; the refusal is kept with its reason."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.member import MemberState
from engine.reference import Reference
from engine.rules import EarnRules, NetworkRules, RuleBook
from tests.engine.checks import check_ledger, check_tier_changes
from tests.engine.factories import T0, amounts, apply, credit, settled
from tests.engine.strategies import BOOK, Item, items

RULES = NetworkRules(channels={"vip": {"custom_min_tier": "Silver"}})
VIP = RuleBook({"n": RULES}).earn("n", "vip")


def test_below_the_tier_a_custom_action_earns_nothing_and_says_why() -> None:
    state = MemberState()
    out = apply(state, credit("c1", T0, "custom", 40, channel="vip"), RULES, VIP)
    assert out.entries == []
    assert state == MemberState(), "no welcome, streak or points either"
    (why,) = out.refused
    assert (why.reason, why.tier_required, why.credit_id, why.channel) == (
        "tier_too_low", "Silver", "c1", "vip")  # fmt: skip


def test_at_the_tier_it_earns_and_other_rules_are_not_gated() -> None:
    day = int(T0 // 86_400)
    silver = settled(600, day, 1)
    out = apply(silver, credit("c1", T0, "custom", 40, channel="vip"), RULES, VIP)
    assert amounts(out) == {"custom": 50}
    assert out.refused == []
    bronze = settled(10, day, 0)
    out = apply(bronze, credit("f1", T0, "follow", 50, channel="vip"), RULES, VIP)
    assert amounts(out) == {"follow": 50}
    assert out.refused == []


def test_the_tier_name_is_checked() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"channels\.vip\.custom_min_tier"):
        msgspec.convert({"channels": {"vip": {"custom_min_tier": "Platinum"}}}, NetworkRules)


GATED = RuleBook(
    {
        "n1": NetworkRules(
            earn=EarnRules(
                watch_interval_s=60,
                chat_cooldown_s=20,
                custom_min_tier="Silver",
                ignore=frozenset({"bot"}),
            ),
        ),
        "n2": NetworkRules(
            earn=EarnRules(watch_interval_s=120, chat_cooldown_s=0),
            tiers=BOOK.network("n2").tiers,
            channels={"c2": {"custom_min_tier": "Gold", "ignore": ["u4"]}},
        ),
    }
)


class Watched(Reference):
    """A Reference that notes the tier each member held before each custom credit."""

    def __init__(self) -> None:
        super().__init__(GATED)
        self.custom: list[tuple[str, str, str, int]] = []

    def credit(self, credits):  # type: ignore[no-untyped-def]
        for c in credits:
            if c.rule == "custom":
                held = self.members.get((c.network, c.user_id))
                self.custom.append((c.network, c.channel, c.id, held.tier if held else 0))
            super().credit([c])


def _run(its: list[Item], split: int) -> Watched:
    ref = Watched()
    batch: list = []
    for it in its:
        if batch and (isinstance(it, float) or len(batch) >= split):
            ref.ingest(batch, now=batch[-1].ts)
            batch = []
        if isinstance(it, float):
            ref.clock(it)
        else:
            batch.append(it)
    ref.ingest(batch, now=0.0)
    ref.finish()
    return ref


def _seen(ref: Reference) -> tuple:
    members = {k: msgspec.msgpack.encode(s) for k, s in ref.members.items()}
    return members, dict(ref.ledger), sorted(r.credit_id for r in ref.refused)


@settings(max_examples=60, deadline=None)
@given(items(max_size=40), st.sampled_from([1, 5, 30]), st.data())
def test_gating_is_deterministic_and_refuses_exactly_below_the_tier(
    its: list[Item], split: int, data: st.DataObject
) -> None:
    one = _run(its, 1)
    check_ledger(one)
    check_tier_changes(one)
    events = [it for it in its if not isinstance(it, float)]
    noisy = list(its)
    for original in data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []:
        noisy.insert(data.draw(st.integers(noisy.index(original) + 1, len(noisy))), original)
    assert _seen(_run(noisy, split)) == _seen(one), "batching and duplicates change nothing"
    # exactly the custom actions of a gated channel by a member below its tier, then, earn
    # nothing; the rest of the custom actions were posted
    refused = {r.credit_id: r for r in one.refused}
    posted = {e.id.rsplit("/", 1)[0] for es in one.ledger.values() for e in es}
    for network, channel, cid, tier in one.custom:
        tiers, need = GATED.network(network).tiers, GATED.earn(network, channel).custom_min_tier
        below = bool(need) and tier < tiers.names.index(need)
        assert (cid in refused) == below, (cid, tier, need)
        if below:
            assert refused[cid].tier_required == need
            assert refused[cid].reason == "tier_too_low"
            assert f"{network}:{cid}" not in posted
