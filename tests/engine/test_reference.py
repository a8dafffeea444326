"""The whole pipeline in memory (engine.reference.Reference): every kind end to end with
tier multipliers, per-channel overrides and ignore lists, deduplication by (network, id),
watch ticks from the clock, leaderboards and tier changes."""

from __future__ import annotations

from engine.events import Event
from engine.ledger import balance_of, member_account, treasury_account
from engine.member import TierChange, day_of
from engine.reference import Reference
from engine.rules import EarnRules, NetworkRules, RuleBook
from tests.engine.factories import CH, DAY, NET, T0, ev, ledger_balance, one_of_each


def _balance(ref: Reference, user: str, network: str = NET) -> int:
    state = ref.members[(network, user)]
    assert state.balance == ledger_balance(network, user, ref.ledger[(network, user)])
    return state.balance


def test_every_kind_end_to_end_with_the_multiplier_of_the_tier_before() -> None:
    ref = Reference(RuleBook({}))
    ref.ingest(one_of_each(), now=T0)
    ref.finish()
    entries = [(e.rule, e.amount) for e in ref.ledger[(NET, "u1")]]
    assert entries == [
        ("welcome", 100),
        ("streak", 1),
        ("chat", 1),
        ("follow", 50),  # 152
        ("sub", 2_500),  # Bronze 1x -> 2652: Gold
        ("gift", 1_875),  # 1250 x 1.5
        ("cheer", 375),  # 250 x 1.5
        ("raid", 150),
        ("custom", 63),  # floor(42 x 1.5)
    ]
    assert _balance(ref, "u1") == 5_115
    assert ref.tier_changes == [TierChange(NET, "u1", 0, 2, T0 + 7e-3, 2_652)]  # the sub
    assert ref.members[(NET, "u1")].tier == 2
    assert ref.leaderboards == {(NET, CH): {"u1": 5_115}}


def test_channel_overrides_and_ignore_lists() -> None:
    book = RuleBook(
        {
            NET: NetworkRules(
                earn=EarnRules(ignore=frozenset({"nightbot"})),
                channels={"vip": {"follow_points": 7, "welcome_points": 0, "ignore": ["u9"]}},
            )
        }
    )
    ref = Reference(book)
    ref.ingest(
        [
            ev("follow", "f1", T0, "u1", channel="vip"),
            ev("follow", "f2", T0, "u2", channel=CH),
            ev("follow", "f3", T0, "u9", channel="vip"),
            ev("follow", "f4", T0, "u9", channel=CH),
            ev("follow", "f5", T0, "nightbot", channel=CH),
            ev("follow", "f6", T0, "nightbot", channel="vip"),  # the override replaced `ignore`
        ],
        now=T0,
    )
    ref.finish()
    assert _balance(ref, "u1") == 0 + 1 + 7
    assert _balance(ref, "u2") == 100 + 1 + 50
    assert _balance(ref, "u9") == 100 + 1 + 50
    assert _balance(ref, "nightbot") == 0 + 1 + 7
    assert {e.channel for e in ref.ledger[(NET, "u9")]} == {CH}
    other = Reference(RuleBook({NET: NetworkRules(earn=EarnRules(ignore=frozenset({"nightbot"})))}))
    other.ingest([ev("follow", "f5", T0, "nightbot"), ev("chat", "c5", T0, "nightbot")], now=T0)
    other.finish()
    assert other.members == {}
    assert other.ledger == {}


def test_duplicates_are_dropped_by_network_and_id() -> None:
    ref = Reference(RuleBook({}))
    follow = ev("follow", "f1", T0, "u1")
    ref.ingest([follow, follow], now=T0)
    ref.ingest([follow], now=T0 + 5)
    ref.finish()
    assert _balance(ref, "u1") == 151
    ref.ingest([ev("follow", "f1", T0, "u1", network="other")], now=T0)
    ref.finish()
    assert _balance(ref, "u1", "other") == 151
    assert ref.channels[(NET, CH)].state.events == 1


def test_clock_ticks_pay_every_live_channel_and_streaks_follow_utc_days() -> None:
    book = RuleBook(
        {NET: NetworkRules(earn=EarnRules(watch_interval_s=60, active_chatter_bonus=0))}
    )
    ref = Reference(book)
    events: list[Event] = [
        ev("online", "on-a", T0, channel="a"),
        ev("join", "ja", T0, "u1", channel="a"),
        ev("online", "on-b", T0, channel="b"),
        ev("join", "jb", T0, "u1", channel="b"),
        ev("join", "jb2", T0, "u2", channel="b"),
    ]
    ref.ingest(events, now=T0)
    ref.clock(T0 + 120)
    ref.clock(T0 + 120)
    ref.clock(T0 + 90)
    watch = [e for e in ref.ledger[(NET, "u1")] if e.rule == "watch"]
    assert len(watch) == 4  # ticks T0 and T0 + 60 (those before the clock) x 2 channels
    assert _balance(ref, "u1") == 100 + 1 + 40
    assert _balance(ref, "u2") == 100 + 1 + 20
    ref.clock(T0 + DAY)  # presence goes stale 12 ticks after a channel's last event
    assert len([e for e in ref.ledger[(NET, "u1")] if e.rule == "watch"]) == 2 * 13
    ref.ingest([ev("chat", "c-next-day", T0 + DAY + 1, "u1", channel="a")])
    ref.clock(T0 + DAY + 60)  # a new UTC day: the chat and the tick at T0 + DAY + 60
    streaks = [e for e in ref.ledger[(NET, "u1")] if e.rule == "streak"]
    assert [e.id for e in streaks] == [
        f"{NET}:u1/streak/{day_of(T0)}",
        f"{NET}:u1/streak/{day_of(T0) + 1}",
    ]
    assert ref.members[(NET, "u1")].streak == 2
    boards = ref.leaderboards
    assert boards[(NET, "a")]["u1"] + boards[(NET, "b")]["u1"] == _balance(ref, "u1")


def test_treasury_pays_for_everything() -> None:
    ref = Reference(RuleBook({}))
    ref.ingest([*one_of_each(), ev("follow", "f2", T0 + 1, "u2")], now=T0)
    everything = [e for entries in ref.ledger.values() for e in entries]
    members = sum(s.balance for s in ref.members.values())
    assert balance_of(treasury_account(NET), everything) == -members
    assert sum(balance_of(member_account(NET, u), everything) for u in ("u1", "u2")) == members
