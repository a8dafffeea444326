"""Anti-farming: a scripted idle farm earns under the thresholds, ordinary viewers keep every
point; flags and reasons for the admin view."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import quality
from engine.member import Applied, Credit, MemberState, apply_credit
from engine.rules import NetworkRules, QualityRules

ON = NetworkRules()
OFF = NetworkRules(quality=QualityRules(max_channels_at_once=0, idle_ticks=0))
TICK = 300
T0 = 1_800_000_000


def run(credits: list[Credit], rules: NetworkRules) -> tuple[int, Applied, MemberState]:
    state, out = MemberState(), Applied()
    for c in sorted(credits, key=lambda c: (c.ts, c.id)):
        apply_credit(state, c, rules, rules.earn, out)
    watch = sum(e.amount for e in out.entries if e.rule == "watch")
    return watch, out, state


def watch(user: str, channel: str, tick: int) -> Credit:
    return Credit(
        f"w:{channel}:{tick}:{user}", "n", channel, user, "", T0 + tick * TICK, "watch", 10
    )


def test_an_idle_farm_earns_under_the_threshold() -> None:
    channels = [f"c{i}" for i in range(8)]
    farm = [watch("bot1", ch, t) for t in range(576) for ch in channels]  # 48 h, 8 channels
    free, _, _ = run(farm, OFF)
    earned, out, state = run(farm, ON)
    assert earned < free * 0.3
    assert out.withheld > 0
    # from four times idle_ticks on, nothing at all
    late = [e for e in out.entries if e.rule == "watch" and e.ts >= T0 + 4 * 144 * TICK]
    assert late == []
    assert set(quality.reasons(state.presence.flags)) == {"idle", "multi_channel"}
    last = out.flags[-1]
    assert last.reasons == ["multi_channel", "idle"]
    assert last.score < ON.quality.withhold_below


viewer_days = st.lists(
    st.tuples(
        st.integers(0, 6),  # day
        st.integers(0, 140),  # first tick of the day's session (it ends by 23:40)
        st.integers(1, 144),  # ticks watched (up to 12 h)
        st.integers(1, 3),  # channels at once
        st.lists(st.integers(0, 143), max_size=5),  # ticks (into the session) with a chat
    ),
    max_size=6,
    unique_by=lambda d: d[0],  # one session a day, of at most 12 hours
)


@settings(max_examples=30, deadline=None)
@given(viewer_days)
def test_ordinary_viewers_are_untouched(days) -> None:
    credits, seen = [], set()
    for day, start, length, n_ch, chats in days:
        for k in range(length):
            t = day * 288 + start + k
            for ch in range(n_ch):
                if (t, ch) not in seen:
                    seen.add((t, ch))
                    credits.append(watch("ann", f"c{ch}", t))
        for k in chats:
            ts = T0 + (day * 288 + start + min(k, length - 1)) * TICK + 1
            credits.append(Credit(f"chat{ts}", "n", "c0", "ann", "", ts, "chat", 1))
    with_rules, out, _ = run(credits, ON)
    without, _, _ = run(credits, OFF)
    assert with_rules == without
    assert out.withheld == 0
    assert not [f for f in out.flags if f.reasons]


def test_activity_resets_the_idle_run() -> None:
    rules = QualityRules(idle_ticks=2)
    p = quality.Presence()
    got = [quality.watch_points(p, float(t * 60), 10, rules)[0] for t in range(4)]
    assert got == [10, 10, 10, 5]  # scores 100, 100, 66 (>= scale_below), 50
    quality.activity(p, "chat")
    assert quality.watch_points(p, 240.0, 10, rules)[0] == 10
    quality.activity(p, "streak")  # not activity
    assert p.idle == 1
