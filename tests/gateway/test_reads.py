"""Reads: member, ledger, leaderboards and channel stats straight from committed Redis state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.keys import Keys
from actors.shards import ledger_encoder
from analytics.archive import LedgerArchive, LogEntry
from engine import timelog
from engine.channel import RATE_WINDOW_S, ChannelState, channel_encoder
from engine.ledger import Entry, member_account, treasury_account
from engine.member import DAY_S, MemberState, day_of, state_encoder
from gateway.analytics_cli import day_text
from gateway.redis_server import RedisServer

from .helpers import ADMIN_SECRET, DATA_DIR, get, make_settings, serve

NOW = 1_763_800_000.0  # 2025-11-22 08:26:40 UTC
TODAY = day_of(NOW)


async def _get(client: Any, path: str) -> tuple[int, Any]:
    """A read signed with the key that covers every network, at the test's clock."""
    return await get(client, path, key="admin", secret=ADMIN_SECRET, now=NOW)


def _read(redis_server: RedisServer, namespace: str, *paths: str) -> list[tuple[int, Any]]:
    async def go() -> list[tuple[int, Any]]:
        async with serve(make_settings(namespace), redis_server.url, clock=lambda: NOW) as client:
            return [await _get(client, p) for p in paths]

    return asyncio.run(go())


def _member(r: redis.Redis, keys: Keys, user: str, **fields: Any) -> None:
    r.hset(keys.mstate, f"demo:{user}", state_encoder.encode(MemberState(**fields)))


