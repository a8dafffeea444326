"""engine/ratelimit.py and engine/commands.py: the sliding window never lets more than
`limit` sends into any window; command parsing, lookup by alias, role, availability,
cooldowns and templates (hypothesis where a property says more than examples)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.commands import (
    COOLDOWN_GLOBAL,
    COOLDOWN_USER,
    DISABLED,
    MAX_REPLY_LEN,
    OK,
    ROLE,
    UNAVAILABLE,
    UNKNOWN,
    CommandConfigError,
    CommandSpec,
    CommandTable,
    Cooldowns,
    check,
    decode_spec,
    parse_command,
    render,
)
from engine.ratelimit import SlidingWindow, twitch_window


def test_twitch_limits() -> None:
    w = twitch_window(moderator=False)
    assert sum(w.try_send(0.0) for _ in range(25)) == 20
    assert w.next_at(1.0) == 30.0
    assert not w.try_send(29.9)
    assert w.try_send(30.0)
    m = twitch_window(moderator=True)
    assert sum(m.try_send(0.0) for _ in range(150)) == 100


@given(
    limit=st.integers(1, 10),
    window=st.floats(0.5, 10),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=80),
)
def test_window_never_exceeds_limit(limit: int, window: float, gaps: list[float]) -> None:
    w = SlidingWindow(limit, window)
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        at = w.next_at(now)
        assert at >= now
        if w.try_send(now):
            assert at == now
            sent.append(now)
        else:
            assert at > now
    for i, t in enumerate(sent):  # any `limit + 1` consecutive sends span >= window
        if i >= limit:  # (reckoned as the window does: a send expires at its time + window)
            assert sent[i - limit] + window <= t


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("!points", "points", ()),
        ("!Points @Alice", "points", ("@Alice",)),
        ("!give  bob   50 ", "give", ("bob", "50")),
        ("hello !points", None, None),
        ("!", None, None),
        ("!!x", None, None),
        ("!" + "x" * 40, None, None),
    ],
)
def test_parse_command(text: str, name: str | None, args: tuple[str, ...] | None) -> None:
    inv = parse_command(text)
    if name is None:
        assert inv is None
    else:
        assert inv is not None
        assert (inv.name, inv.args) == (name, args)


def test_touser_strips_at() -> None:
    inv = parse_command("!give @Bob 5")
    assert inv is not None
    assert inv.touser == "bob"


@given(st.text(max_size=200))
def test_parse_command_never_raises(text: str) -> None:
    inv = parse_command(text)
    if inv is not None:
        assert inv.name.isascii()
        assert len(inv.args) <= 16


def test_table_builtins_aliases_and_overrides() -> None:
    table = CommandTable(
        [
            CommandSpec(name="discord", aliases=["dc"], response="join {channel}"),
            CommandSpec(name="points", aliases=["pts"], cooldown_user_s=5),
        ]
    )
    assert table.lookup("dc") is table.lookup("discord")
    points = table.lookup("pts")
    assert points is not None
    assert points.cooldown_user_s == 5
    bonus = table.lookup("bonusall")
    assert bonus is not None
    assert bonus.min_role == "moderator"
    assert table.lookup("nope") is None


def test_check_reasons() -> None:
    cd = Cooldowns()
    spec = CommandSpec(
        name="hype", response="x", cooldown_global_s=10, cooldown_user_s=60, min_role="subscriber"
    )
    assert check(None, cd, "u", "everyone", True, 0) == UNKNOWN
    assert check(spec, cd, "u", "everyone", True, 0) == ROLE
    assert check(spec, cd, "u", "subscriber", True, 0) == OK
    cd.record(spec, "u", 0)
    assert check(spec, cd, "v", "vip", True, 5) == COOLDOWN_GLOBAL
    assert check(spec, cd, "v", "vip", True, 10) == OK
    assert check(spec, cd, "u", "vip", True, 10) == COOLDOWN_USER
    assert check(spec, cd, "u", "moderator", True, 1) == OK  # moderators skip cooldowns
    assert check(spec, cd, "u", "vip", True, 60) == OK
    off = CommandSpec(name="x", response="x", availability="offline")
    on = CommandSpec(name="y", response="y", availability="online")
    assert check(off, cd, "u", "everyone", True, 0) == UNAVAILABLE
    assert check(on, cd, "u", "everyone", False, 0) == UNAVAILABLE
    assert check(on, cd, "u", "everyone", True, 0) == OK
    dis = CommandSpec(name="z", response="z", enabled=False)
    assert check(dis, cd, "u", "broadcaster", True, 0) == DISABLED


def test_render_variables() -> None:
    out = render(
        "@{user} has {points} points ({tier}, #{rank}) {unknown} {args}",
        {"user": "alice", "points": 42, "tier": "Gold", "rank": 3, "args": "{points}"},
    )
    assert out == "@alice has 42 points (Gold, #3) {unknown} {points}"


@given(st.text(max_size=600), st.text(max_size=600))
def test_render_is_one_bounded_line_and_never_a_chat_command(template: str, arg: str) -> None:
    out = render(template, {"args": arg, "user": "u"})
    assert len(out) <= MAX_REPLY_LEN
    assert "\n" not in out
    assert "\r" not in out
    assert not out.startswith(("/", "."))


def test_decode_spec_names_the_field() -> None:
    spec = decode_spec(b'{"response": "hi {user}", "cooldown_user_s": 5}', name="hi")
    assert spec.name == "hi"
    with pytest.raises(CommandConfigError) as err:
        decode_spec(b'{"response": "x", "min_role": "king"}', name="hi")
    assert err.value.field == "min_role"
    with pytest.raises(CommandConfigError) as err:
        decode_spec(b"{}", name="custom")
    assert err.value.field == "response"
    with pytest.raises(CommandConfigError) as err:
        decode_spec(b'{"name": "other", "response": "x"}', name="hi")
    assert err.value.field == "name"
    with pytest.raises(CommandConfigError) as err:
        decode_spec(b"[1]", name="hi")
    assert err.value.field == "body"
    with pytest.raises(CommandConfigError) as err:
        decode_spec(b'{"response": "x", "bogus": 1}', name="hi")
    assert err.value.field == "bogus"
