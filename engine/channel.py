"""The channel virtual actor's rules: presence, the watch-time clock, chat activity, stats.

A channel turns events into member credits. Its clock is event time: the largest
timestamp it has seen, advanced also by clock ticks (the scheduler's wall clock) so a quiet
live channel still pays its viewers. Each watch interval crossed pays every viewer present.
"""

from __future__ import annotations

import msgspec

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
    Viewers,
)
from engine.member import Credit
from engine.rules import EarnRules

RATE_WINDOW_S = 10


class ChannelState(msgspec.Struct, array_like=True):
    """The small, persisted part of a channel (presence and chatters are kept beside it)."""

    live: bool = False
    clock: float = 0.0
    last_tick: int = -1
    events: int = 0
    rate_secs: list[int] = msgspec.field(default_factory=lambda: [0] * RATE_WINDOW_S)
    rate_counts: list[int] = msgspec.field(default_factory=lambda: [0] * RATE_WINDOW_S)


class Changes(msgspec.Struct):
    """What a channel changed besides its state: presence and chatters to persist."""

    present_set: dict[str, str] = msgspec.field(default_factory=dict)
    present_del: set[str] = msgspec.field(default_factory=set)
    chatted: dict[str, float] = msgspec.field(default_factory=dict)


class Channel:
    """One channel: state, viewers present (user id -> name), last chat time by user."""

    __slots__ = ("channel", "chatters", "network", "present", "state")

    def __init__(
        self,
        network: str,
        channel: str,
        state: ChannelState | None = None,
        present: dict[str, str] | None = None,
        chatters: dict[str, float] | None = None,
    ) -> None:
        self.network = network
        self.channel = channel
        self.state = state if state is not None else ChannelState()
        self.present = present if present is not None else {}
        self.chatters = chatters if chatters is not None else {}

    def _join(self, uid: str, name: str, ch: Changes) -> None:
        if self.present.get(uid) != name:
            self.present[uid] = name
            ch.present_set[uid] = name
            ch.present_del.discard(uid)

    def _leave(self, uid: str, ch: Changes) -> None:
        if self.present.pop(uid, None) is not None:
            ch.present_del.add(uid)
            ch.present_set.pop(uid, None)

    def advance(self, ts: float, earn: EarnRules, out: list[Credit]) -> None:
        """Move the clock to `ts`, paying every watch interval crossed to the viewers present."""
        st = self.state
        if ts <= st.clock and st.last_tick >= 0:
            return
        st.clock = ts
        tick = int(ts // earn.watch_interval_s)
        if st.last_tick < 0:
            st.last_tick = tick
            return
        if tick <= st.last_tick:
            return
        first = max(st.last_tick + 1, tick - earn.max_catchup_ticks + 1)
        st.last_tick = tick
        base = earn.watch_points_live if st.live else earn.watch_points_offline
        if base <= 0 or not self.present:
            return
        for t in range(first, tick + 1):
            self._pay_tick(t, base, earn, out)

    def _pay_tick(self, tick: int, base: int, earn: EarnRules, out: list[Credit]) -> None:
        tick_ts = float(tick * earn.watch_interval_s)
        recent = tick_ts - earn.active_chatter_window_s
        prefix = f"w:{self.network}:{self.channel}:{tick}:"
        chatters = self.chatters
        bonus = earn.active_chatter_bonus
        network, channel, ignore = self.network, self.channel, earn.ignore
        for uid, name in self.present.items():
            if uid in ignore:
                continue
            last = chatters.get(uid)
            points = base + bonus if last is not None and last >= recent else base
            out.append(Credit(prefix + uid, network, channel, uid, name, tick_ts, "watch", points))

    def apply(self, ev: Event, earn: EarnRules, now: float, ch: Changes, out: list[Credit]) -> None:
        """Apply one deduplicated event: credits go to `out`, persisted changes to `ch`."""
        self.count(now)
        self.advance(ev.ts, earn, out)
        uid = ev.user_id
        if isinstance(ev, Chat):
            self._join(uid, ev.user_name, ch)
            if ev.ts > self.chatters.get(uid, -1.0):
                self.chatters[uid] = ev.ts
                ch.chatted[uid] = ev.ts
            self._credit(ev, "chat", earn.chat_points, earn, out)
        elif isinstance(ev, Join):
            self._join(uid, ev.user_name, ch)
        elif isinstance(ev, Leave):
            self._leave(uid, ch)
        elif isinstance(ev, Viewers):
            keep = {v.id for v in ev.viewers}
            for gone in [u for u in self.present if u not in keep]:
                self._leave(gone, ch)
            for v in ev.viewers:
                self._join(v.id, v.name or self.present.get(v.id, ""), ch)
        elif isinstance(ev, Online):
            self.state.live = True
        elif isinstance(ev, Offline):
            self.state.live = False
        elif isinstance(ev, Follow):
            self._credit(ev, "follow", earn.follow_points, earn, out)
        elif isinstance(ev, Subscription):
            self._credit(ev, "sub", earn.sub_points_by_tier[ev.tier - 1], earn, out)
        elif isinstance(ev, GiftBomb):
            self._credit(ev, "gift", earn.gifted_sub_points * ev.count, earn, out)
        elif isinstance(ev, Cheer):
            self._credit(ev, "cheer", ev.amount * earn.cheer_points_per_100 // 100, earn, out)
        elif isinstance(ev, Raid):
            points = earn.raid_points + earn.raid_points_per_viewer * ev.viewers
            self._credit(ev, "raid", points, earn, out)
        elif isinstance(ev, Custom):
            self._credit(ev, "custom", ev.points, earn, out)

    def _credit(
        self, ev: Event, rule: str, points: int, earn: EarnRules, out: list[Credit]
    ) -> None:
        if ev.user_id in earn.ignore or points <= 0:
            return
        out.append(
            Credit(ev.id, ev.network, ev.channel, ev.user_id, ev.user_name, ev.ts, rule, points)
        )

    def forget_chatters_before(self, horizon: float) -> bool:
        """Drop chat times older than `horizon` (they can no longer earn a bonus)."""
        old = [u for u, t in self.chatters.items() if t < horizon]
        for u in old:
            del self.chatters[u]
        return bool(old)

    def count(self, now: float) -> None:
        """Count one event in the events/s window (wall clock)."""
        st = self.state
        sec = int(now)
        slot = sec % RATE_WINDOW_S
        if st.rate_secs[slot] != sec:
            st.rate_secs[slot] = sec
            st.rate_counts[slot] = 0
        st.rate_counts[slot] += 1
        st.events += 1


def events_per_s(state: ChannelState, now: float) -> float:
    """Events per second over the last window, as of `now` (wall clock)."""
    sec = int(now)
    total = sum(
        c
        for s, c in zip(state.rate_secs, state.rate_counts, strict=True)
        if sec - RATE_WINDOW_S < s <= sec
    )
    return total / RATE_WINDOW_S


channel_encoder = msgspec.msgpack.Encoder()
channel_decoder = msgspec.msgpack.Decoder(ChannelState)
