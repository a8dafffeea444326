"""Attendance: a viewer present long enough during a live stream earns a reward, once.

A channel's live stream (from its `online` to its `offline`) is the event's window: an AMA
or a launch is a channel going live for it. Presence is what the channel itself saw, never
a client's claim: every watch tick passed while the channel is live adds one
`watch_interval_s` to each present viewer's time in this stream (`ChannelState.attend`,
reset when a new stream starts; stale presence, past `max_catchup_ticks`, counts nothing, as
for watch points). When a viewer's time reaches `attendance_min_s` they earn
`attendance_points`; each milestone of `attendance_milestones_s` reached earns its
`attendance_milestone_points`. The credit id names the channel, the stream (its start
time), the threshold and the viewer, so each is paid once per viewer per stream, through
the member's usual rules (tier multiplier, welcome, streak).
"""

from __future__ import annotations

from engine.rules import EarnRules

RULE = "attendance"


def thresholds(earn: EarnRules) -> list[tuple[int, int]]:
    """(seconds present, points) of every reward the channel declares, in order."""
    marks = [(earn.attendance_min_s, earn.attendance_points)]
    marks += zip(earn.attendance_milestones_s, earn.attendance_milestone_points, strict=True)
    return sorted((s, p) for s, p in marks if p > 0)


def enabled(earn: EarnRules) -> bool:
    return earn.attendance_points > 0 or any(p > 0 for p in earn.attendance_milestone_points)


def crossed(before_s: int, after_s: int, marks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The thresholds a viewer's time passes when it goes from `before_s` to `after_s`."""
    return [(s, p) for s, p in marks if before_s < s <= after_s]


def credit_id(network: str, channel: str, live_since: float, threshold_s: int, uid: str) -> str:
    return f"a:{network}:{channel}:{live_since:.3f}:{threshold_s}:{uid}"
