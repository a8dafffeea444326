"""The channel virtual actor's rules: presence, the watch-time clock, chat activity, stats.

A channel turns events into member credits. Its clock is event time: events reach it in
(ts, id) order (engine.watermark), and its partition's watermark moves every channel's clock
on, so a quiet live channel still pays its viewers. The watch tick at boundary T pays every
viewer present once every event with ts <= T has been applied (ticks strictly before the
clock are paid), so the ticks paid never depend on how the event stream was cut into batches.

Presence merges JOIN/PART, chat and viewer-list snapshots: each makes (or keeps) a viewer
present and dates its last sign of life (`seen`, event time). A viewer silent for
`presence_timeout_s` leaves at the next watch tick (`silent`): no ghost viewer earns forever
when a PART is lost. A lurker who only JOINs is present until then; a snapshot listing them
keeps them present.
"""

from __future__ import annotations

import math

import msgspec

from engine import attendance, quality
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
NO_TICK = -(2**62)


class ChannelState(msgspec.Struct, array_like=True):
    """The small, persisted part of a channel (presence and chatters are kept beside it)."""

    live: bool = False
    clock: float = 0.0
    """Unused (kept so stored states still decode): the partition's watermark is the clock."""
    last_tick: int = -(2**62)
    """The newest watch tick passed; NO_TICK until the channel's first event."""
    events: int = 0
    rate_secs: list[int] = msgspec.field(default_factory=lambda: [0] * RATE_WINDOW_S)
    rate_counts: list[int] = msgspec.field(default_factory=lambda: [0] * RATE_WINDOW_S)
    active_ts: float = -1e18
    """Event time of the channel's newest event: presence older than max_catchup_ticks
    intervals before a tick is stale and earns nothing."""
    live_since: float = 0.0
    """Event time of the `online` that started the current (or last) stream: its identity
    for the reward store's per-stream limits."""
    attend: dict[str, int] = msgspec.field(default_factory=dict)
    """Seconds each viewer was present in the current live stream (engine/attendance.py);
    kept only while attendance is configured, emptied when a stream starts or ends."""


class Changes(msgspec.Struct):
    """What a channel changed besides its state: presence and chatters to persist."""

    present_set: dict[str, str] = msgspec.field(default_factory=dict)
    present_del: set[str] = msgspec.field(default_factory=set)
    chatted: dict[str, float] = msgspec.field(default_factory=dict)
    seen: dict[str, float] = msgspec.field(default_factory=dict)
    """Present viewers' newest sign of life (event time) that moved."""


def silent(seen: dict[str, float], tick_ts: float, timeout_s: float) -> list[str]:
    """Viewers whose last sign of life is `timeout_s` or more before the tick (sorted);
    none when `timeout_s` is 0 (no timeout)."""
    if timeout_s <= 0:
        return []
    horizon = tick_ts - timeout_s
    return sorted(u for u, t in seen.items() if t <= horizon)


