"""Anti-farming: a scripted idle farm earns under the thresholds, ordinary viewers keep every
point; flags and reasons for the admin view."""

from __future__ import annotations

import hashlib
import struct

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import quality
from engine.member import Applied, Credit, MemberState, apply_credit, state_decoder, state_encoder
from engine.rules import NetworkRules, QualityRules

ON = NetworkRules()
OFF = NetworkRules(
    quality=QualityRules(
        max_channels_at_once=0, idle_ticks=0, new_account_max_channels=0, chat_repeats_max=0
    )
)
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
    assert set(quality.reasons(state.presence.flags)) == {"idle", "multi_channel", "new_account"}
    last = out.flags[-1]
    assert last.reasons == ["multi_channel", "idle", "new_account"]
    assert last.account_age_days == 1
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


def chat(user: str, channel: str, ts: float, text: str, points: int = 1) -> Credit:
    digest = quality.chat_digest(text)
    return Credit(f"m{ts}:{channel}", "n", channel, user, "", ts, "chat", points, "", digest)


def chat_points(out: Applied) -> int:
    return sum(e.amount for e in out.entries if e.rule == "chat")


def test_chat_digest_sets_case_spacing_and_punctuation_aside() -> None:
    d = quality.chat_digest
    assert d("Hello, World!") == d("hello   world") == d("HELLO WORLD!!!")
    assert d("hello world") != d("hello world 2")
    assert d("") == d("!!! :) ") == 0  # nothing to compare: never a repeat
    assert 0 < d("x") < 2**63


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8")) | st.text(st.characters(max_codepoint=127)))
def test_chat_digest_is_its_definition_for_any_text(text: str) -> None:
    """The ASCII fast path gives what the definition gives (stored digests stay valid)."""
    norm = "".join(ch for ch in text.casefold() if ch.isalnum())
    raw = hashlib.blake2b(norm.encode(), digest_size=8).digest()
    assert quality.chat_digest(text) == ((int.from_bytes(raw, "big") >> 1 or 1) if norm else 0)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),  # distinct lines the script rotates through
    st.integers(31, 180),  # seconds between messages (past the chat cooldown)
    st.integers(16, 400),  # messages (more than 5 lines * chat_repeats_max)
    st.integers(1, 8),  # channels it posts in, in turn
)
def test_a_scripted_chat_farm_earns_at_most_its_first_repeats(
    lines: int, period: int, n: int, channels: int
) -> None:
    texts = [f"Free points! #{k}" for k in range(lines)]
    credits = [chat("bot", f"c{i % channels}", T0 + i * period, texts[i % lines]) for i in range(n)]
    free = NetworkRules(quality=QualityRules(chat_repeats_max=0))
    unchecked = chat_points(run(credits, free)[1])
    _, out, state = run(credits, ON)
    cap = lines * ON.quality.chat_repeats_max  # each line earns at most chat_repeats_max times
    assert chat_points(out) <= cap < unchecked
    assert chat_points(out) + out.chat_withheld >= unchecked  # (the daily cap aside)
    if n > cap:
        assert "repeated_chat" in quality.reasons(state.presence.flags)
        assert out.flags[-1].reasons == ["repeated_chat"]
        assert out.flags[-1].repeated_chats == n - cap
    assert len(state.presence.chat_log) <= ON.quality.chat_history * quality.CHAT_RECORD.size


