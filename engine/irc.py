"""Twitch-style IRC: a pure line parser (IRCv3 tags), and the mapping of lines to events.

`parse_line` turns one protocol line into an `IrcMessage` (tags unescaped, prefix, command,
params) or raises `IrcParseError`. `to_events` maps a parsed message to the project's wire
events, keyed on the platform user id from the tags (never the display name, so renames
keep balances; client `+` tags count only through `promote_client_tags`): PRIVMSG -> Chat (+ Cheer when it carries bits), JOIN/PART -> Join/Leave,
USERNOTICE sub/resub/subgift/submysterygift/raid -> Subscription/GiftBomb/Raid, CLEARCHAT of
a permanent ban -> Leave. JOIN and PART carry no tags: the login is resolved to a user id
through a map the connector learns from tagged lines; an unknown login yields nothing.

No I/O, no clock: the receipt time is an argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from engine.events import (
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    Chat,
    Cheer,
    Event,
    GiftBomb,
    Join,
    Leave,
    Raid,
    Subscription,
)

MAX_LINE_BYTES = 8_191 + 512
"""IRCv3: 8191 bytes of tags plus 512 of message, CRLF included."""
MAX_PARAMS = 15

Role = Literal["everyone", "subscriber", "vip", "moderator", "broadcaster"]
ROLES: tuple[Role, ...] = ("everyone", "subscriber", "vip", "moderator", "broadcaster")
"""Roles in increasing order of rank: a command's minimum role compares by index."""

_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_ID_OK = re.compile(r"[^A-Za-z0-9_.:\-]")
_PLAN_TIER = {"1000": 1, "2000": 2, "3000": 3, "prime": 1}


class IrcError(Exception):
    """Root of the IRC errors."""


class IrcParseError(IrcError):
    """A line that is not an IRC message."""


class IrcMessage(msgspec.Struct, frozen=True):
    """One parsed line: tags (unescaped), prefix, command (upper case) and params."""

    command: str
    params: tuple[str, ...] = ()
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        """The nick (login) of the prefix `nick!user@host`, or the server name."""
        return self.prefix.split("!", 1)[0].split("@", 1)[0]

    @property
    def trailing(self) -> str:
        return self.params[-1] if self.params else ""


def unescape_tag(value: str) -> str:
    """IRCv3 tag value unescaping; a lone trailing backslash is dropped."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            if i + 1 < n:
                nxt = value[i + 1]
                out.append(_UNESCAPE.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def escape_tag(value: str) -> str:
    return "".join(_ESCAPE.get(c, c) for c in value)


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = unescape_tag(value)
    return tags


def parse_line(line: str | bytes) -> IrcMessage:
    """Parse one line (CRLF optional); raise IrcParseError when it is not a message."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise IrcParseError("line too long")
        line = line.decode("utf-8", "replace")
    elif len(line) > MAX_LINE_BYTES:
        raise IrcParseError("line too long")
    line = line.rstrip("\r\n")
    if "\r" in line or "\n" in line or "\0" in line:
        raise IrcParseError("control character in line")
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise IrcParseError("tags without a command")
        tags = _parse_tags(raw)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise IrcParseError("prefix without a command")
        rest = rest.lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    if not sep and head.startswith(":"):
        head, trailing, sep = "", head[1:], " :"
    words = head.split()
    if not words:
        raise IrcParseError("no command")
    command = words[0].upper()
    if not command.isalnum():
        raise IrcParseError("bad command")
    params = words[1:]
    if sep:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        raise IrcParseError("too many params")
    return IrcMessage(command=command, params=tuple(params), tags=tags, prefix=prefix)


def format_line(
    command: str,
    *params: str,
    tags: Mapping[str, str] | None = None,
    prefix: str = "",
) -> str:
    """Build one line (without CRLF); the last param is sent as trailing."""
    parts: list[str] = []
    if tags:
        parts.append("@" + ";".join(f"{k}={escape_tag(v)}" if v else k for k, v in tags.items()))
    if prefix:
        parts.append(":" + prefix)
    parts.append(command)
    if params:
        parts.extend(params[:-1])
        parts.append(":" + params[-1])
    return " ".join(parts)


def badges(tags: Mapping[str, str]) -> dict[str, str]:
    """`badges=broadcaster/1,subscriber/12` as a dict name -> version."""
    out: dict[str, str] = {}
    for item in tags.get("badges", "").split(","):
        if item:
            name, _, version = item.partition("/")
            out[name] = version
    return out


