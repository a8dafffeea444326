"""Builders for engine tests: events, credits and members with short, explicit defaults."""

from __future__ import annotations

from typing import Any

from engine.events import (
    Chat,
    Cheer,
    Custom,
    Event,
    Follow,
    GiftBomb,
    Join,
    Leave,
    Offline,
    Online,
    Raid,
    Subscription,
    Viewer,
    Viewers,
)
from engine.ledger import Entry, balance_of, member_account
from engine.member import Applied, Credit, MemberState, apply_credit
from engine.rules import EarnRules, NetworkRules

NET = "net"
CH = "ch"
T0 = 1_700_006_400.0
"""A UTC midnight (day 19676), and a multiple of every watch interval used in the tests."""
DAY = 86_400.0

KINDS: dict[str, type] = {
    "chat": Chat,
    "join": Join,
    "leave": Leave,
    "viewers": Viewers,
    "online": Online,
    "offline": Offline,
    "follow": Follow,
    "sub": Subscription,
    "gift_bomb": GiftBomb,
    "cheer": Cheer,
    "raid": Raid,
    "custom": Custom,
}


def ev(
    kind: str,
    eid: str,
    ts: float,
    user: str = "",
    *,
    network: str = NET,
    channel: str = CH,
    name: str = "",
    **fields: Any,
) -> Event:
    """One event of `kind`; `user` is the platform user id (empty for channel events)."""
    cls = KINDS[kind]
    if kind == "viewers" and "viewers" in fields:
        fields["viewers"] = [
            v if isinstance(v, Viewer) else Viewer(id=v) for v in fields["viewers"]
        ]
    event: Event = cls(
        id=eid,
        network=network,
        channel=channel,
        ts=ts,
        user_id=user,
        user_name=name or (f"name-{user}" if user else ""),
        **fields,
    )
    return event


def one_of_each(ts: float = T0) -> list[Event]:
    """Every event kind once, with non-default fields set, a millisecond apart (in this
    order: events apply in event-time order)."""
    return [
        ev("chat", "k-chat", ts, "u1", text="hello"),
        ev("join", "k-join", ts + 1e-3, "u1"),
        ev("leave", "k-leave", ts + 2e-3, "u1"),
        ev("viewers", "k-viewers", ts + 3e-3, viewers=[Viewer(id="u1", name="A"), Viewer(id="u2")]),
        ev("online", "k-online", ts + 4e-3),
        ev("offline", "k-offline", ts + 5e-3),
        ev("follow", "k-follow", ts + 6e-3, "u1"),
        ev("sub", "k-sub", ts + 7e-3, "u1", tier=3, months=7, gifted=True),
        ev("gift_bomb", "k-gift", ts + 8e-3, "u1", count=5, tier=2),
        ev("cheer", "k-cheer", ts + 9e-3, "u1", amount=250),
        ev("raid", "k-raid", ts + 10e-3, "u1", viewers=40),
        ev("custom", "k-custom", ts + 11e-3, "u1", action="quiz", points=42),
    ]


def credit(
    cid: str,
    ts: float,
    rule: str = "custom",
    points: int = 10,
    user: str = "u1",
    *,
    network: str = NET,
    channel: str = CH,
    name: str = "",
) -> Credit:
    return Credit(cid, network, channel, user, name, ts, rule, points)


def apply(
    state: MemberState,
    c: Credit,
    rules: NetworkRules | None = None,
    earn: EarnRules | None = None,
) -> Applied:
    """Apply one credit with default (or given) rules; return what it produced."""
    rules = rules if rules is not None else NetworkRules()
    out = Applied()
    apply_credit(state, c, rules, earn if earn is not None else rules.earn, out)
    return out


def settled(lifetime: int, day: int, tier: int) -> MemberState:
    """A member already welcomed and already credited today, holding `lifetime` points."""
    return MemberState(balance=lifetime, lifetime=lifetime, tier=tier, streak=1, last_day=day)


def amounts(out: Applied) -> dict[str, int]:
    """Entry amounts by rule."""
    return {e.rule: e.amount for e in out.entries}


def ledger_balance(network: str, user: str, entries: list[Entry]) -> int:
    return balance_of(member_account(network, user), entries)
