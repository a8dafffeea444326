"""GET /v1/feed through the real gateway, real Redis and real shards: a network's feed sees
tier changes (msgpack, from the member shards) and store redemptions (JSON, from the store);
a member's feed sees only its own notices; a client resuming with ?after= misses nothing and
gets nothing twice; a client further behind than [feed] backlog_max is told of the gap; the
gauge counts connected clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from aiohttp import ClientWebSocketResponse, WSMsgType

from actors.client import RallyClient
from actors.keys import Keys
from actors.notices import decode_notices
from gateway.redis_server import RedisServer
from gateway.routes.feed import FEED
from gateway.signing import bearer, signed_headers

from .helpers import ADMIN_SECRET, serve
from .test_store import NET, Api, give, store_settings

WAIT_S = 60.0


@pytest.fixture
def shards(ray_cluster: None, redis_server: RedisServer, namespace: str) -> Iterator[RallyClient]:
    settings = store_settings(namespace)
    cfg = msgspec.structs.replace(settings.runtime(redis_server.url), archive_path="",
                                  watch_clock_interval_s=0.0, streak_rollover=False)  # fmt: skip
    rally = RallyClient(cfg).start(scheduler=False)
    yield rally
    rally.stop()


def feed_settings(namespace: str, **feed: Any) -> Any:
    base = store_settings(namespace)
    return base.model_copy(update={"feed": base.feed.model_copy(update=feed)})


async def next_notice(ws: ClientWebSocketResponse) -> dict[str, Any]:
    """The next notice that is not a reward (engine/rewards.py: a welcome, a custom action's
    points; this test follows tier changes and redemptions)."""
    while True:
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type is WSMsgType.TEXT, msg
        notice: dict[str, Any] = json.loads(msg.data)
        if notice.get("kind") != "reward_earned":
            return notice


def admin_feed(target: str) -> dict[str, str]:
    return signed_headers("admin", ADMIN_SECRET, target=target, method="GET")


def test_feed_live_member_filter_resume_gap_and_gauge(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = feed_settings(namespace, backlog_max=5)

    async def body() -> None:
        async with serve(settings, redis_server.url) as client:
            api = Api(client)
            target = f"/v1/feed?network={NET}"
            net_ws = await client.ws_connect(target, headers=admin_feed(target))
            tokens = api.tokens
            assert tokens is not None
            bob_ws = await client.ws_connect(
                "/v1/feed", headers=bearer(tokens.issue(NET, "bob")[0])
            )
            metrics = await (await client.get("/metrics")).text()
            assert "rally_feed_clients 2.0" in metrics

            # alice earns past the 500 threshold (a tier change from her member shard) ...
            await asyncio.to_thread(give, shards, redis_client, {"alice": 900})
            tier = await next_notice(net_ws)
            assert (tier["kind"], tier["user_id"], tier["new_tier"]) == ("tier_changed", "alice", 1)
            # ... and redeems a store item (JSON, from the store)
            assert (await api.put_item("mug", name="Mug", cost=300, stock=5))[0] == 201
            status, red = await api.redeem("alice", "mug", idem="r1")
            assert status == 201, red
            redeemed = await next_notice(net_ws)
            assert (redeemed["kind"], redeemed["user_id"], redeemed["item_name"]) == (
                "item_redeemed", "alice", "Mug")  # fmt: skip
            assert redeemed["cost"] == 300

            # bob's feed saw none of alice's notices; bob's own redemption reaches him
            await asyncio.to_thread(give, shards, redis_client, {"bob": 250})
            assert (await api.redeem("bob", "mug", idem="r2"))[0] == 201
            seen = await next_notice(bob_ws)
            assert (seen["kind"], seen["user_id"]) == ("item_redeemed", "bob")
            net_ids = [tier["id"], redeemed["id"], (await next_notice(net_ws))["id"]]

            # resume after the first: the two after it, once each, then live ones
            target = f"/v1/feed?network={NET}&after={net_ids[0]}"
            again = await client.ws_connect(target, headers=admin_feed(target))
            assert [(await next_notice(again))["id"] for _ in range(2)] == net_ids[1:]
            assert (await api.redeem("alice", "mug", idem="r3"))[0] == 201
            live = await next_notice(again)
            assert live["kind"] == "item_redeemed"
            assert live["id"] not in net_ids

            # further behind than backlog_max (5; six entries, the rewards batched): told of the gap
            target = f"/v1/feed?network={NET}&after=0-0"
            behind = await client.ws_connect(target, headers=admin_feed(target))
            assert (await next_notice(behind))["gap"] is True
            await again.close()
            await behind.close()
            await bob_ws.close()
            await net_ws.close()

            # bad input names its field; a member token cannot read another network's feed
            for bad in ("nope", "1-0/x", "1-0/"):
                target = f"/v1/feed?network={NET}&after={bad}"
                resp = await client.get(target, headers=admin_feed(target))
                assert (resp.status, (await resp.json())["field"]) == (400, "after"), bad
            resp = await client.get("/v1/feed")
            assert resp.status == 401

    asyncio.run(body())


def test_decode_notices_every_writer() -> None:
    """Each writer's encoding decodes into the same flat shape; a JSON array (the member
    shards' rewards) into one notice per item, each with an id of its own."""
    from engine.member import TierChange
    from engine.rewards import RewardEarned
    from engine.voucher import VoucherScanned

    enc = msgspec.msgpack.Encoder()
    (tier,) = decode_notices(b"1-0", {b"tier": enc.encode(TierChange("n", "u", 0, 1, 5.0, 600))})
    assert (tier.kind, tier.user_ids, tier.body["new_tier"]) == ("tier_changed", ("u",), 1)
    assert (tier.id, tier.entry_id, tier.body["id"]) == ("1-0", "1-0", "1-0")
    scan = VoucherScanned(ts=1.0, network="n", user_id="v", code_id="c", batch="b", points=5)
    (voucher,) = decode_notices(b"2-0", {b"voucher_scanned": enc.encode(scan)})
    assert (voucher.kind, voucher.body["points"]) == ("voucher_scanned", 5)
    drawn = {"network": "n", "raffle": "r", "winners": ["a", "b"], "ts": 1}
    (raffle,) = decode_notices(b"3-0", {b"raffle_drawn": json.dumps(drawn).encode()})
    assert raffle.user_ids == ("a", "b")
    assert decode_notices(b"4-0", {b"tier": b"junk"}) == []
    earned = [RewardEarned("n", u, "welcome", 100, "c", f"n:{u}/welcome", 5.0) for u in "ab"]
    got = decode_notices(b"5-0", {b"reward_earned": msgspec.json.encode(earned)})
    assert [(n.id, n.entry_id, n.kind, n.user_ids, n.body["id"], n.body["points"]) for n in got] == [
        ("5-0/0", "5-0", "reward_earned", ("a",), "5-0/0", 100),
        ("5-0/1", "5-0", "reward_earned", ("b",), "5-0/1", 100),
    ]  # fmt: skip
    assert Keys("x").notices == "x:notices"


