"""The channel rules: what each event kind credits, presence and the viewers snapshot,
watch ticks on event time (once per tick, catch-up cap, offline rate, active-chatter
bonus), the ignore list, the events/s window and ChannelState encoding."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.channel import (
    RATE_WINDOW_S,
    Changes,
    Channel,
    ChannelState,
    channel_decoder,
    channel_encoder,
    events_per_s,
    silent,
)
from engine.events import Event, Leave, Viewer
from engine.member import Credit
from engine.rules import EarnRules
from tests.engine.factories import CH, NET, T0, ev, one_of_each

K = int(T0 // 60)
"""The 60 s tick that starts at T0."""


def feed(
    channel: Channel, events: list[Event], earn: EarnRules, now: float = 0.0
) -> tuple[list[Credit], Changes]:
    credits: list[Credit] = []
    changes = Changes()
    for e in events:
        channel.apply(e, earn, now, changes, credits)
    return credits, changes


PAST = 0.001
"""A tick at T is paid once the clock is past T (every event at T applied first)."""


def advance(channel: Channel, ts: float, earn: EarnRules) -> list[Credit]:
    """Move the clock just past `ts`: ticks up to and including `ts` are paid."""
    credits: list[Credit] = []
    channel.advance(ts + PAST, earn, credits)
    return credits


def paid(credits: list[Credit]) -> list[tuple[int, str, int]]:
    """(tick, user, points) of watch credits."""
    return [(int(c.ts // 60), c.user_id, c.points) for c in credits if c.rule == "watch"]


WATCH = EarnRules(watch_interval_s=60, watch_points_live=10, active_chatter_bonus=0)


def live_with(users: list[str], earn: EarnRules = WATCH) -> Channel:
    """A channel that went live at T0 with `users` present (no tick crossed yet)."""
    channel = Channel(NET, CH)
    events = [ev("online", "on", T0)] + [ev("join", f"j-{u}", T0 + 1, u) for u in users]
    credits, _ = feed(channel, events, earn)
    assert credits == []
    return channel


@pytest.mark.parametrize(
    ("kind", "fields", "earn", "rule", "points"),
    [
        ("chat", {}, {}, "chat", 1),
        ("chat", {}, {"chat_points": 3}, "chat", 3),
        ("chat", {}, {"chat_points": 0}, None, 0),
        ("follow", {}, {}, "follow", 50),
        ("sub", {"tier": 1}, {}, "sub", 500),
        ("sub", {"tier": 2}, {}, "sub", 1_000),
        ("sub", {"tier": 3, "months": 12}, {}, "sub", 2_500),
        ("sub", {"tier": 2, "gifted": True}, {}, "sub", 1_000),
        ("gift_bomb", {"count": 1}, {}, "gift", 250),
        ("gift_bomb", {"count": 5, "tier": 3}, {}, "gift", 1_250),
        ("gift_bomb", {"count": 4}, {"gifted_sub_points": 10}, "gift", 40),
        ("cheer", {"amount": 100}, {}, "cheer", 100),
        ("cheer", {"amount": 250}, {"cheer_points_per_100": 10}, "cheer", 25),
        ("cheer", {"amount": 99}, {"cheer_points_per_100": 10}, "cheer", 9),
        ("cheer", {"amount": 9}, {"cheer_points_per_100": 10}, None, 0),
        ("raid", {"viewers": 40}, {}, "raid", 100),
        ("raid", {"viewers": 40}, {"raid_points_per_viewer": 2}, "raid", 180),
        ("raid", {"viewers": 0}, {"raid_points": 0}, None, 0),
        ("custom", {"action": "quiz", "points": 42}, {}, "custom", 42),
        ("custom", {"points": 0}, {}, None, 0),
        ("join", {}, {}, None, 0),
        ("leave", {}, {}, None, 0),
        ("online", {}, {}, None, 0),
        ("offline", {}, {}, None, 0),
        ("viewers", {"viewers": ["u1"]}, {}, None, 0),
    ],
)
def test_each_kind_credits_its_rule(
    kind: str, fields: dict[str, Any], earn: dict[str, Any], rule: str | None, points: int
) -> None:
    user = "" if kind in ("online", "offline", "viewers") else "u1"
    event = ev(kind, "e1", T0, user, **fields)
    credits, _ = feed(Channel(NET, CH), [event], EarnRules(**earn))
    if rule is None:
        assert credits == []
    else:
        assert credits == [Credit("e1", NET, CH, "u1", "name-u1", T0, rule, points)]


def test_gift_bomb_credits_the_gifter_only() -> None:
    credits, changes = feed(
        Channel(NET, CH), [ev("gift_bomb", "g", T0, "gifter", count=3)], EarnRules()
    )
    assert [(c.user_id, c.points) for c in credits] == [("gifter", 750)]
    assert changes.present_set == {}  # gifting is not presence


@pytest.mark.parametrize("kind", ["chat", "follow", "sub", "gift_bomb", "cheer", "raid", "custom"])
def test_ignored_users_earn_nothing(kind: str) -> None:
    earn = EarnRules(ignore=frozenset({"bot"}))
    fields: dict[str, Any] = {"points": 5} if kind == "custom" else {}
    credits, _ = feed(Channel(NET, CH), [ev(kind, "e1", T0, "bot", **fields)], earn)
    assert credits == []


def test_ignored_viewer_earns_no_watch_points_but_others_do() -> None:
    earn = EarnRules(watch_interval_s=60, ignore=frozenset({"bot"}))
    channel = live_with(["bot", "u1"], earn)
    assert {c.user_id for c in advance(channel, T0 + 60, earn)} == {"u1"}


def test_each_crossed_boundary_pays_each_present_viewer_once() -> None:
    channel = live_with(["u1", "u2"])
    assert advance(channel, T0 + 59, WATCH) == []
    first = advance(channel, T0 + 60, WATCH)
    assert first == [
        Credit(f"w:{NET}:{CH}:{K + 1}:u1", NET, CH, "u1", "name-u1", T0 + 60, "watch", 10),
        Credit(f"w:{NET}:{CH}:{K + 1}:u2", NET, CH, "u2", "name-u2", T0 + 60, "watch", 10),
    ]
    assert advance(channel, T0 + 60, WATCH) == []
    assert advance(channel, T0 + 119, WATCH) == []
    assert advance(channel, T0 + 30, WATCH) == []  # event time never goes back
    assert channel.state.last_tick == K + 1
    later = advance(channel, T0 + 240, WATCH)
    assert paid(later) == [(t, u, 10) for t in (K + 2, K + 3, K + 4) for u in ("u1", "u2")]
    ids = [c.id for c in first + later]
    assert len(ids) == len(set(ids))


def test_events_move_the_clock_and_pay_before_they_apply() -> None:
    channel = live_with(["u1"])
    credits, _ = feed(
        channel, [ev("leave", "l1", T0 + 130, "u1"), ev("join", "j2", T0 + 200, "u2")], WATCH
    )
    assert paid(credits) == [(K + 1, "u1", 10), (K + 2, "u1", 10)]  # nobody at K + 3
    assert channel.state.active_ts == T0 + 200
    assert paid(advance(channel, T0 + 240, WATCH)) == [(K + 4, "u2", 10)]


def test_first_event_only_starts_the_clock() -> None:
    channel = Channel(NET, CH)
    credits, _ = feed(
        channel, [ev("join", "j", T0 + 500, "u1"), ev("online", "on", T0 + 501)], WATCH
    )
    assert credits == []
    assert channel.state.last_tick == int((T0 + 500) // 60)


def test_a_channel_whose_first_event_is_at_time_zero_still_pays() -> None:
    channel = Channel(NET, CH)
    feed(channel, [ev("online", "on", 0.0), ev("join", "j", 0.0, "u1")], WATCH)
    assert paid(advance(channel, 130.0, WATCH)) == [(0, "u1", 10), (1, "u1", 10), (2, "u1", 10)]


def test_presence_goes_stale_max_catchup_ticks_after_the_channels_last_event() -> None:
    earn = EarnRules(watch_interval_s=60, max_catchup_ticks=3, active_chatter_bonus=0)
    channel = live_with(["u1"], earn)  # its last event at T0 + 1
    assert paid(advance(channel, T0 + 600, earn)) == [
        (K + 1, "u1", 10),
        (K + 2, "u1", 10),
        (K + 3, "u1", 10),
    ]
    assert paid(advance(channel, T0 + 660, earn)) == []
    feed(channel, [ev("chat", "c", T0 + 700, "u1")], earn)  # activity: presence is fresh
    assert paid(advance(channel, T0 + 780, earn)) == [(K + 12, "u1", 10), (K + 13, "u1", 10)]
    none = EarnRules(watch_interval_s=60, max_catchup_ticks=0)
    channel = live_with(["u1"], none)
    assert advance(channel, T0 + 600, none) == []


@pytest.mark.parametrize(
    ("offline_points", "expected"),
    [(0, []), (3, [(K, "u1", 3), (K + 1, "u1", 3), (K + 2, "u1", 3)])],
)
def test_offline_rate_while_not_live(
    offline_points: int, expected: list[tuple[int, str, int]]
) -> None:
    earn = EarnRules(
        watch_interval_s=60, watch_points_offline=offline_points, active_chatter_bonus=0
    )
    channel = Channel(NET, CH)
    feed(channel, [ev("join", "j", T0, "u1")], earn)
    assert paid(advance(channel, T0 + 120, earn)) == expected
    assert channel.state.last_tick == K + 2  # ticks are used up either way: no back pay


def test_going_offline_pays_crossed_ticks_at_the_live_rate_then_the_offline_rate() -> None:
    earn = EarnRules(watch_interval_s=60, watch_points_offline=3, active_chatter_bonus=0)
    channel = live_with(["u1"], earn)
    credits, _ = feed(channel, [ev("offline", "off", T0 + 150)], earn)
    assert paid(credits) == [(K + 1, "u1", 10), (K + 2, "u1", 10)]
    assert channel.state.live is False
    assert paid(advance(channel, T0 + 300, earn)) == [
        (K + 3, "u1", 3),
        (K + 4, "u1", 3),
        (K + 5, "u1", 3),
    ]
    credits, _ = feed(channel, [ev("online", "on2", T0 + 330)], earn)
    assert credits == []
    assert paid(advance(channel, T0 + 360, earn)) == [(K + 6, "u1", 10)]


CHATTY = EarnRules(
    watch_interval_s=60, watch_points_live=10, active_chatter_window_s=120, active_chatter_bonus=5
)


@pytest.mark.parametrize(
    ("chat_at", "points_at_tick_180"),
    [
        (60.0, 15),  # exactly window seconds before the tick: inside
        (59.5, 10),  # just outside
        (150.0, 15),
        (179.0, 15),
        (180.0, 15),  # at the tick: every event at T is applied before the tick at T
        (180.5, 10),  # just after the tick: the tick is paid first
    ],
)
def test_active_chatter_bonus_window(chat_at: float, points_at_tick_180: int) -> None:
    channel = live_with(["u1", "u2"], CHATTY)
    credits, changes = feed(channel, [ev("chat", "c", T0 + chat_at, "u1")], CHATTY)
    assert changes.chatted == {"u1": T0 + chat_at}
    credits += advance(channel, T0 + 180, CHATTY)
    at_180 = {u: p for t, u, p in paid(credits) if t == K + 3}
    assert at_180 == {"u1": points_at_tick_180, "u2": 10}


def test_active_chatter_bonus_fades_tick_by_tick() -> None:
    channel = live_with(["u2"], CHATTY)
    credits, _ = feed(channel, [ev("chat", "c", T0 + 10, "u1")], CHATTY)
    assert "u1" in channel.present  # chatting is presence
    credits += advance(channel, T0 + 240, CHATTY)
    assert [(t - K, p) for t, u, p in paid(credits) if u == "u1"] == [
        (1, 15),
        (2, 15),
        (3, 10),
        (4, 10),
    ]


def test_chatters_are_forgotten_before_a_horizon() -> None:
    channel = live_with([], CHATTY)
    feed(channel, [ev("chat", "c1", T0 + 10, "u1"), ev("chat", "c2", T0 + 20, "u2")], CHATTY)
    assert channel.forget_chatters_before(T0 + 15) is True
    assert channel.chatters == {"u2": T0 + 20}
    assert channel.forget_chatters_before(T0 + 15) is False


def test_viewers_snapshot_removes_absent_viewers() -> None:
    channel = live_with(["u1", "u2", "u3"])
    snapshot = ev("viewers", "v", T0 + 2, viewers=[Viewer(id="u2"), Viewer(id="u4", name="Dee")])
    _, changes = feed(channel, [snapshot], WATCH)
    assert channel.present == {"u2": "name-u2", "u4": "Dee"}  # a nameless entry keeps the name
    assert changes.present_del == {"u1", "u3"}
    assert changes.present_set == {"u4": "Dee"}
    assert {c.user_id for c in advance(channel, T0 + 60, WATCH)} == {"u2", "u4"}
    _, changes = feed(channel, [ev("viewers", "v2", T0 + 70, viewers=[])], WATCH)
    assert channel.present == {}
    assert changes.present_del == {"u2", "u4"}
    assert advance(channel, T0 + 180, WATCH) == []


def test_changes_record_presence_and_chat_for_persistence() -> None:
    channel = Channel(NET, CH)
    _, changes = feed(
        channel,
        [
            ev("join", "j1", T0, "u1"),
            ev("join", "j2", T0, "u2"),
            ev("leave", "l1", T0 + 1, "u1"),
            ev("chat", "c1", T0 + 2, "u3"),
            ev("leave", "l9", T0 + 3, "nobody"),
        ],
        WATCH,
    )
    assert changes.present_set == {"u2": "name-u2", "u3": "name-u3"}
    assert changes.present_del == {"u1"}
    assert changes.chatted == {"u3": T0 + 2}
    _, again = feed(channel, [ev("join", "j3", T0 + 4, "u2")], WATCH)
    assert again.present_set == {}  # nothing changed, nothing to write


def test_events_per_s_over_the_window() -> None:
    state = ChannelState()
    channel = Channel(NET, CH, state)
    for now in (100.2, 100.9, 101.0, 105.5, 105.6):
        channel.count(now)
    assert state.events == 5
    assert events_per_s(state, 105.9) == 5 / RATE_WINDOW_S
    assert events_per_s(state, 109.0) == 5 / RATE_WINDOW_S
    assert events_per_s(state, 110.0) == 3 / RATE_WINDOW_S  # second 100 has left the window
    assert events_per_s(state, 111.0) == 2 / RATE_WINDOW_S
    assert events_per_s(state, 115.0) == 0.0
    channel.count(110.0)  # reuses the slot of second 100
    assert events_per_s(state, 110.0) == 4 / RATE_WINDOW_S
    assert events_per_s(ChannelState(), 0.0) == 0.0


def test_apply_counts_every_event_on_the_wall_clock() -> None:
    channel = Channel(NET, CH)
    feed(channel, one_of_each(), WATCH, now=50.0)
    assert channel.state.events == len(one_of_each())
    assert events_per_s(channel.state, 50.0) == len(one_of_each()) / RATE_WINDOW_S


def test_channel_state_round_trips_through_msgpack() -> None:
    channel = live_with(["u1"])
    feed(channel, one_of_each(T0 + 200), WATCH, now=T0)
    state = channel.state
    assert state.events > 0
    assert state.last_tick > 0
    again = channel_decoder.decode(channel_encoder.encode(state))
    assert again == state
    assert channel_decoder.decode(channel_encoder.encode(ChannelState())) == ChannelState()


# -- the presence timeout: no ghost viewers ---------------------------------------------------
TIMEOUT = EarnRules(
    watch_interval_s=60, watch_points_live=10, active_chatter_bonus=0, presence_timeout_s=300,
    max_catchup_ticks=1_000,
)  # fmt: skip


def test_silent_lists_viewers_quiet_for_the_timeout() -> None:
    seen = {"a": 100.0, "b": 401.0, "c": 400.0}
    assert silent(seen, 700.0, 300) == ["a", "c"]  # 300 s or more before the tick
    assert silent(seen, 700.0, 0) == []  # 0: no timeout


def test_a_lurker_who_only_joins_is_paid_until_the_timeout_then_leaves() -> None:
    channel = live_with(["lurker", "talker"], TIMEOUT)  # joined at T0 + 1
    chats = [ev("chat", f"c{i}", T0 + 30 + 60 * i, "talker") for i in range(10)]
    credits, changes = feed(channel, chats, TIMEOUT)
    credits += advance(channel, T0 + 600, TIMEOUT)
    lurker = sorted(t - K for t, u, _ in paid(credits) if u == "lurker")
    talker = sorted(t - K for t, u, _ in paid(credits) if u == "talker")
    assert lurker == [1, 2, 3, 4, 5]  # ticks at T0+60..T0+300; gone at T0+360 (T0+1+300 <=)
    assert talker == list(range(1, 11))
    assert "lurker" not in channel.present
    assert "lurker" not in channel.seen
    assert "lurker" in changes.present_del


def test_a_snapshot_or_a_join_keeps_a_lurker_present() -> None:
    channel = live_with(["lurker"], TIMEOUT)
    snaps = [ev("viewers", f"v{i}", T0 + 200 * (i + 1), viewers=["lurker"]) for i in range(4)]
    credits, changes = feed(channel, snaps, TIMEOUT)
    credits += advance(channel, T0 + 960, TIMEOUT)
    assert [t - K for t, _, _ in paid(credits)] == list(range(1, 17))
    assert changes.seen == {"lurker": T0 + 800}
    credits = advance(channel, T0 + 1200, TIMEOUT)  # silent since T0 + 800: gone at T0 + 1140
    assert [t - K for t, _, _ in paid(credits)] == [17, 18]
    assert channel.present == {}


def test_presence_stored_before_seen_existed_counts_from_the_newest_event() -> None:
    state = ChannelState(live=True, last_tick=K, active_ts=T0 + 100)
    channel = Channel(NET, CH, state, {"old": "Old"})
    assert channel.seen == {"old": T0 + 100}
    changes = Changes()
    channel.advance(T0 + 61, TIMEOUT, [], changes)
    assert changes.seen == {"old": T0 + 100}  # written once, so a later restart agrees
    assert [t - K for t, _, _ in paid(advance(channel, T0 + 600, TIMEOUT))] == [2, 3, 4, 5, 6]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["join", "chat", "leave", "viewers"]),
                  st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 1_500)),
        max_size=25,
    ),
    st.lists(st.integers(0, 2_000), max_size=6),
)  # fmt: skip
def test_timeout_pays_no_ghost_and_does_not_depend_on_clock_steps(
    raw: list[tuple[str, str, int]], steps: list[int]
) -> None:
    """Whatever the events and however the clock is moved between them (the watermark's
    steps), the same ticks are paid, and no viewer is paid for a tick `presence_timeout_s`
    or more after their last sign of life."""
    events = [
        ev(kind, f"e{i}", T0 + 1 + at, user, **({"viewers": [user]} if kind == "viewers" else {}))
        for i, (kind, user, at) in enumerate(sorted(raw, key=lambda r: r[2]))
    ]
    end = T0 + 4_000

    def run(stepped: bool) -> list[Credit]:
        channel = Channel(NET, CH)
        credits, _ = feed(channel, [ev("online", "on", T0)], TIMEOUT)
        marks = sorted(T0 + s for s in steps) if stepped else []
        for e in events:
            while marks and marks[0] < e.ts:
                channel.advance(marks.pop(0), TIMEOUT, credits, Changes())
            channel.apply(e, TIMEOUT, 0.0, Changes(), credits)
        credits += advance(channel, end, TIMEOUT)
        return credits

    plain = run(False)
    assert sorted(paid(plain)) == sorted(paid(run(True)))
    for tick, user, _ in paid(plain):
        signs = [e.ts for e in events if e.user_id == user and e.ts <= tick * 60
                 and not isinstance(e, Leave)]  # fmt: skip
        assert signs, "paid someone never seen"
        assert tick * 60 - max(signs) < TIMEOUT.presence_timeout_s
