"""What ingested events give the raffles: keyword entries and subscribers (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.events import Chat, Follow, Subscription, encode_events
from engine.raffle_feed import SUB_NEEDLE, SUBSCRIBER_S, keyword_hits, subscribers


def chat(i: str, channel: str, text: str, ts: float = 100.0, user: str = "a") -> Chat:
    return Chat(id=i, network="n", channel=channel, ts=ts, user_id=user, text=text)


def test_a_chat_enters_when_its_first_word_is_the_keyword_after_the_open() -> None:
    wanted = {"n:c": [("kw", "!join", 100), ("other", "!go", 50)]}
    events = [
        chat("1", "c", "!join please"),
        chat("2", "c", "  !join"),  # leading spaces: still the first word
        chat("3", "c", "I will !join"),  # not the first word
        chat("4", "c", "!JOIN"),  # exactly the keyword
        chat("5", "d", "!join"),  # another channel
        chat("6", "c", "!join", ts=99.9),  # before the open
        chat("7", "c", ""),  # no words
        chat("8", "c", "!go now"),  # the channel's other raffle
        Follow(id="9", network="n", channel="c", ts=101.0, user_id="b"),
    ]
    assert [(ev.id, rid) for ev, rid in keyword_hits(events, wanted)] == [
        ("1", "kw"), ("2", "kw"), ("8", "other"),
    ]  # fmt: skip
    assert keyword_hits(events, {}) == []


def test_the_latest_subscription_counts() -> None:
    until: dict[tuple[str, str], int] = {}
    subs = [
        Subscription(id="s1", network="n", channel="c", ts=200.5, user_id="a"),
        Subscription(id="s2", network="n", channel="c", ts=100.0, user_id="a"),  # older
        Subscription(id="s3", network="m", channel="c", ts=150.0, user_id="a"),  # other network
        Follow(id="f", network="n", channel="c", ts=300.0, user_id="b"),
    ]
    subscribers(subs, until)
    assert until == {("n", "a"): 200 + SUBSCRIBER_S, ("m", "a"): 150 + SUBSCRIBER_S}


@given(st.lists(st.sampled_from(["sub", "follow", "chat"]), max_size=20))
def test_the_needle_finds_every_entry_holding_a_sub(kinds: list[str]) -> None:
    """The channel shard looks for subscriptions only in entries holding SUB_NEEDLE."""
    make = {"sub": Subscription, "follow": Follow}
    events = [
        chat(str(i), "c", "sub kind") if k == "chat"
        else make[k](id=str(i), network="n", channel="c", ts=1.0, user_id="u")
        for i, k in enumerate(kinds)
    ]  # fmt: skip
    assert (SUB_NEEDLE in encode_events(events)) == ("sub" in kinds)