def test_a_slow_client_overflows_and_only_its_network_is_queued() -> None:
    """publish() queues at most client_queue_max notices per client, then marks it overflowed
    (its sender closes it with 4008 and it resumes with ?after=); other networks' notices
    never reach it."""
    from actors.notices import Notice
    from gateway.routes.feed import Client, FeedHub

    hub = FeedHub(None, Keys("x"), backlog_max=10, max_clients=2, client_queue_max=2, block_ms=10)  # type: ignore[arg-type]
    slow = Client("n", None, asyncio.Queue())
    member = Client("n", "bob", asyncio.Queue())
    hub.add(slow)
    hub.add(member)
    with pytest.raises(Exception, match="at most 2 feed clients"):
        hub.add(Client("n", None, asyncio.Queue()))
    for i in range(3):
        nid = f"{i + 1}-0"
        hub.publish(Notice(nid, nid, "item_redeemed", "n", ("alice",), {"id": nid}))
    hub.publish(Notice("9-0", "9-0", "item_redeemed", "other", ("bob",), {"id": "9-0"}))
    hub.publish(Notice("10-0", "10-0", "raffle_drawn", "n", ("carol",), {"id": "10-0"}))
    assert slow.overflowed
    assert slow.queue.qsize() == 3  # two notices, then the sentinel
    assert member.queue.qsize() == 1  # only the raffle notice of its network


async def earned_until(
    ws: ClientWebSocketResponse, kind: str, points: int
) -> tuple[list[dict[str, Any]], int]:
    """Frames of `kind` until their points add up to `points` (never more): (frames, sum)."""
    got: list[dict[str, Any]] = []
    total = 0
    while total < points:
        frame = await next_notice(ws)
        if frame.get("kind") != kind:
            continue
        got.append(frame)
        total += frame["points"]
    return got, total


