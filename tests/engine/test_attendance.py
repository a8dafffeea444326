"""Attendance: presence during a live stream earns its rewards once per viewer per stream,
whatever way the clock is advanced; configuration checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import attendance
from engine.channel import Changes, Channel, channel_decoder, channel_encoder
from engine.rules import EarnRules
from tests.engine.factories import CH, NET, ev

EARN = EarnRules(
    watch_interval_s=60, watch_points_live=0, max_catchup_ticks=1_000,
    attendance_min_s=900, attendance_points=50,
    attendance_milestones_s=(1800, 3600), attendance_milestone_points=(20, 30),
    presence_timeout_s=0,  # viewers here stay until they leave, however long they are silent
)  # fmt: skip
START = 1_800_000_000.0  # a whole minute


def _run(cuts: list[float], stream_s: float, viewers: dict[str, tuple[float, float]]) -> list:
    """A live stream of `stream_s` with viewers joining/leaving at the given offsets; the
    clock advanced at the `cuts` (offsets); returns the attendance credits (id, user, pts)."""
    ch, out, chg = Channel(NET, CH), [], Changes()
    events = [ev("online", "on", START)]
    for i, (u, (a, b)) in enumerate(sorted(viewers.items())):
        events += [ev("join", f"j{i}", START + a, u), ev("leave", f"l{i}", START + b, u)]
    events.append(ev("offline", "off", START + stream_s))
    events.sort(key=lambda e: (e.ts, e.id))
    cuts = sorted(c for c in cuts if 0 < c < stream_s + 600)
    for e in events:
        while cuts and START + cuts[0] < e.ts:
            ch.advance(START + cuts.pop(0), EARN, out)
        ch.apply(e, EARN, 0.0, chg, out)
    ch.advance(START + stream_s + 600, EARN, out)
    return sorted((c.id, c.user_id, c.points) for c in out if c.rule == attendance.RULE)


offsets = st.floats(min_value=0, max_value=5_000, allow_nan=False)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.tuples(offsets, offsets), max_size=4),
    st.lists(offsets, max_size=20),
)
def test_rewards_follow_presence_not_how_the_clock_moved(viewers, cuts) -> None:
    viewers = {u: (min(a, b), max(a, b)) for u, (a, b) in viewers.items()}
    got = _run(cuts, 4_000.0, viewers)
    assert got == _run([], 4_000.0, viewers)
    for u, (a, b) in viewers.items():
        # a tick at T counts whoever is present once every event at <= T applied: the
        # minutes T with join <= T < leave while live (online at 0, offline at 4000)
        ticks = [START + k * 60 for k in range(4_001 // 60 + 1)]  # absolute, as the channel sees
        present = sum(1 for t in ticks if START + a <= t < START + min(b, 4_000.0)) * 60
        earned = sorted(p for _, uid, p in got if uid == u)
        assert earned == sorted(p for s, p in attendance.thresholds(EARN) if present >= s)


def test_once_per_stream_and_again_in_the_next() -> None:
    ch, out, chg = Channel(NET, CH), [], Changes()
    for i in range(2):
        base = START + i * 10_000
        ch.apply(ev("online", f"on{i}", base), EARN, 0.0, chg, out)
        ch.apply(ev("join", f"j{i}", base + 1, "v"), EARN, 0.0, chg, out)
        ch.apply(ev("offline", f"off{i}", base + 2_000), EARN, 0.0, chg, out)
    ch.advance(START + 30_000, EARN, out)
    ids = [c.id for c in out if c.rule == attendance.RULE]
    assert len(ids) == len(set(ids)) == 4  # 900 s and 1800 s in each stream
    assert ch.state.attend == {}


def test_offline_presence_and_ignored_viewers_earn_nothing() -> None:
    earn = EarnRules(
        watch_interval_s=60, attendance_points=5, max_catchup_ticks=1_000,
        ignore=frozenset({"bot"}), presence_timeout_s=0,
    )  # fmt: skip
    ch, out, chg = Channel(NET, CH), [], Changes()
    ch.apply(ev("join", "j1", START, "v"), earn, 0.0, chg, out)
    ch.apply(ev("join", "j2", START, "bot"), earn, 0.0, chg, out)
    ch.advance(START + 3_000, earn, out)
    assert not [c for c in out if c.rule == attendance.RULE]
    ch.apply(ev("online", "on", START + 3_000), earn, 0.0, chg, out)
    ch.advance(START + 6_000, earn, out)
    assert [c.user_id for c in out if c.rule == attendance.RULE] == ["v"]


def test_attendance_state_round_trips() -> None:
    ch = Channel(NET, CH)
    ch.state.attend["v"] = 120
    assert channel_decoder.decode(channel_encoder.encode(ch.state)).attend == {"v": 120}


def test_off_by_default_and_checked() -> None:
    assert not attendance.enabled(EarnRules())
    assert attendance.crossed(800, 960, [(900, 5)]) == [(900, 5)]
    with pytest.raises(ValueError, match="differ in length"):
        EarnRules(attendance_milestones_s=(60,), attendance_milestone_points=(1, 2))
    with pytest.raises(ValueError, match="positive"):
        EarnRules(attendance_min_s=0)
