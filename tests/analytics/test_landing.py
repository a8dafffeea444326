"""Events and notices land beside the ledger exactly once, by stream offset."""

from __future__ import annotations

from pathlib import Path

import msgspec

from analytics.archive import LedgerArchive
from analytics.landing import FeedEntry
from engine import events as ev
from engine.member import TierChange
from engine.rewards import RewardEarned
from engine.voucher import VoucherScanned

INGEST = "t:ingest:0"
NOTICES = "t:notices"


def ingest(ms: int, events: list[ev.Event]) -> FeedEntry:
    return FeedEntry(INGEST, f"{ms}-0", {b"e": ev.encode_events(events)})


def notice(ms: int, kind: str, blob: bytes) -> FeedEntry:
    return FeedEntry(NOTICES, f"{ms}-0", {kind.encode(): blob})


def traffic() -> list[FeedEntry]:
    chat = ev.Chat(id="e1", network="n", channel="c", ts=100.0, user_id="a", text="hello")
    custom = ev.Custom(id="e2", network="n", channel="c", ts=101.0, user_id="b", action="quiz")
    viewers = ev.Viewers(id="e3", network="n", channel="c", ts=102.0,
                         viewers=[ev.Viewer(id="a"), ev.Viewer(id="b")])  # fmt: skip
    tier = msgspec.msgpack.encode(TierChange("n", "a", 0, 1, 100.5, 120))
    scan = msgspec.msgpack.encode(VoucherScanned(103.0, "n", "b", "code1", "b1", points=50))
    drawn = msgspec.json.encode({"network": "n", "raffle": "r1", "winners": ["a"], "ts": 104.0})
    rewards = msgspec.json.encode([RewardEarned("n", u, "welcome", 100, "c", f"n:{u}/welcome", 105.0)
                                   for u in "ab"])  # fmt: skip
    return [
        ingest(1, [chat, custom]),
        FeedEntry(INGEST, "2-0", {b"clock": b"105.0"}),
        ingest(3, [viewers]),
        notice(1, "tier", tier),
        notice(2, "voucher_scanned", scan),
        notice(3, "raffle_drawn", drawn),
        notice(4, "reward_earned", rewards),  # a member shard's: several in one entry
    ]


def test_events_and_notices_land_once(tmp_path: Path) -> None:
    archive = LedgerArchive(tmp_path / "a.duckdb")
    archive.create()
    feed = traffic()
    first = archive.append([], feed[:4])
    assert first.feed_rows == 4  # 3 events, 1 tier change
    again = archive.append([], feed)  # a replay of the first four, plus four notices
    assert again.feed_rows == 4
    assert archive.feed_offsets() == {INGEST: "3-0", NOTICES: "4-0"}
    assert archive.scalar("SELECT count(*) FROM events") == 3
    assert archive.scalar("SELECT string_agg(kind, ',' ORDER BY ts) FROM events") == (
        "chat,custom,viewers"
    )
    assert archive.scalar("SELECT action FROM events WHERE id = 'e2'") == "quiz"
    assert archive.scalar("SELECT viewers FROM events WHERE id = 'e3'") == 2
    assert archive.scalar("SELECT count(*) FROM events WHERE text IS NOT NULL") == 0
    assert archive.scalar("SELECT new_tier FROM tier_changes WHERE user_id = 'a'") == 1
    assert (
        archive.scalar(
            "SELECT json_extract_string(body, '$.code_id') FROM notices WHERE kind = 'voucher_scanned'"
        )
        == "code1"
    )
    assert archive.scalar("SELECT ts FROM notices WHERE kind = 'raffle_drawn'") == 104.0
    assert (
        archive.scalar(
            "SELECT string_agg(user_id, ',' ORDER BY user_id) FROM notices WHERE kind = 'reward_earned'"
        )
        == "a,b"
    )


def test_chat_text_lands_only_when_configured(tmp_path: Path) -> None:
    archive = LedgerArchive(tmp_path / "a.duckdb", chat_text=True)
    archive.create()
    archive.append([], traffic())
    assert archive.scalar("SELECT text FROM events WHERE kind = 'chat'") == "hello"


def test_an_entry_that_does_not_decode_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A poison ingest entry (the channel shards dead-letter it) must not stop the sink."""
    archive = LedgerArchive(tmp_path / "a.duckdb")
    archive.create()
    feed = traffic()
    poison = FeedEntry(INGEST, "2-5", {b"e": b"\xc1 not msgpack"})
    got = archive.append([], [*feed[:2], poison, *feed[2:]])
    assert got.feed_rows == 8  # 3 events, 5 notices (two of them in one entry)
    assert archive.feed_offsets()[INGEST] == "3-0"
    assert archive.scalar("SELECT count(*) FROM events") == 3