def role_of(tags: Mapping[str, str]) -> Role:
    """The highest role the tags grant."""
    b = badges(tags)
    if "broadcaster" in b:
        return "broadcaster"
    if "moderator" in b or _tag(tags, "mod") == "1":
        return "moderator"
    if "vip" in b or _tag(tags, "vip") == "1":
        return "vip"
    if "subscriber" in b or "founder" in b or _tag(tags, "subscriber") == "1":
        return "subscriber"
    return "everyone"


def _tag(tags: Mapping[str, str], key: str) -> str:
    return tags.get(key, "")


def promote_client_tags(msg: IrcMessage) -> IrcMessage:
    """Read client tags `+key` as the server's `key` where the server sent none.

    Only for servers that relay client tags alone (InspIRCd in tests, a trusted relay):
    on a public server any client may send `+badges=broadcaster/1`."""
    extra = {k[1:]: v for k, v in msg.tags.items() if k.startswith("+") and k[1:] not in msg.tags}
    if not extra:
        return msg
    return msgspec.structs.replace(msg, tags={**msg.tags, **extra})


def _int(value: str, default: int, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        return default
    return min(max(n, lo), hi)


def channel_of(param: str) -> str:
    """`#Name` -> `name`; the event channel id."""
    return _ID_OK.sub("_", param.lstrip("#").lower())[:MAX_ID_LEN]


def _safe_id(raw: str) -> str:
    return _ID_OK.sub("_", raw)[:MAX_ID_LEN]


class ChatLine(msgspec.Struct, frozen=True):
    """A PRIVMSG seen by the bot: who said what, where, with which role."""

    channel: str
    user_id: str
    login: str
    display_name: str
    role: Role
    text: str
    msg_id: str


def chat_line(msg: IrcMessage) -> ChatLine | None:
    """The PRIVMSG as a chat line, when it names a channel and a user id."""
    if msg.command != "PRIVMSG" or len(msg.params) < 2 or not msg.params[0].startswith("#"):
        return None
    user_id = _safe_id(_tag(msg.tags, "user-id"))
    if not user_id:
        return None
    login = msg.nick.lower()
    return ChatLine(
        channel=channel_of(msg.params[0]),
        user_id=user_id,
        login=login,
        display_name=(_tag(msg.tags, "display-name") or msg.nick)[:MAX_NAME_LEN],
        role=role_of(msg.tags),
        text=msg.params[1][:MAX_TEXT_LEN],
        msg_id=_safe_id(_tag(msg.tags, "id")),
    )


def learn_login(msg: IrcMessage) -> tuple[str, str] | None:
    """(login, user id) when a tagged line reveals both; the connector keeps the map."""
    user_id = _safe_id(_tag(msg.tags, "user-id"))
    login = _tag(msg.tags, "login") or msg.nick
    if user_id and login and "." not in login:
        return login.lower(), user_id
    return None


def _fallback_id(kind: str, channel: str, who: str, ts: float) -> str:
    return _safe_id(f"irc.{kind}.{channel}.{who}.{int(ts * 1000)}")


def to_events(
    msg: IrcMessage,
    network: str,
    ts: float,
    logins: Mapping[str, str] | None = None,
) -> list[Event]:
    """The events a message stands for (often none). `ts` is its receipt time."""
    if not msg.params or not msg.params[0].startswith("#"):
        return []
    channel = channel_of(msg.params[0])
    if not channel:
        return []
    cmd = msg.command
    if cmd == "PRIVMSG":
        return _privmsg(msg, network, channel, ts)
    if cmd in ("JOIN", "PART"):
        login = msg.nick.lower()
        user_id = (logins or {}).get(login, "")
        if not user_id:
            return []
        kind = Join if cmd == "JOIN" else Leave
        eid = _fallback_id(cmd.lower(), channel, login, ts)
        name = login[:MAX_NAME_LEN]
        return [
            kind(id=eid, network=network, channel=channel, ts=ts, user_id=user_id, user_name=name)
        ]
    if cmd == "USERNOTICE":
        return _usernotice(msg, network, channel, ts)
    if cmd == "CLEARCHAT":
        target = _safe_id(_tag(msg.tags, "target-user-id"))
        if target and not _tag(msg.tags, "ban-duration"):
            eid = _safe_id(_tag(msg.tags, "id")) or _fallback_id("ban", channel, target, ts)
            return [Leave(id=eid, network=network, channel=channel, ts=ts, user_id=target)]
    return []


NAMES_PREFIXES = "~&@%+"
"""Channel-status prefixes a NAMES reply (353) puts before a nick."""


def names_events(
    msg: IrcMessage, network: str, ts: float, logins: Mapping[str, str]
) -> list[Event]:
    """A NAMES reply (353 `bot = #channel :nick nick ...`) as `join` events of the nicks whose
    user id is known: who is still in the channel, to refresh their presence (a lurker stays
    present past the silence timeout). Never a full snapshot: a server may list only some."""
    if msg.command != "353" or len(msg.params) < 2:
        return []
    channel = channel_of(msg.params[-2])
    if not channel or not msg.params[-2].startswith("#"):
        return []
    out: list[Event] = []
    for nick in msg.params[-1].split():
        login = nick.lstrip(NAMES_PREFIXES).split("!", 1)[0].lower()
        user_id = logins.get(login, "")
        if user_id:
            eid = _fallback_id("names", channel, login, ts)
            out.append(Join(id=eid, network=network, channel=channel, ts=ts, user_id=user_id,
                            user_name=login[:MAX_NAME_LEN]))  # fmt: skip
    return out


def _privmsg(msg: IrcMessage, network: str, channel: str, ts: float) -> list[Event]:
    line = chat_line(msg)
    return [] if line is None else chat_events(line, msg, network, ts)


def chat_events(line: ChatLine, msg: IrcMessage, network: str, ts: float) -> list[Event]:
    """The events of a PRIVMSG already read as `line` (what `to_events` gives for it)."""
    channel = line.channel
    eid = line.msg_id or _fallback_id("chat", channel, line.user_id, ts)
    uid, name = line.user_id, line.display_name
    chat = Chat(
        id=eid, network=network, channel=channel, ts=ts, user_id=uid, user_name=name, text=line.text
    )
    events: list[Event] = [chat]
    bits = _int(_tag(msg.tags, "bits"), 0, 0, 100_000_000)
    if bits > 0:
        cid = _safe_id(eid + ".bits")
        events.append(
            Cheer(
                id=cid,
                network=network,
                channel=channel,
                ts=ts,
                user_id=uid,
                user_name=name,
                amount=bits,
            )
        )
    return events


def _usernotice(msg: IrcMessage, network: str, channel: str, ts: float) -> list[Event]:
    tags = msg.tags
    kind = _tag(tags, "msg-id")
    user_id = _safe_id(_tag(tags, "user-id"))
    name = (_tag(tags, "display-name") or _tag(tags, "login"))[:MAX_NAME_LEN]
    eid = _safe_id(_tag(tags, "id")) or _fallback_id(kind or "notice", channel, user_id, ts)
    if not user_id:
        return []
    net, ch = network, channel
    tier = _PLAN_TIER.get(_tag(tags, "msg-param-sub-plan").lower(), 1)
    if kind in ("sub", "resub"):
        months = _int(_tag(tags, "msg-param-cumulative-months"), 1, 1, 1_000)
        sub = Subscription(
            id=eid,
            user_id=user_id,
            user_name=name,
            tier=tier,
            months=months,
            network=net,
            channel=ch,
            ts=ts,
        )
        return [sub]
    if kind == "subgift":
        recipient = _safe_id(_tag(tags, "msg-param-recipient-id"))
        rname = (
            _tag(tags, "msg-param-recipient-display-name")
            or _tag(tags, "msg-param-recipient-user-name")
        )[:MAX_NAME_LEN]
        months = _int(_tag(tags, "msg-param-months"), 1, 1, 1_000)
        events: list[Event] = []
        if recipient:
            gift = Subscription(
                id=eid,
                user_id=recipient,
                user_name=rname,
                tier=tier,
                months=months,
                gifted=True,
                network=net,
                channel=ch,
                ts=ts,
            )
            events.append(gift)
        if not _tag(tags, "msg-param-community-gift-id"):
            # a single gift: its gifter is credited as for a one-sub bomb; gifts that are
            # part of a submysterygift were credited by that notice already
            bomb = GiftBomb(
                id=_safe_id(eid + ".gifter"),
                user_id=user_id,
                user_name=name,
                count=1,
                tier=tier,
                network=net,
                channel=ch,
                ts=ts,
            )
            events.append(bomb)
        return events
    if kind == "submysterygift":
        count = _int(_tag(tags, "msg-param-mass-gift-count"), 1, 1, 10_000)
        return [
            GiftBomb(
                id=eid,
                user_id=user_id,
                user_name=name,
                count=count,
                tier=tier,
                network=net,
                channel=ch,
                ts=ts,
            )
        ]
    if kind == "raid":
        viewers = _int(_tag(tags, "msg-param-viewerCount"), 0, 0, 1_000_000_000)
        return [
            Raid(
                id=eid,
                user_id=user_id,
                user_name=name,
                viewers=viewers,
                network=net,
                channel=ch,
                ts=ts,
            )
        ]
    return []
