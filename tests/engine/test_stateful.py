"""A hypothesis state machine over the whole pipeline: ingest batches, re-deliver earlier
batches, crash and restore (state through the module encoders, presence and chat times
through the persisted Changes), crash half-way through a batch, and tick the clock.

Two models run side by side: `model` crashes and is restored, `steady` never crashes.
Invariants: balance = sum of the ledger, no credit id credited twice (entry ids unique),
and the crashed model is indistinguishable from the steady one."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from engine.channel import Changes, Channel, channel_decoder, channel_encoder
from engine.events import Event, decode_events, encode_events
from engine.ledger import entry_decoder, entry_encoder
from engine.member import TierChange, state_decoder, state_encoder
from engine.reference import Reference, event_key
from engine.rules import RuleBook
from tests.engine.checks import check_ledger, check_tier_changes, snapshot
from tests.engine.factories import T0
from tests.engine.strategies import BOOK, GAPS_S, items

ChannelKey = tuple[str, str]


class DurableReference(Reference):
    """Reference plus what a channel actor persists beside ChannelState: the presence and
    chat times written from each event's Changes (never read back from the live channel)."""

    def __init__(self, book: RuleBook) -> None:
        super().__init__(book)
        self.stored_present: dict[ChannelKey, dict[str, str]] = {}
        self.stored_chatters: dict[ChannelKey, dict[str, float]] = {}
        self.stored_seen: dict[ChannelKey, dict[str, float]] = {}

    def _persist(self, key: ChannelKey, changes: Changes) -> None:
        present = self.stored_present.setdefault(key, {})
        present.update(changes.present_set)
        seen = self.stored_seen.setdefault(key, {})
        seen.update(changes.seen)
        for uid in changes.present_del:
            present.pop(uid, None)
            seen.pop(uid, None)
        self.stored_chatters.setdefault(key, {}).update(changes.chatted)


def _pairs(keys: Iterable[tuple[str, str]]) -> list[list[str]]:
    return sorted([a, b] for a, b in keys)


def restore(old: DurableReference) -> DurableReference:
    """What a restarted process rebuilds from durable bytes only."""
    blobs = {
        "members": {f"{n}\x00{u}": state_encoder.encode(s) for (n, u), s in old.members.items()},
        "channels": {
            f"{n}\x00{c}": channel_encoder.encode(ch.state) for (n, c), ch in old.channels.items()
        },
        "ledger": {
            f"{n}\x00{u}": [entry_encoder.encode(e) for e in es]
            for (n, u), es in old.ledger.items()
        },
        "seen": _pairs(old.seen),
        "present": {f"{n}\x00{c}": p for (n, c), p in old.stored_present.items()},
        "chatters": {f"{n}\x00{c}": p for (n, c), p in old.stored_chatters.items()},
        "pseen": {f"{n}\x00{c}": p for (n, c), p in old.stored_seen.items()},
        "tier_changes": old.tier_changes,
        "boards": {f"{n}\x00{c}": b for (n, c), b in old.leaderboards.items()},
        "held": encode_events([ev for _, _, ev in old.events.held()]),
        "watermark": old.events.watermark,
        "newest": old.newest,
    }
    disk = msgspec.msgpack.decode(msgspec.msgpack.encode(blobs))

    def key(k: str) -> tuple[str, str]:
        a, b = k.split("\x00")
        return a, b

    new = DurableReference(old.book)
    new.seen = {(a, b) for a, b in disk["seen"]}
    new.members = {key(k): state_decoder.decode(v) for k, v in disk["members"].items()}
    new.ledger = {key(k): [entry_decoder.decode(e) for e in v] for k, v in disk["ledger"].items()}
    new.stored_present = {key(k): v for k, v in disk["present"].items()}
    new.stored_chatters = {key(k): v for k, v in disk["chatters"].items()}
    new.stored_seen = {key(k): v for k, v in disk["pseen"].items()}
    for k, blob in disk["channels"].items():
        network, channel = key(k)
        new.channels[(network, channel)] = Channel(
            network,
            channel,
            channel_decoder.decode(blob),
            present=dict(new.stored_present.get((network, channel), {})),
            chatters=dict(new.stored_chatters.get((network, channel), {})),
            seen=dict(new.stored_seen.get((network, channel), {})),
        )
    new.tier_changes = msgspec.convert(disk["tier_changes"], list[TierChange])
    new.leaderboards = {key(k): v for k, v in disk["boards"].items()}
    new.events.advance_to(disk["watermark"])
    new.newest = disk["newest"]
    for ev in decode_events(disk["held"]):
        new.events.push(ev.ts, event_key(ev), ev)
    return new


class LoyaltyMachine(RuleBasedStateMachine):
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.model = DurableReference(BOOK)
        self.steady = Reference(BOOK)
        self.t = T0
        self.batch_no = 0

    def _new_batch(self, data: st.DataObject) -> list[Event]:
        drawn = data.draw(items(start_ts=self.t, prefix=f"b{self.batch_no}-", max_size=12))
        self.batch_no += 1
        batch = [it for it in drawn if not isinstance(it, float)]
        if batch:
            self.t = max(self.t, *(e.ts for e in batch))
        # a batch travels through the durable log as msgpack
        return decode_events(encode_events(batch))

    @rule(target=batches, data=st.data())
    def ingest(self, data: st.DataObject) -> list[Event]:
        batch = self._new_batch(data)
        self.model.ingest(batch, now=self.t)
        self.steady.ingest(batch, now=self.t)
        return batch

    @rule(batch=batches)
    def redeliver(self, batch: list[Event]) -> None:
        before = snapshot(self.model)
        self.model.ingest(batch, now=self.t)
        self.steady.ingest(batch, now=self.t)
        assert snapshot(self.model) == before

    @rule()
    def crash_and_restore(self) -> None:
        self.model = restore(self.model)

    @rule(target=batches, data=st.data())
    def crash_half_way_then_redeliver(self, data: st.DataObject) -> list[Event]:
        batch = self._new_batch(data)
        done = data.draw(st.integers(0, len(batch)), label="applied before the crash")
        self.model.ingest(batch[:done], now=self.t)
        self.model = restore(self.model)
        self.model.ingest(batch, now=self.t)
        self.steady.ingest(batch, now=self.t)
        return batch

    @rule(gap=st.sampled_from(GAPS_S))
    def clock_tick(self, gap: float) -> None:
        self.t += gap
        self.model.clock(self.t)
        self.steady.clock(self.t)

    @invariant()
    def balance_is_the_sum_of_the_ledger_and_no_credit_twice(self) -> None:
        check_ledger(self.model)
        check_tier_changes(self.model)

    @invariant()
    def persisted_presence_is_the_live_presence(self) -> None:
        for key, channel in self.model.channels.items():
            assert self.model.stored_present.get(key, {}) == channel.present
            assert self.model.stored_chatters.get(key, {}) == channel.chatters
            assert self.model.stored_seen.get(key, {}) == channel.seen

    @invariant()
    def crashes_change_nothing(self) -> None:
        assert snapshot(self.model) == snapshot(self.steady)
        assert self.model.tier_changes == self.steady.tier_changes
        assert self.model.leaderboards == self.steady.leaderboards
        assert self.model.seen == self.steady.seen
        assert self.model.channels.keys() == self.steady.channels.keys()
        for key, channel in self.model.channels.items():
            assert channel.state == self.steady.channels[key].state


LoyaltyMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestLoyalty = LoyaltyMachine.TestCase
