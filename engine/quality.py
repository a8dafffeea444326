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

Two more signals come with the credits themselves:

- **account age**: the member's first credit on the network dates the account
  (`Presence.first_ts`; members stored before it was kept count as old). For
  `new_account_days` after it, watch credits of one tick from more than
  `new_account_max_channels` channels are withheld too, and the member is flagged
  `new_account` (until a tick within the limit): a fresh account sitting in many channels;
- **repeated chat**: a chat credit carries the digest of its normalised text (`chat_digest`:
  case, spacing, punctuation and symbols aside). A message whose digest is already among the
  member's last `chat_history` messages of the past `chat_repeat_window_s`
  `chat_repeats_max` times or more (in any channel) is a repeat: it earns no chat points, is
  no sign of life for the idle run, no chat day for the weekly bonus, and flags the member
  `repeated_chat` until a message that is not a repeat. The same line over and over, or a
  few lines in turn (low variety: at most chat_history / chat_repeats_max distinct lines),
  earns no more than chat_repeats_max times a line.

A watch credit earns its points times score/100 when the score is below `scale_below`,
and nothing below `withhold_below`. The defaults leave ordinary viewers untouched: a human
watching three streams at once, or twelve hours straight without a word, keeps every point.
"""

from __future__ import annotations

import functools
import hashlib
import struct

import msgspec

from engine.rules import QualityRules

MULTI_CHANNEL, IDLE, NEW_ACCOUNT, REPEATED_CHAT = 1, 2, 4, 8
REASONS = {
    MULTI_CHANNEL: "multi_channel", IDLE: "idle",
    NEW_ACCOUNT: "new_account", REPEATED_CHAT: "repeated_chat",
}  # fmt: skip
DAY_S = 86_400
NEVER = -1e18
REPEAT_RULE = "chat_repeat"
"""What a repeated chat counts as for the weekly bonus: not a chat (no chat day)."""
NOT_ACTIVITY = frozenset({"watch", "welcome", "streak"})
_REASONS_OF = [[name for bit, name in REASONS.items() if f & bit] for f in range(16)]
"""reasons() of every combination of the four flags."""
CHAT_RECORD = struct.Struct("<Qd")
"""One noted chat message in Presence.chat_log: its digest and its event time."""
_RECORD_TS = struct.Struct("<8xd")
_DIGEST = struct.Struct("<Q")


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
    first_ts: float = NEVER
    """Event time of the member's first credit (NEVER: before it was kept, an old account)."""
    chats: list[tuple[int, float]] = msgspec.field(default_factory=list)
    """The chat messages of a state stored before `chat_log`: (digest, ts), oldest first;
    moved into chat_log by the member's next chat."""
    repeats: int = 0
    """Repeated chat messages so far (they earned nothing)."""
    chat_log: bytes = b""
    """The last chat_history chat messages, oldest first: CHAT_RECORD (digest, ts) each. One
    bytes object, not a list of pairs: decoding and encoding a member's state (every credit
    of a batch does it) allocate nothing per message."""


class Flag(msgspec.Struct, frozen=True):
    """What the admin view shows of a flagged member (or its clearing: `reasons` empty)."""

    network: str
    user_id: str
    score: int
    reasons: list[str]
    idle_ticks: int
    withheld: int
    ts: float
    repeated_chats: int = 0
    account_age_days: int = -1
    """Whole days since the member's first credit; -1: unknown (an account older than that
    record)."""


def score(p: Presence, rules: QualityRules) -> int:
    if rules.idle_ticks <= 0 or p.idle <= rules.idle_ticks:
        return 100
    return 100 * rules.idle_ticks // p.idle


def reasons(flags: int) -> list[str]:
    return list(_REASONS_OF[flags & 15])


