"""What the ingested events give the raffles: keyword entries and subscribers.

The channel shard reads every accepted event anyway; it asks these two functions, as a
batch is admitted, which of its fresh chats enter an open keyword raffle and who
subscribed, and appends the answers in the commit that moves its offset (actors/shards.py),
so each is given exactly once.

- A chat enters a keyword raffle open in its channel when its first word is the keyword
  (exactly) and it is dated at or after the open.
- A `sub` event makes its member a subscriber for SUBSCRIBER_S from the event's time
  (luck_subscriber_pct): the latest such time counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.events import Chat, Event, Subscription

SUBSCRIBER_S = 31 * 86_400
"""A `sub` event makes its member a subscriber for this long (luck_subscriber_pct)."""
SUB_NEEDLE = b"\xa4kind\xa3sub"
"""How a `sub` event's tag looks in an ingest entry (msgpack): entries without it hold none."""

OpenKeywords = dict[str, list[tuple[str, str, int]]]
"""`network:channel` -> [(raffle id, keyword, opened at, unix seconds)] of the keyword raffles
open there, as the raffle actor registers them (`rfkw`)."""


def subscribers(events: Iterable[Event], until: dict[tuple[str, str], int]) -> None:
    """Note in `until` ((network, user) -> unix seconds) how long each `sub` event's member
    counts as a subscriber: the latest end wins."""
    for ev in events:
        if type(ev) is Subscription:
            k = (ev.network, ev.user_id)
            end = int(ev.ts) + SUBSCRIBER_S
            if end > until.get(k, 0):
                until[k] = end


def keyword_hits(events: Iterable[Event], wanted: OpenKeywords) -> list[tuple[Chat, str]]:
    """(chat, raffle id) for each chat that enters an open keyword raffle, in order."""
    hits: list[tuple[Chat, str]] = []
    if not wanted:
        return hits
    for ev in events:
        if type(ev) is not Chat:
            continue
        open_here = wanted.get(f"{ev.network}:{ev.channel}")
        if not open_here:
            continue
        words = ev.text.split(maxsplit=1)
        if not words:
            continue
        for rid, keyword, opened in open_here:
            if words[0] == keyword and ev.ts >= opened:
                hits.append((ev, rid))
    return hits
