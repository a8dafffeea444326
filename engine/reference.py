"""The whole earning pipeline in memory, in one process: the model the real system must match.

Used by tests (expected balances for a day of traffic, hypothesis properties) and as the
plainest statement of what Rallypoint computes. Events are deduplicated by (network, id);
each channel applies its events in arrival order; credits are applied to members at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.channel import Changes, Channel
from engine.events import Event
from engine.ledger import Entry
from engine.member import Applied, Credit, MemberState, TierChange, apply_credit
from engine.rules import RuleBook


class Reference:
    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.seen: set[tuple[str, str]] = set()
        self.channels: dict[tuple[str, str], Channel] = {}
        self.members: dict[tuple[str, str], MemberState] = {}
        self.ledger: dict[tuple[str, str], list[Entry]] = {}
        self.tier_changes: list[TierChange] = []
        self.leaderboards: dict[tuple[str, str], dict[str, int]] = {}

    def channel(self, network: str, channel: str) -> Channel:
        key = (network, channel)
        found = self.channels.get(key)
        if found is None:
            found = self.channels[key] = Channel(network, channel)
        return found

    def ingest(self, events: Iterable[Event], now: float) -> None:
        for ev in events:
            key = (ev.network, ev.id)
            if key in self.seen:
                continue
            self.seen.add(key)
            credits: list[Credit] = []
            earn = self.book.earn(ev.network, ev.channel)
            self.channel(ev.network, ev.channel).apply(ev, earn, now, Changes(), credits)
            self.credit(credits)

    def clock(self, now: float) -> None:
        """A watch-clock tick: every channel advances to `now`."""
        for (network, name), channel in self.channels.items():
            credits: list[Credit] = []
            channel.advance(now, self.book.earn(network, name), credits)
            self.credit(credits)

    def credit(self, credits: Iterable[Credit]) -> None:
        for c in credits:
            key = (c.network, c.user_id)
            state = self.members.get(key)
            if state is None:
                state = self.members[key] = MemberState()
            out = Applied()
            apply_credit(
                state, c, self.book.network(c.network), self.book.earn(c.network, c.channel), out
            )
            self.ledger.setdefault(key, []).extend(out.entries)
            self.tier_changes.extend(out.tier_changes)
            board = self.leaderboards.setdefault((c.network, c.channel), {})
            for e in out.entries:
                board[c.user_id] = board.get(c.user_id, 0) + e.amount