chatter = st.lists(
    st.tuples(st.integers(31, 3_600), st.integers(0, 2), st.sampled_from(["lol", "nice", "gg"])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(chatter)
def test_ordinary_chatters_are_untouched_in_several_channels(msgs) -> None:
    """Varied messages in up to three channels, a greeting in each, the odd "gg": every
    point kept, no flag."""
    credits, ts, greeted = [], float(T0), set()
    for i, (gap, ch, word) in enumerate(msgs):
        ts += gap
        if ch not in greeted:
            greeted.add(ch)
            credits.append(chat("ann", f"c{ch}", ts - 0.5, "Hi everyone!"))
        text = word if i % 7 == 0 else f"{word}, that was move {i}"  # a word alone now and then
        credits.append(chat("ann", f"c{ch}", ts, text))
    off = NetworkRules(quality=QualityRules(chat_repeats_max=0))
    _, out_off, _ = run(credits, off)
    _, out, state = run(credits, ON)
    assert chat_points(out) == chat_points(out_off)
    assert out.chat_withheld == 0
    assert not [f for f in out.flags if f.reasons]
    assert state.presence.repeats == 0


def test_repeated_chat_is_no_activity_for_the_idle_run() -> None:
    rules = NetworkRules(quality=QualityRules(idle_ticks=3))
    credits = [watch("bot", "c0", t) for t in range(12)]
    credits += [chat("bot", "c0", T0 + t * TICK + 1, "!points") for t in range(12)]
    _, _out, state = run(credits, rules)
    assert state.presence.idle == 12 - 3  # the first three chats were activity
    assert set(quality.reasons(state.presence.flags)) == {"idle", "repeated_chat"}
    # a new message is activity again, and clears the flag
    _, out2, state2 = run([*credits, chat("bot", "c0", T0 + 12 * TICK, "nice play")], rules)
    assert state2.presence.idle == 0
    assert out2.flags[-1].reasons == []


def test_a_new_account_earns_from_fewer_channels_until_it_is_a_week_old() -> None:
    q = ON.quality
    four = [f"c{i}" for i in range(q.new_account_max_channels + 1)]
    first = [watch("newbie", ch, 0) for ch in four]
    earned, out, _ = run(first, ON)
    assert earned == 10 * q.new_account_max_channels
    assert out.flags[-1].reasons == ["new_account"]
    assert out.flags[-1].account_age_days == 0
    week = q.new_account_days * 288  # ticks in new_account_days
    later = [*first, *(watch("newbie", ch, week) for ch in four)]
    later.append(watch("newbie", "c0", week + 1))
    earned, out, _state = run(later, ON)
    assert earned == 10 * q.new_account_max_channels + 10 * len(four) + 10
    # at a week old the normal limit applies; the flag clears after a tick within it
    assert out.flags[-1].reasons == []
    # an account that earned before (a week ago) watches four streams untouched
    old = [watch("regular", "c0", 0), *(watch("regular", ch, week) for ch in four)]
    earned, out, _ = run(old, ON)
    assert earned == 10 * (1 + len(four))
    assert not [f for f in out.flags if f.reasons]
    off = NetworkRules(quality=QualityRules(new_account_max_channels=0))
    assert run(first, off)[0] == 10 * len(four)


def test_members_stored_before_account_age_count_as_old() -> None:
    state = MemberState(last_day=1)  # earned before first_ts was kept: first_ts is NEVER
    out = Applied()
    for ch in ("a", "b", "c", "d"):
        apply_credit(state, watch("old", ch, 600), ON, ON.earn, out)
    assert sum(e.amount for e in out.entries if e.rule == "watch") == 40
    assert quality.age_days(state.presence, T0) == -1


def test_a_channel_chat_credit_carries_the_digest_of_its_text() -> None:
    from engine.channel import Changes, Channel
    from engine.events import Chat

    ch, out = Channel("n", "c0"), []
    ev = Chat(id="e1", network="n", channel="c0", ts=float(T0), user_id="u", text="GG  wp!")
    ch.apply(ev, ON.earn, 0.0, Changes(), out)
    assert [c.digest for c in out if c.rule == "chat"] == [quality.chat_digest("gg wp")]


def test_a_repeated_chat_is_no_chat_day_for_the_weekly_bonus() -> None:
    day = 86_400
    said = [chat("bot", "c0", T0 + k * 40, "!points") for k in range(3)]  # day 0: earns
    said += [chat("bot", "c0", T0 + d * day + k * 40, "!points") for d in (1, 2) for k in (0,)]
    _, _, state = run(said, NetworkRules(quality=QualityRules(chat_repeat_window_s=3 * day)))
    assert state.week_now.chat_days + state.week_before.chat_days == 1
    _, _, state = run(said, OFF)
    assert state.week_now.chat_days + state.week_before.chat_days == 3


def _model_repeated_chat(
    chats: list[tuple[int, float]], digest: int, ts: float, rules: QualityRules
) -> tuple[bool, list[tuple[int, float]]]:
    """The rule as its docstring says it, over a plain list: (repeat?, the history after)."""
    recent = [(d, t) for d, t in chats if t > ts - rules.chat_repeat_window_s]
    repeat = sum(d == digest for d, _ in recent) >= rules.chat_repeats_max
    return repeat, [*recent, (digest, ts)][-rules.chat_history :]


_digests = st.one_of(
    st.integers(1, 3),
    st.integers(1, 60).map(lambda x: _DIGEST.unpack(struct.pack("<d", float(x)))[0]),
)
"""Small digests, and digests whose bytes are those of event times: in the packed log they
also occur inside records, where they must not count."""
_DIGEST = struct.Struct("<Q")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_digests, st.integers(0, 60).map(float)), max_size=80),
    st.integers(1, 12),  # chat_history
    st.integers(1, 4),  # chat_repeats_max
    st.integers(1, 300),  # chat_repeat_window_s
    st.integers(0, 40),  # messages already stored the old way (Presence.chats)
)
def test_repeated_chat_matches_the_rule_over_a_plain_list(
    said: list[tuple[int, float]], history: int, repeats_max: int, window: int, legacy: int
) -> None:
    """The packed chat log gives the rule's answers, message by message (in event-time
    order, as a member's credits apply), also from a state stored as a list of pairs; and
    it holds exactly what the rule remembers."""
    rules = QualityRules(chat_history=history, chat_repeats_max=repeats_max,
                         chat_repeat_window_s=window)  # fmt: skip
    said = sorted(said, key=lambda x: x[1])
    p = quality.Presence()
    model: list[tuple[int, float]] = []
    for i, (d, t) in enumerate(said):
        want, model = _model_repeated_chat(model, d, t, rules)
        assert quality.repeated_chat(p, d, t, rules) is want
        got = list(quality.CHAT_RECORD.iter_unpack(p.chat_log))
        assert got == model
        assert p.chats == []
        if i < legacy:  # stored the old way again
            p.chats, p.chat_log = got, b""


def test_a_state_stored_before_the_chat_log_decodes_and_moves_its_chats_over() -> None:
    """A member state Redis holds from before Presence.chat_log (its presence one field
    shorter, the messages a list of pairs) decodes, and its next chat moves them over."""
    d1, d2 = quality.chat_digest("gg"), quality.chat_digest("hello chat")
    old = msgspec.msgpack.decode(state_encoder.encode(MemberState()))
    presence = old[13]
    assert presence[-1] == b""  # chat_log, the last field: a store before had none
    presence[-3:] = [[[d1, 100.0], [d1, 101.0], [d2, 102.0]], 0]  # chats, repeats: no chat_log
    state = state_decoder.decode(msgspec.msgpack.encode(old))
    assert state.presence.chats == [(d1, 100.0), (d1, 101.0), (d2, 102.0)]
    assert state.presence.chat_log == b""
    rules = QualityRules(chat_repeats_max=2)
    assert quality.repeated_chat(state.presence, d1, 103.0, rules)  # the third time
    assert state.presence.chats == []
    assert len(state.presence.chat_log) == 4 * quality.CHAT_RECORD.size
