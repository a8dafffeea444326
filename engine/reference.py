"""The whole earning pipeline in memory, in one process: the model the real system must match.

Used by tests (expected balances for a day of traffic, hypothesis properties) and as the
plainest statement of what Rallypoint computes:

- events are deduplicated by (network, id), the first arrival wins;
- they are applied in event-time order, by (ts, network, id), once the watermark (the newest
  event time seen minus the allowed lateness) has passed them; an event older than the
  watermark when it arrives is late and counts as having happened at the watermark;
- each channel turns its events into credits; the watermark moves every channel's watch
  clock on; credits reach members in (ts, network, id) order;
- `finish()` moves the watermark past everything seen (what `RallyClient.wait_idle` does
  to a real deployment once its logs are drained).

The real system cuts this into partitions and batches; whenever no event is late, how it
cuts them changes nothing, and it must give exactly what this model gives.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine import referral
from engine.channel import Changes, Channel
from engine.events import Event, Referral
from engine.gating import CreditRefused
from engine.ledger import Entry
from engine.member import Applied, Credit, MemberState, TierChange, apply_credit
from engine.rules import RuleBook
from engine.watermark import NEVER, ReorderBuffer

FLUSH_MARGIN_S = 0.5
"""How far past the newest event time a flush moves the watermark."""


def event_key(ev: Event) -> str:
    return f"{ev.network}:{ev.id}"


def credit_key(cr: Credit) -> str:
    return f"{cr.network}:{cr.id}"


class Reference:
    def __init__(self, book: RuleBook, lateness_s: float = 0.0) -> None:
        self.book = book
        self.seen: set[tuple[str, str]] = set()
        self.channels: dict[tuple[str, str], Channel] = {}
        self.members: dict[tuple[str, str], MemberState] = {}
        self.ledger: dict[tuple[str, str], list[Entry]] = {}
        self.tier_changes: list[TierChange] = []
        self.refused: list[CreditRefused] = []
        self.leaderboards: dict[tuple[str, str], dict[str, int]] = {}
        self.events: ReorderBuffer[Event] = ReorderBuffer(lateness_s)
        self.late = 0
        self.newest = NEVER
        self.refby: dict[tuple[str, str], str] = {}
        self.refkids: dict[tuple[str, str], list[str]] = {}
        """The referral graph, and who named a member before it had a referrer."""

    def channel(self, network: str, channel: str) -> Channel:
        key = (network, channel)
        found = self.channels.get(key)
        if found is None:
            found = self.channels[key] = Channel(network, channel)
        return found

    def ingest(self, events: Iterable[Event], now: float = 0.0) -> None:
        """Events in arrival order; applies whatever the watermark has passed."""
        for ev in events:
            key = (ev.network, ev.id)
            if key in self.seen:
                continue
            self.seen.add(key)
            ts, late = self.events.admit(ev.ts)
            if late:
                self.late += 1
                ev = msgspec.structs.replace(ev, ts=ts)
            self.events.push(ev.ts, event_key(ev), ev)
            self.events.observe(ev.ts)
            self.newest = max(self.newest, ev.ts)
        self._release(now)

    def clock(self, now: float) -> None:
        """A watch-clock tick at `now`: the watermark follows it like an event time."""
        self.events.observe(now)
        self.newest = max(self.newest, now)
        self._release(now)

    def finish(self, now: float = 0.0) -> None:
        """Move the watermark past every event seen and apply everything held."""
        if self.newest > NEVER:
            self.events.advance_to(self.newest + FLUSH_MARGIN_S)
        self._release(now)

    def _release(self, now: float) -> None:
        watermark = self.events.watermark
        credits: list[Credit] = []
        for ev in self.events.release():
            if isinstance(ev, Referral):
                self._refer(ev, credits)
                continue
            earn = self.book.earn(ev.network, ev.channel)
            changes = Changes()
            self.channel(ev.network, ev.channel).apply(ev, earn, now, changes, credits)
            self._persist((ev.network, ev.channel), changes)
        if watermark > NEVER:
            for (network, name), channel in self.channels.items():
                changes = Changes()  # viewers silent too long leave at the ticks passed
                if channel.advance(watermark, self.book.earn(network, name), credits, changes):
                    self._persist((network, name), changes)
        credits.sort(key=lambda c: (c.ts, credit_key(c)))
        self.credit(self.stage_a(credits))

    def _refer(self, ev: Referral, credits: list[Credit]) -> None:
        """A referral event: the link decided against the graph so far (engine/referral.py)."""
        net, x, y = ev.network, ev.user_id, ev.referrer
        ignore = self.book.earn(net, ev.channel).ignore
        if x in ignore or y in ignore:
            return
        outcome, made = referral.link(
            x, y, lambda u: self.refby.get((net, u), ""),
            lambda u: self.refkids.pop((net, u), []),
        )  # fmt: skip
        if outcome != "ok":
            return
        self.refby[(net, x)] = y
        if not self.refby.get((net, y)):
            self.refkids.setdefault((net, y), []).append(x)
        for o in made:
            name = ev.user_name if o.rule == referral.LINK else ""
            credits.append(
                Credit(o.id, net, ev.channel, o.user_id, name, ev.ts, o.rule, 0, o.other)
            )

    def _persist(self, key: tuple[str, str], changes: Changes) -> None:
        """What a channel actor would write beside its state (a hook for durable models)."""

    def stage_a(self, credits: list[Credit]) -> list[Credit]:
        """Referrals follow the credits (in order): the referral credits they cause join
        them, dated at their cause, and everything is ordered again."""
        made: list[Credit] = []
        for c in credits:
            state = self.members.get((c.network, c.user_id))
            if state is None:
                state = self.members[(c.network, c.user_id)] = MemberState()
            rules = self.book.network(c.network).referral
            for o in referral.on_credit(state.referral, c.user_id, c.rule, c.other, rules):
                made.append(
                    Credit(
                        o.id, c.network, c.channel, o.user_id, "", c.ts, o.rule, o.points, c.user_id
                    )
                )
        if not made:
            return credits
        return sorted(credits + made, key=lambda c: (c.ts, credit_key(c)))

    def credit(self, credits: Iterable[Credit]) -> None:
        """Apply credits to members in the order given."""
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
            self.refused.extend(out.refused)
            board = self.leaderboards.setdefault((c.network, c.channel), {})
            for e in out.entries:
                board[c.user_id] = board.get(c.user_id, 0) + e.amount