class Channel:
    """One channel: state, viewers present (user id -> name) with their last sign of life,
    last chat time by user."""

    __slots__ = ("_unsaved", "channel", "chatters", "network", "present", "seen", "state")

    def __init__(
        self,
        network: str,
        channel: str,
        state: ChannelState | None = None,
        present: dict[str, str] | None = None,
        chatters: dict[str, float] | None = None,
        seen: dict[str, float] | None = None,
    ) -> None:
        self.network = network
        self.channel = channel
        self.state = state if state is not None else ChannelState()
        self.present = present if present is not None else {}
        self.chatters = chatters if chatters is not None else {}
        self.seen = {u: t for u, t in (seen or {}).items() if u in self.present}
        self._unsaved = sorted(u for u in self.present if u not in self.seen)
        """Present viewers stored before `seen` existed: seen at the channel's newest event,
        written with the next changes (so a later restart dates them the same)."""
        for uid in self._unsaved:
            self.seen[uid] = self.state.active_ts

    def _save_defaults(self, ch: Changes) -> None:
        for uid in self._unsaved:
            if uid in self.seen:
                ch.seen.setdefault(uid, self.seen[uid])
        self._unsaved = []

    def _join(self, uid: str, name: str, ch: Changes, ts: float) -> None:
        if self.present.get(uid) != name:
            self.present[uid] = name
            ch.present_set[uid] = name
            ch.present_del.discard(uid)
        if ts > self.seen.get(uid, -math.inf):
            self.seen[uid] = ts
            ch.seen[uid] = ts

    def _leave(self, uid: str, ch: Changes) -> None:
        self.seen.pop(uid, None)
        ch.seen.pop(uid, None)
        if self.present.pop(uid, None) is not None:
            ch.present_del.add(uid)
            ch.present_set.pop(uid, None)

    def _expire(self, tick_ts: float, earn: EarnRules, ch: Changes | None) -> None:
        """Viewers silent for presence_timeout_s before the tick leave."""
        for uid in silent(self.seen, tick_ts, earn.presence_timeout_s):
            self._leave(uid, ch if ch is not None else Changes())

    def advance(
        self, ts: float, earn: EarnRules, out: list[Credit], ch: Changes | None = None
    ) -> bool:
        """Move the clock to `ts`, paying every watch tick strictly before `ts` to the viewers
        present. Ticks more than `max_catchup_ticks` intervals after the channel's newest
        event pay nobody (the presence they would pay is stale). At each tick passed, viewers
        silent for `presence_timeout_s` leave first (recorded in `ch`). True if a tick was
        passed."""
        st = self.state
        if self._unsaved and ch is not None:
            self._save_defaults(ch)
        interval = earn.watch_interval_s
        tick = math.ceil(ts / interval) - 1  # the newest boundary strictly before ts
        if st.last_tick == NO_TICK:
            st.last_tick = tick
            return True
        if tick <= st.last_tick:
            return False
        first = st.last_tick + 1
        st.last_tick = tick
        base = earn.watch_points_live if st.live else earn.watch_points_offline
        attend = st.live and attendance.enabled(earn)
        if (base > 0 or attend) and self.present:
            last = min(tick, math.floor(st.active_ts / interval) + earn.max_catchup_ticks)
            for t in range(first, last + 1):
                self._expire(float(t * interval), earn, ch)
                if base > 0:
                    self._pay_tick(t, base, earn, out)
                if attend:
                    self._attend_tick(t, earn, out)
        self._expire(float(tick * interval), earn, ch)
        return True

    def next_tick_ts(self, earn: EarnRules) -> float:
        """The clock value past which `advance` has a tick to pass."""
        if self.state.last_tick == NO_TICK:
            return -math.inf
        return float((self.state.last_tick + 1) * earn.watch_interval_s)

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

    def _attend_tick(self, tick: int, earn: EarnRules, out: list[Credit]) -> None:
        """Add one tick of presence to every viewer present; pay the thresholds crossed."""
        step = earn.watch_interval_s
        tick_ts = float(tick * step)
        marks = attendance.thresholds(earn)
        counts, st, ignore = self.state.attend, self.state, earn.ignore
        network, channel = self.network, self.channel
        for uid, name in self.present.items():
            if uid in ignore:
                continue
            before = counts.get(uid, 0)
            counts[uid] = before + step
            for secs, points in attendance.crossed(before, before + step, marks):
                cid = attendance.credit_id(network, channel, st.live_since, secs, uid)
                out.append(
                    Credit(cid, network, channel, uid, name, tick_ts, attendance.RULE, points)
                )

    def apply(self, ev: Event, earn: EarnRules, now: float, ch: Changes, out: list[Credit]) -> None:
        """Apply one deduplicated event: credits go to `out`, persisted changes to `ch`."""
        self.count(now)
        if self._unsaved or math.ceil(ev.ts / earn.watch_interval_s) - 1 > self.state.last_tick:
            self.advance(ev.ts, earn, out, ch)  # else it would pass no tick and change nothing
        if ev.ts > self.state.active_ts:
            self.state.active_ts = ev.ts
        uid = ev.user_id
        if isinstance(ev, Chat):
            self._join(uid, ev.user_name, ch, ev.ts)
            if ev.ts > self.chatters.get(uid, -1.0):
                self.chatters[uid] = ev.ts
                ch.chatted[uid] = ev.ts
            if uid not in earn.ignore and earn.chat_points > 0:
                out.append(
                    Credit(
                        ev.id, ev.network, ev.channel, uid, ev.user_name, ev.ts, "chat",
                        earn.chat_points, "", quality.chat_digest(ev.text),
                    )
                )  # fmt: skip
        elif isinstance(ev, Join):
            self._join(uid, ev.user_name, ch, ev.ts)
        elif isinstance(ev, Leave):
            self._leave(uid, ch)
        elif isinstance(ev, Viewers):
            keep = {v.id for v in ev.viewers}
            for gone in [u for u in self.present if u not in keep]:
                self._leave(gone, ch)
            for v in ev.viewers:
                self._join(v.id, v.name or self.present.get(v.id, ""), ch, ev.ts)
        elif isinstance(ev, Online):
            if not self.state.live:
                self.state.live_since = ev.ts
                self.state.attend.clear()
            self.state.live = True
        elif isinstance(ev, Offline):
            self.state.live = False
            self.state.attend.clear()
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