def test_member(redis_server: RedisServer, redis_client: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    _member(
        redis_client,
        keys,
        "u1",
        name="Ann",
        balance=700,
        lifetime=900,
        tier=1,
        streak=4,
        last_day=TODAY - 1,
    )
    _member(
        redis_client,
        keys,
        "u2",
        name="Bo",
        balance=5,
        lifetime=20_000,
        tier=3,
        streak=9,
        last_day=TODAY - 3,
    )
    (s1, m1), (s2, m2), (s3, m3), (s4, m4) = _read(
        redis_server,
        namespace,
        "/v1/members/u1?network=demo",
        "/v1/members/u2?network=demo",
        "/v1/members/ghost?network=demo",
        "/v1/members/u1",
    )
    assert s1 == 200
    bonus = m1.pop("weekly_bonus")  # a member with no credit noted: no feature either week
    assert bonus["bonus_points"] == 50
    assert bonus["this_week"]["features"] == bonus["last_week"]["features"] == 0
    assert bonus["this_week"]["week"] == bonus["last_week"]["week"] + 1
    assert m1.pop("referral") == {  # never referred, no reward received; the rules
        "referrer": None, "upline": None, "status": None, "rewards_received": 0,
        "points_received": 0, "capped": 0, "reward_points": 100, "second_level_pct": 25,
        "daily_cap": 10,
    }  # fmt: skip
    assert m1 == {
        "network": "demo",
        "user_id": "u1",
        "name": "Ann",
        "balance": 700,
        "lifetime_points": 900,
        "tier": "Silver",
        "tier_index": 1,
        "multiplier": 1.25,
        "next_tier": "Gold",
        "points_to_next_tier": 1100,
        "tier_threshold": 500,
        "next_tier_threshold": 2000,
        "streak": 4,
        "channels": {},
    }
    assert s2 == 200
    assert (m2["tier"], m2["next_tier"], m2["points_to_next_tier"], m2["streak"]) == (
        "Diamond",
        None,
        None,
        0,
    )
    assert (s3, m3["error"], m3["field"]) == (404, "not_found", "user_id")
    assert (s4, m4["error"], m4["field"]) == (400, "bad_request", "network")


def test_standings_add_the_state_and_the_frozen_projection(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """A member's points per channel: what its state keeps (MemberState.earned_in) plus
    what an older projector kept in mch:{nu}; ranked on each channel's all-time board."""
    keys = Keys(namespace)
    _member(redis_client, keys, "u1", name="Ann", earned_in={"c1": 30, "c2": 5, "a": 5})
    redis_client.zadd(keys.member_channels("demo:u1"), {"demo:c1": 10, "demo:c3": 7})
    redis_client.zadd(keys.lb_all("demo:c1"), {"u1": 40, "u2": 90})
    redis_client.zadd(keys.lb_all("demo:c3"), {"u1": 7})
    ((status, body),) = _read(redis_server, namespace, "/v1/members/u1?network=demo")
    assert status == 200, body
    assert list(body["channels"].items()) == [
        ("c1", {"points": 40, "rank": 2}),
        ("c3", {"points": 7, "rank": 1}),
        ("c2", {"points": 5, "rank": None}),  # ties: channel descending, as Redis ranks
        ("a", {"points": 5, "rank": None}),
    ]


def test_ledger_pages_newest_first(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    entries = [
        Entry(
            f"x{i}",
            NOW + i,
            "demo",
            treasury_account("demo"),
            member_account("demo", "u1"),
            10 + i,
            "chat",
            "c1",
        )
        for i in range(7)
    ]
    # explicit ids: two streams' "*" ids can coincide within a millisecond (then the order
    # between them is the stream name's, not the order of these two calls)
    redis_client.xadd(
        keys.ledgerlog(1), {"l": ledger_encoder.encode(entries[:3]), "n": 3}, id="1-0"
    )
    redis_client.xadd(
        keys.ledgerlog(0), {"l": ledger_encoder.encode(entries[3:]), "n": 4}, id="2-0"
    )
    (s1, p1), (s2, p2), (s3, p3), (s4, p4), (s5, p5) = _read(
        redis_server,
        namespace,
        "/v1/members/u1/ledger?network=demo&limit=3",
        "/v1/members/u1/ledger?network=demo&limit=3&cursor=3",
        "/v1/members/u1/ledger?network=demo&limit=3&cursor=6",
        "/v1/members/u1/ledger?network=demo&limit=501",
        "/v1/members/u1/ledger?network=demo&cursor=-1",
    )
    assert s1 == s2 == s3 == 200
    assert [e["id"] for e in p1["entries"]] == ["x6", "x5", "x4"]
    assert p1["next_cursor"] == 3
    assert p1["entries"][0] == {
        "id": "x6",
        "ts": NOW + 6,
        "rule": "chat",
        "amount": 16,
        "channel": "c1",
        "debit": "treasury:demo",
        "credit": "member:demo:u1",
    }
    assert [e["id"] for e in p2["entries"]] == ["x3", "x2", "x1"]
    assert p2["next_cursor"] == 6
    assert [e["id"] for e in p3["entries"]] == ["x0"]
    assert p3["next_cursor"] is None
    assert (s4, p4["field"]) == (400, "limit")
    assert (s5, p5["field"]) == (400, "cursor")


def test_ledger_pages_of_two_logs_with_one_entry_id_repeat_and_miss_nothing(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """Two shards' ledger logs can give their entries the same id (one millisecond): the
    order is still total (stream name breaks the tie), so pages never overlap or skip."""
    keys = Keys(namespace)
    acct = member_account("demo", "u1")
    entries = [Entry(f"y{i}", NOW, "demo", treasury_account("demo"), acct, 1, "chat", "c1")
               for i in range(7)]  # fmt: skip
    redis_client.xadd(
        keys.ledgerlog(0), {"l": ledger_encoder.encode(entries[:4]), "n": 4}, id="5-0"
    )
    redis_client.xadd(
        keys.ledgerlog(1), {"l": ledger_encoder.encode(entries[4:]), "n": 3}, id="5-0"
    )
    paths = [f"/v1/members/u1/ledger?network=demo&limit=2&cursor={c}" for c in range(0, 8, 2)]
    got = _read(redis_server, namespace, "/v1/members/u1/ledger?network=demo&limit=50", *paths)
    assert all(status == 200 for status, _ in got)
    whole = [e["id"] for e in got[0][1]["entries"]]
    assert whole == ["y6", "y5", "y4", "y3", "y2", "y1", "y0"]  # ledgerlog:1 sorts after :0
    assert [e["id"] for _, page in got[1:] for e in page["entries"]] == whole


def _earned(user: str, day: int, points: int, channel: str = "c1", network: str = "demo") -> Entry:
    return Entry(f"{network}:{user}/{day}/{channel}", day * DAY_S + 3_600, network,
                 treasury_account(network), member_account(network, user), points, "chat",
                 channel)  # fmt: skip


def test_leaderboards(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    """All time from the projector's zset; a day, week or month (ending today or on `day`)
    summed from the ledger of record: the archive plus the ledger log past its offsets,
    counting an entry both hold once, and only earnings (from a treasury) in the channel."""
    keys = Keys(namespace)
    nc = "demo:c1"
    for user, name in [("a", "Ann"), ("b", "Bo"), ("c", "Cy")]:
        _member(redis_client, keys, user, name=name)
    redis_client.zadd(keys.lb_all(nc), {"a": 50, "b": 300, "c": 120, "d": 5})
    archived = [_earned("a", TODAY - 3, 5), _earned("b", TODAY - 20, 100)]
    logged = [
        _earned("a", TODAY, 10), _earned("b", TODAY, 1), _earned("c", TODAY - 3, 40),
        _earned("d", TODAY - 31, 1_000), _earned("a", TODAY, 999, channel="c2"),
        _earned("a", TODAY, 999, network="other"),
        Entry("spend", NOW, "demo", member_account("demo", "c"), "store:demo", 500, "spend", "c1"),
    ]  # fmt: skip
    stream = keys.ledgerlog(0)
    archive = LedgerArchive(tmp_path / "analytics" / "ledger.duckdb")
    archive.create()
    held = [
        LogEntry(stream, f"{ms}-0", ledger_encoder.encode([e]))
        for ms, e in [(6, archived[1]), (7, archived[0])]
    ]
    assert archive.append(held).rows == 2  # 6-0 is trimmed from the log, 7-0 not yet
    redis_client.xadd(stream, {"l": ledger_encoder.encode(archived[:1]), "n": 1}, id="7-0")
    redis_client.xadd(stream, {"l": ledger_encoder.encode(logged[:3]), "n": 3}, id="8-0")
    redis_client.xadd(keys.ledgerlog(1), {"l": ledger_encoder.encode(logged[3:]), "n": 4})
    settings = make_settings(namespace).model_copy(update={"data_dir": tmp_path})
    q = "/v1/channels/c1/leaderboard?network=demo"
    paths = {
        "all": q, "all2": f"{q}&period=all&limit=2", "day": f"{q}&period=day",
        "week": f"{q}&period=week", "month": f"{q}&period=month&limit=2",
        "bad": f"{q}&period=year", "then": f"{q}&period=day&day={day_text(TODAY - 3)}",
        "week_then": f"{q}&period=week&day={day_text(TODAY - 20)}",
        "bad_day": f"{q}&period=day&day=2025-13-01", "all_day": f"{q}&day={day_text(TODAY)}",
    }  # fmt: skip

    async def go() -> list[tuple[int, Any]]:
        async with serve(settings, redis_server.url, clock=lambda: NOW) as client:
            return [await _get(client, p) for p in paths.values()]

    got = dict(zip(paths, asyncio.run(go()), strict=True))

    def board(key: str) -> list[tuple[int, str, str, int]]:
        status, body = got[key]
        assert status == 200, body
        return [(e["rank"], e["user_id"], e["name"], e["points"]) for e in body["entries"]]

    assert board("all") == [
        (1, "b", "Bo", 300),
        (2, "c", "Cy", 120),
        (3, "a", "Ann", 50),
        (4, "d", "", 5),
    ]
    assert got["all"][1]["period"] == "all"
    assert got["all"][1]["channel"] == "c1"
    assert board("all2") == [(1, "b", "Bo", 300), (2, "c", "Cy", 120)]
    assert board("day") == [(1, "a", "Ann", 10), (2, "b", "Bo", 1)]
    assert board("week") == [(1, "c", "Cy", 40), (2, "a", "Ann", 15), (3, "b", "Bo", 1)]
    assert board("month") == [(1, "b", "Bo", 101), (2, "c", "Cy", 40)]
    assert got["month"][1]["period"] == "month"
    assert (got["week"][1]["from"], got["week"][1]["to"]) == ("2025-11-16", "2025-11-22")
    assert board("then") == [(1, "c", "Cy", 40), (2, "a", "Ann", 5)]
    assert board("week_then") == [(1, "b", "Bo", 100)]
    assert (got["bad"][0], got["bad"][1]["field"]) == (400, "period")
    assert (got["bad_day"][0], got["bad_day"][1]["field"]) == (400, "day")
    assert (got["all_day"][0], got["all_day"][1]["field"]) == (400, "day")


@pytest.mark.parametrize("layout", ["log", "legacy zset"])
def test_channel_stats(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, layout: str
) -> None:
    keys = Keys(namespace)
    nc = "demo:c1"
    sec = int(NOW)
    state = ChannelState(live=True, clock=NOW, events=1234)
    for i in range(RATE_WINDOW_S):
        state.rate_secs[(sec - i) % RATE_WINDOW_S] = sec - i
        state.rate_counts[(sec - i) % RATE_WINDOW_S] = 5
    redis_client.hset(keys.cstate, nc, channel_encoder.encode(state))
    redis_client.hset(keys.presence(nc), mapping={"a": "Ann", "b": "Bo", "c": "Cy"})
    chats = {"a": NOW - 10, "b": NOW - 299, "c": NOW - 301}
    if layout == "log":  # b's older chat is replaced by a later frame; d goes with the horizon
        redis_client.set(keys.chat_log(nc), timelog.frame({"b": NOW - 999, "d": NOW - 998})
                         + timelog.frame(chats, below=NOW - 400))  # fmt: skip
    else:  # stored before the log
        redis_client.zadd(keys.chatters(nc), chats)
    (s1, b1), (s2, b2), (s3, b3) = _read(
        redis_server,
        namespace,
        "/v1/channels/c1/stats?network=demo",
        "/v1/channels/nope/stats?network=demo",
        "/v1/channels/bad%20id/stats?network=demo",
    )
    assert s1 == 200
    assert b1 == {
        "network": "demo",
        "channel": "c1",
        "live": True,
        "viewers_present": 3,
        "chatters_5m": 2,
        "events_per_s": 5.0,
        "events_total": 1234,
    }
    assert (s2, b2["error"]) == (404, "not_found")
    assert (s3, b3["field"]) == (400, "channel")


@pytest.mark.parametrize("network", ["", "demo"])
def test_the_only_network_is_the_default(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, network: str
) -> None:
    from gateway.settings import settings_from_dict

    admin = {"key": "admin", "secrets": [ADMIN_SECRET], "networks": ["*"]}
    raw = {"namespace": namespace, "networks": {"demo": {}}, "api_keys": [admin],
           "data_dir": str(DATA_DIR)}  # fmt: skip
    settings = settings_from_dict(raw, {})
    _member(redis_client, Keys(namespace), "u1", name="Ann")

    async def go() -> tuple[int, Any]:
        async with serve(settings, redis_server.url, clock=lambda: NOW) as client:
            query = f"?network={network}" if network else ""
            return await _get(client, f"/v1/members/u1{query}")

    status, body = asyncio.run(go())
    assert (status, body["name"]) == (200, "Ann")


def test_an_unexpected_error_is_a_json_500_not_a_traceback(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    redis_client.hset(Keys(namespace).mstate, "demo:broken", b"\xc1 not msgpack")
    [(status, body)] = _read(redis_server, namespace, "/v1/members/broken?network=demo")
    assert status == 500
    assert body == {
        "error": "internal",
        "message": "internal server error",
        "field": None,
        "index": None,
    }