def test_feed_earnings_member_and_network_totals_resume_with_ledger_cursor(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """?earnings=1: a member's feed gets its own earnings (`earned`), a network's feed summed
    totals (`earnings`, never one frame per credit), both read from the ledger logs; a member
    resuming with the `ledger` cursor of its last frame gets what it missed once, then live."""
    from .test_store import balance

    settings = feed_settings(namespace)

    async def body() -> None:
        async with serve(settings, redis_server.url) as client:
            api = Api(client)
            assert api.tokens is not None
            erin_token = api.tokens.issue(NET, "erin")[0]
            target = f"/v1/feed?network={NET}&earnings=1"
            net_ws = await client.ws_connect(target, headers=admin_feed(target))
            erin_ws = await client.ws_connect("/v1/feed?earnings=1", headers=bearer(erin_token))

            before = {u: balance(redis_client, namespace, u) for u in ("erin", "finn")}
            await asyncio.to_thread(give, shards, redis_client, {"erin": 40, "finn": 60})
            gained = {u: balance(redis_client, namespace, u) - before[u] for u in before}
            frames, total = await earned_until(net_ws, "earnings", sum(gained.values()))
            assert total == sum(gained.values())
            assert sum(f["credits"] for f in frames) >= 2
            tops = {t["user_id"] for f in frames for t in f["top"]}
            assert tops
            assert tops <= {"erin", "finn"}
            mine, total = await earned_until(erin_ws, "earned", gained["erin"])
            assert total == gained["erin"]
            assert {f["user_id"] for f in mine} == {"erin"}
            cursor = mine[-1]["ledger"]
            assert len(cursor.split(",")) == settings.shards.member
            await erin_ws.close()

            # missed while away (the network feed keeps the hub reading): one catch-up frame
            await asyncio.to_thread(give, shards, redis_client, {"erin": 25, "finn": 7})
            await earned_until(net_ws, "earnings", 32)
            target = f"/v1/feed?earnings=1&ledger={cursor}"
            back = await client.ws_connect(target, headers=bearer(erin_token))
            caught, total = await earned_until(back, "earned", 25)
            assert (len(caught), total) == (1, 25)
            await asyncio.to_thread(give, shards, redis_client, {"erin": 5})
            _, total = await earned_until(back, "earned", 5)
            assert total == 5  # nothing twice: the catch-up and the live frames do not overlap
            await back.close()
            await net_ws.close()
            hub = client.server.app[FEED]
            for _ in range(500):  # the server side of the sockets closes just after ours
                if hub.ledger_pos is None:
                    break
                await asyncio.sleep(0.01)
            assert hub.ledger_pos is None  # no earnings client left: the logs are not read

            bad = "/v1/feed?earnings=1&ledger=nope"
            resp = await client.get(bad, headers=bearer(erin_token))
            assert (resp.status, (await resp.json())["field"]) == (400, "ledger")

    asyncio.run(body())


def test_earnings_of_many_credits_make_one_frame_per_network_and_member() -> None:
    """10,000 credits in one interval: one `earnings` frame for the network (totals, top 3),
    one `earned` frame per member; spends and transfers (not from a treasury) are not earnings."""
    from engine.ledger import Entry
    from gateway.routes.feed import Earnings

    enc = msgspec.msgpack.Encoder()
    paid = [Entry(f"e{i}", 1000.0 + i, "n", "treasury:n", f"member:n:u{i % 100}", 1 + i % 100 // 99,
                  "chat", "ch" + str(i % 2)) for i in range(10_000)]  # fmt: skip
    spent = [Entry("s", 5.0, "n", "member:n:u1", "store:n", 50, "redeem", "ch1")]
    e = Earnings()
    e.add(enc.encode(paid[:5_000]))
    e.add(enc.encode(paid[5_000:] + spent))
    networks, members = e.frames("7-0,8-0")
    assert set(networks) == {"n"}
    total = json.loads(networks["n"])
    assert (total["points"], total["credits"], total["members"]) == (10_100, 10_000, 100)
    assert total["top"][0] == {"user_id": "u99", "points": 200}
    assert len(total["top"]) == 3
    assert total["ledger"] == "7-0,8-0"
    assert len(members) == 100
    u1 = json.loads(members[("n", "u1")])
    assert (u1["points"], u1["credits"], u1["channels"]) == (100, 100, {"ch1": 100})


def test_a_resume_inside_an_entry_of_several_gets_the_rest_of_it(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """?after= may name one notice of an entry holding several (a member shard's rewards):
    the backlog starts with the rest of that entry, then the entries after it."""
    from redis import asyncio as aioredis

    from engine.rewards import RewardEarned
    from gateway.routes.feed import Client, FeedHub

    keys = Keys(namespace)
    earned = [RewardEarned("n", u, "welcome", 100, "c", f"n:{u}/welcome", 5.0) for u in "abc"]
    e1 = redis_client.xadd(keys.notices, {"reward_earned": msgspec.json.encode(earned)}).decode()
    drawn = {"network": "n", "raffle": "r", "winners": ["a"], "ts": 1}
    e2 = redis_client.xadd(keys.notices, {"raffle_drawn": json.dumps(drawn)}).decode()

    async def body() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        hub = FeedHub(r, keys, backlog_max=10, max_clients=2, client_queue_max=10, block_ms=10)
        try:
            for after, ids in ((f"{e1}/0", [f"{e1}/1", f"{e1}/2", e2]),
                               (f"{e1}/2", [e2]), (e1, [e2]), ("0-0", [f"{e1}/0", f"{e1}/1",
                                                                      f"{e1}/2", e2])):  # fmt: skip
                frames, last, gap = await hub.backlog(Client("n", None, asyncio.Queue()), after)
                assert [json.loads(f)["id"] for f in frames] == ids, after
                assert (last, gap) == (e2, False)
            bob = Client("n", "b", asyncio.Queue())  # a member's feed: its own, and raffles
            frames, _, _ = await hub.backlog(bob, "0-0")
            assert [json.loads(f)["id"] for f in frames] == [f"{e1}/1", e2]
        finally:
            await r.aclose()

    asyncio.run(body())
