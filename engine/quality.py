"""Anti-farming: a presence-quality score that scales or withholds watch points.

Idle and bot viewers farm watch points by sitting in every channel at once and never
leaving. The member actor sees every watch credit a member gets, from every channel, in
event-time order, so it scores presence from two signals:

- **channels at once**: watch credits of one tick (the same `ts`) from more than
  `max_channels_at_once` channels: the ones beyond it (in credit id order) are withheld,
  and the member is flagged `multi_channel`;
- **idle presence** (never leaving): consecutive watch ticks with no other activity (a
  chat, a follow, a sub, a cheer, a raid, a custom action or attendance: anything but
  watch, welcome and streak) and no gap of `left_after_s` or more between two ticks. Up to `idle_ticks` the score is 100; past it the score is
  `100 * idle_ticks // run` (twice as long: 50, four times: 25), and the member is flagged
  `idle`. Any activity resets the run.

A watch credit earns its points times score/100 when the score is below `scale_below`,
and nothing below `withhold_below`. The defaults leave ordinary viewers untouched: a human
watching three streams at once, or twelve hours straight without a word, keeps every point.
"""

from __future__ import annotations

import msgspec

from engine.rules import QualityRules

MULTI_CHANNEL, IDLE = 1, 2
REASONS = {MULTI_CHANNEL: "multi_channel", IDLE: "idle"}
NOT_ACTIVITY = frozenset({"watch", "welcome", "streak"})


class Presence(msgspec.Struct, array_like=True, gc=False):
    """The member's presence-quality signals (in MemberState)."""

    tick_ts: float = -1e18
    """The watch tick being counted."""
    tick_channels: int = 0
    idle: int = 0
    """Consecutive watch ticks without other activity."""
    flags: int = 0
    withheld: int = 0
    """Watch points withheld so far (before multipliers)."""


class Flag(msgspec.Struct, frozen=True):
    """What the admin view shows of a flagged member (or its clearing: `reasons` empty)."""

    network: str
    user_id: str
    score: int
    reasons: list[str]
    idle_ticks: int
    withheld: int
    ts: float


def score(p: Presence, rules: QualityRules) -> int:
    if rules.idle_ticks <= 0 or p.idle <= rules.idle_ticks:
        return 100
    return 100 * rules.idle_ticks // p.idle


def reasons(flags: int) -> list[str]:
    return [name for bit, name in REASONS.items() if flags & bit]


def watch_points(p: Presence, ts: float, points: int, rules: QualityRules) -> tuple[int, int]:
    """The points a watch credit of tick `ts` earns, and the member's flags after it."""
    if ts != p.tick_ts:
        if p.tick_channels <= rules.max_channels_at_once or not rules.max_channels_at_once:
            p.flags &= ~MULTI_CHANNEL  # the tick before was within the limit
        away = ts - p.tick_ts >= rules.left_after_s
        p.tick_ts, p.tick_channels = ts, 0
        p.idle = 1 if away else p.idle + 1  # a gap: the member left, and came back
    p.tick_channels += 1
    flags = p.flags & ~IDLE
    idle_ticks = rules.idle_ticks
    s = 100 if idle_ticks <= 0 or p.idle <= idle_ticks else 100 * idle_ticks // p.idle  # score()
    if s < 100:
        flags |= IDLE
    if rules.max_channels_at_once and p.tick_channels > rules.max_channels_at_once:
        flags |= MULTI_CHANNEL
        earned = 0
    elif s < rules.withhold_below:
        earned = 0
    else:
        earned = points * s // 100 if s < rules.scale_below else points
    p.withheld += points - earned
    return earned, flags


def activity(p: Presence, rule: str) -> None:
    """A credit of `rule` that is activity ends the idle run."""
    if rule not in NOT_ACTIVITY:
        p.idle = 0
        p.flags &= ~IDLE


flag_encoder = msgspec.msgpack.Encoder()
flag_decoder = msgspec.msgpack.Decoder(Flag)