def age_days(p: Presence, ts: float) -> int:
    return -1 if p.first_ts <= NEVER else int((ts - p.first_ts) // DAY_S)


def channel_limit(p: Presence, ts: float, rules: QualityRules) -> tuple[int, bool]:
    """The most channels one watch tick at `ts` may pay (0: no limit), and whether the
    account is new then (its lower limit applies)."""
    limit, young = rules.max_channels_at_once, rules.new_account_max_channels
    if young and ts - p.first_ts < rules.new_account_days * DAY_S and (not limit or young < limit):
        return young, True
    return limit, False


def watch_points(p: Presence, ts: float, points: int, rules: QualityRules) -> tuple[int, int]:
    """The points a watch credit of tick `ts` earns, and the member's flags after it."""
    if ts != p.tick_ts:
        limit = channel_limit(p, p.tick_ts, rules)[0]
        if p.tick_channels <= limit or not limit:
            p.flags &= ~(MULTI_CHANNEL | NEW_ACCOUNT)  # the tick before was within the limit
        away = ts - p.tick_ts >= rules.left_after_s
        p.tick_ts, p.tick_channels = ts, 0
        p.idle = 1 if away else p.idle + 1  # a gap: the member left, and came back
    p.tick_channels += 1
    flags = p.flags & ~IDLE
    idle_ticks = rules.idle_ticks
    s = 100 if idle_ticks <= 0 or p.idle <= idle_ticks else 100 * idle_ticks // p.idle  # score()
    if s < 100:
        flags |= IDLE
    limit, young = channel_limit(p, ts, rules)
    if limit and p.tick_channels > limit:
        if young:
            flags |= NEW_ACCOUNT
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


_ASCII_NOT_ALNUM = str.maketrans(
    "", "", "".join(c for c in map(chr, range(128)) if not c.isalnum())
)
"""What chat_digest leaves out of an ASCII message (most chat), deleted by one translate."""


CHAT_DIGESTS_CACHED = 16_384
"""Distinct messages whose digest is remembered: chat repeats itself ("gg", "LUL", an
emote), and a remembered digest costs ~60 ns against ~1 us to normalise and hash."""


@functools.lru_cache(maxsize=CHAT_DIGESTS_CACHED)
def chat_digest(text: str) -> int:
    """A stable 63-bit digest of a chat message with case, spacing, punctuation and symbols
    aside ("Hello, World!" == "hello world"); 0 for a message with no letter or digit."""
    if text.isascii():  # the same result, faster: casefold() is lower() on ASCII
        norm = text.lower().translate(_ASCII_NOT_ALNUM)
    else:
        norm = "".join(ch for ch in text.casefold() if ch.isalnum())
    if not norm:
        return 0
    raw = hashlib.blake2b(norm.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big") >> 1 or 1


def repeated_chat(p: Presence, digest: int, ts: float, rules: QualityRules) -> bool:
    """Note a chat message (digest 0: none to compare) and say whether it is a repeat: its
    digest is among the member's last `chat_history` messages of the past
    `chat_repeat_window_s` `chat_repeats_max` times or more. Sets or clears the flag.

    Messages are noted in event-time order (a member's credits apply in that order): the
    ones past the window are the log's head, and the rest are within it."""
    if not digest or not rules.chat_repeats_max or not rules.chat_history:
        return False
    log = p.chat_log
    if p.chats:  # a state stored before chat_log: its messages move over, oldest first
        log = b"".join(CHAT_RECORD.pack(d, t) for d, t in p.chats) + log
        p.chats = []
    horizon = ts - rules.chat_repeat_window_s
    size, n = CHAT_RECORD.size, len(log)
    head = 0
    while head < n and _RECORD_TS.unpack_from(log, head)[0] <= horizon:
        head += size  # past the window: forgotten
    key = _DIGEST.pack(digest)
    seen, enough = 0, rules.chat_repeats_max
    at = log.find(key, head)
    while at >= 0:  # the digest's bytes count where a record starts, not inside a time
        if at % size == 0:
            seen += 1
            if seen == enough:
                break
            at = log.find(key, at + size)
        else:
            at = log.find(key, at + 1)
    keep = rules.chat_history - 1  # records kept beside the new one
    if (n - head) // size > keep:
        head = n - keep * size
    p.chat_log = (log[head:] if head else log) + CHAT_RECORD.pack(digest, ts)
    if seen >= enough:
        p.repeats += 1
        p.flags |= REPEATED_CHAT
        return True
    p.flags &= ~REPEATED_CHAT
    return False


flag_encoder = msgspec.msgpack.Encoder()
flag_decoder = msgspec.msgpack.Decoder(Flag)
