"""engine/irc.py: IRCv3 line parsing (tags and their escaping), Twitch lines to events keyed
on the platform user id; hypothesis: escaping round-trips, format/parse round-trips, and no
line (however malformed) raises anything but IrcParseError."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import Chat, Cheer, GiftBomb, Join, Leave, Raid, Subscription, encode_events
from engine.irc import (
    IrcParseError,
    chat_events,
    chat_line,
    escape_tag,
    format_line,
    learn_login,
    names_events,
    parse_line,
    promote_client_tags,
    role_of,
    to_events,
    unescape_tag,
)

T = 1_700_000_000.0
NET = "twitch"

PRIVMSG = (
    "@badge-info=subscriber/8;badges=subscriber/6,premium/1;bits=100;color=#FF0000;"
    "display-name=Ronni;emotes=;id=b34ccfc7-4977-403a-8a94-33c6bac34fb8;mod=0;"
    "room-id=1337;subscriber=1;tmi-sent-ts=1507246572675;turbo=1;user-id=12345;"
    "user-type= :ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #Dallas :cheer100 Kappa\\s ok\r\n"
)


def test_privmsg_with_tags_and_bits() -> None:
    msg = parse_line(PRIVMSG)
    assert msg.command == "PRIVMSG"
    assert msg.params == ("#Dallas", "cheer100 Kappa\\s ok")
    assert msg.tags["display-name"] == "Ronni"
    assert msg.tags["user-type"] == ""
    assert msg.nick == "ronni"
    events = to_events(msg, NET, T)
    chat, cheer = events
    assert isinstance(chat, Chat)
    assert chat.id == "b34ccfc7-4977-403a-8a94-33c6bac34fb8"
    assert (chat.channel, chat.user_id, chat.user_name) == ("dallas", "12345", "Ronni")
    assert isinstance(cheer, Cheer)
    assert cheer.amount == 100
    assert cheer.id == chat.id + ".bits"
    encode_events(events)  # valid wire events


def test_tag_escaping() -> None:
    msg = parse_line(r"@a=x\:y\sz\\w\r\n;b;c=\q\ PING :tmi")
    assert msg.tags == {"a": "x;y z\\w\r\n", "b": "", "c": "q"}
    assert msg.command == "PING"
    assert msg.params == ("tmi",)


def test_ping_and_membership_lines() -> None:
    assert parse_line("PING :tmi.twitch.tv").params == ("tmi.twitch.tv",)
    join = parse_line(":alice!alice@alice.tmi.twitch.tv JOIN #chan")
    assert (join.command, join.nick, join.params) == ("JOIN", "alice", ("#chan",))
    # a JOIN resolves through the logins learnt from tagged lines; unknown: nothing
    assert to_events(join, NET, T) == []
    (ev,) = to_events(join, NET, T, {"alice": "42"})
    assert isinstance(ev, Join)
    assert ev.user_id == "42"
    part = parse_line(":alice!alice@alice.tmi.twitch.tv PART #chan")
    (ev,) = to_events(part, NET, T + 1, {"alice": "42"})
    assert isinstance(ev, Leave)
    assert ev.id != to_events(join, NET, T, {"alice": "42"})[0].id


def test_rename_keeps_user_id() -> None:
    a = parse_line("@user-id=7;display-name=Old :old!old@x PRIVMSG #c :hi")
    b = parse_line("@user-id=7;display-name=New :new!new@x PRIVMSG #c :hi")
    assert to_events(a, NET, T)[0].user_id == to_events(b, NET, T)[0].user_id == "7"
    assert learn_login(b) == ("new", "7")


def test_client_tags_count_as_server_tags() -> None:
    """Servers that relay only `+` tags (InspIRCd): `+user-id`, `+badges`, `+bits`."""
    raw = parse_line("@+user-id=9;+badges=moderator/1;+bits=5;+id=m1 :bob!b@h PRIVMSG #c :!rank")
    assert chat_line(raw) is None  # untrusted by default: anyone may send client tags
    msg = promote_client_tags(raw)
    line = chat_line(msg)
    assert line is not None
    assert (line.user_id, line.role, line.msg_id) == ("9", "moderator", "m1")
    assert [type(e) for e in to_events(msg, NET, T)] == [Chat, Cheer]


@pytest.mark.parametrize(
    ("tags", "role"),
    [
        ("badges=broadcaster/1,subscriber/0", "broadcaster"),
        ("badges=moderator/1", "moderator"),
        ("mod=1", "moderator"),
        ("badges=vip/1", "vip"),
        ("badges=subscriber/12", "subscriber"),
        ("badges=founder/0", "subscriber"),
        ("badges=", "everyone"),
    ],
)
def test_roles_from_badges(tags: str, role: str) -> None:
    assert role_of(parse_line(f"@{tags} :x!x@x PRIVMSG #c :hi").tags) == role


def _notice(tags: str) -> list[object]:
    line = f"@{tags};id=n1;user-id=100;display-name=Gifter;login=gifter :tmi USERNOTICE #chan :msg"
    return list(to_events(parse_line(line), NET, T))


def test_sub_and_resub() -> None:
    (sub,) = _notice("msg-id=sub;msg-param-sub-plan=Prime;msg-param-cumulative-months=1")
    assert isinstance(sub, Subscription)
    assert (sub.user_id, sub.tier, sub.months, sub.gifted) == ("100", 1, 1, False)
    (re,) = _notice("msg-id=resub;msg-param-sub-plan=2000;msg-param-cumulative-months=14")
    assert isinstance(re, Subscription)
    assert (re.tier, re.months) == (2, 14)


def test_subgift_single_and_within_a_mystery_gift() -> None:
    tags = (
        "msg-id=subgift;msg-param-sub-plan=3000;msg-param-recipient-id=200;"
        "msg-param-recipient-display-name=Lucky;msg-param-months=2"
    )
    sub, bomb = _notice(tags)
    assert isinstance(sub, Subscription)
    assert (sub.user_id, sub.user_name, sub.tier, sub.gifted) == ("200", "Lucky", 3, True)
    assert isinstance(bomb, GiftBomb)
    assert (bomb.user_id, bomb.count, bomb.id) == ("100", 1, "n1.gifter")
    (only,) = _notice(tags + ";msg-param-community-gift-id=555")
    assert isinstance(only, Subscription)


def test_mystery_gift_and_raid() -> None:
    (bomb,) = _notice("msg-id=submysterygift;msg-param-mass-gift-count=5;msg-param-sub-plan=1000")
    assert isinstance(bomb, GiftBomb)
    assert (bomb.count, bomb.tier) == (5, 1)
    (raid,) = _notice("msg-id=raid;msg-param-viewerCount=1234")
    assert isinstance(raid, Raid)
    assert (raid.viewers, raid.user_id) == (1234, "100")
    assert _notice("msg-id=ritual;msg-param-ritual-name=new_chatter") == []
    assert _notice("msg-id=raid;msg-param-viewerCount=lots")[0].viewers == 0  # type: ignore[attr-defined]


def test_clearchat_ban_is_a_leave_timeout_is_not() -> None:
    ban = parse_line("@room-id=1;target-user-id=55;tmi-sent-ts=1 :tmi CLEARCHAT #c :troll")
    (ev,) = to_events(ban, NET, T)
    assert isinstance(ev, Leave)
    assert ev.user_id == "55"
    timeout = parse_line("@ban-duration=600;target-user-id=55 :tmi CLEARCHAT #c :troll")
    assert to_events(timeout, NET, T) == []
    assert to_events(parse_line(":tmi CLEARCHAT #c"), NET, T) == []


@pytest.mark.parametrize(
    "line",
    ["", "   ", "@tagsonly", ":prefixonly", "@a=b :p", "\x00PING", "PRIVMSG\r\nJOIN", "!!! x"],
)
def test_malformed_lines_raise_parse_error(line: str) -> None:
    with pytest.raises(IrcParseError):
        parse_line(line)


def test_oversized_line_is_refused() -> None:
    with pytest.raises(IrcParseError):
        parse_line(b"PRIVMSG #c :" + b"x" * 10_000)


def test_lines_without_user_or_channel_give_no_events() -> None:
    for line in [
        ":x!x@x PRIVMSG #c :no user id",
        "@user-id=1 :x!x@x PRIVMSG bot :a private message",
        "@user-id=1 :x!x@x PRIVMSG #c",
        ":tmi 001 bot :Welcome",
        "@msg-id=sub :tmi USERNOTICE #c",
    ]:
        assert to_events(parse_line(line), NET, T) == []


tag_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(tag_text)
def test_escape_round_trips(value: str) -> None:
    assert unescape_tag(escape_tag(value)) == value
    assert " " not in escape_tag(value)
    assert ";" not in escape_tag(value)


wire_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)
"""What a line can carry: tag values escape CR/LF, but no line carries a NUL."""
word = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp"), blacklist_characters=":@"),
    min_size=1,
    max_size=12,
)


@given(
    tags=st.dictionaries(
        st.from_regex(r"\+?[a-z][a-z0-9\-]{0,10}", fullmatch=True), wire_text, max_size=6
    ),
    command=st.sampled_from(["PRIVMSG", "USERNOTICE", "JOIN", "PING", "001"]),
    middle=st.lists(word, max_size=3),
    trailing=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60),
)
def test_format_parse_round_trip(
    tags: dict[str, str], command: str, middle: list[str], trailing: str
) -> None:
    line = format_line(command, *middle, trailing, tags=tags, prefix="nick!u@h")
    msg = parse_line(line + "\r\n")
    assert msg.command == command
    assert msg.params == (*middle, trailing)
    assert msg.tags == tags
    assert msg.nick == "nick"


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_input_parses_or_raises_parse_error(raw: bytes | str) -> None:
    try:
        msg = parse_line(raw)
    except IrcParseError:
        return
    events = to_events(msg, NET, T, {"x": "1"})
    msgspec.msgpack.decode(encode_events(events))  # whatever comes out is a valid event


def test_chat_events_of_a_read_line_are_what_to_events_gives() -> None:
    raw = b"@user-id=7;id=m-9;display-name=Zed;bits=150 :zed!zed@h PRIVMSG #Chan :hi there"
    msg = parse_line(raw)
    line = chat_line(msg)
    assert line is not None
    assert chat_events(line, msg, "tw", 5.0) == to_events(msg, "tw", 5.0)


def test_names_replies_refresh_known_nicks_only() -> None:
    msg = parse_line(b":irc.local 353 rallybot = #Alpha :@mod +vip finn rallybot ghost")
    got = names_events(msg, "tw", 7.0, {"finn": "88", "mod": "9", "vip": "5"})
    assert [(e.user_id, e.channel, e.ts) for e in got] == [
        ("9", "alpha", 7.0), ("5", "alpha", 7.0), ("88", "alpha", 7.0),
    ]  # fmt: skip
    assert all(isinstance(e, Join) for e in got)
    assert len({e.id for e in got}) == 3
    assert names_events(parse_line(b":irc.local 366 rallybot #alpha :End"), "tw", 7.0, {}) == []
    assert to_events(msg, "tw", 7.0, {"finn": "88"}) == []  # only the connector asks for them
