"""The reward store through the real gateway, with real Redis and Ray: the catalog, redeeming
with an Idempotency-Key, every refusal with its own code, fulfil and refund, and races:
100 concurrent requests for the last 10 items give exactly 10 redemptions and 90
out_of_stock, with no point lost; the audit stays clean."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from aiohttp.test_utils import TestClient

from actors.client import RallyClient
from actors.keys import Keys
from engine.events import Custom, Offline, Online
from engine.member import state_decoder
from gateway.audit import audit
from gateway.reads import ACCESS
from gateway.redis_server import RedisServer
from gateway.routes_store import STORE
from gateway.signing import bearer, signed_headers
from tests.actors.conftest import append

from .helpers import ADMIN_SECRET, SECRET, make_settings, serve

NET = "demo"
TOKEN_SECRET = "store-token-secret-0123456789"
seq = itertools.count()


@pytest.fixture
def shards(ray_cluster: None, redis_server: RedisServer, namespace: str) -> Iterator[RallyClient]:
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    cfg = msgspec.structs.replace(settings.runtime(redis_server.url), archive_path="",
                                  watch_clock_interval_s=0.0, streak_rollover=False)  # fmt: skip
    rally = RallyClient(cfg).start(scheduler=False)
    yield rally
    rally.stop()


def store_settings(namespace: str, spend_timeout_s: float = 120.0) -> Any:
    """The test settings, with member tokens and a patient spend timeout (a loaded machine
    may take long to answer; no test asserts a speed)."""
    base = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    return base.model_copy(
        update={"spend": base.spend.model_copy(update={"timeout_s": spend_timeout_s})}
    )


def give(rally: RallyClient, r: redis.Redis, points: dict[str, int]) -> None:
    """Members earn `points` each (a custom action, plus the welcome bonus of 100)."""
    now = time.time()
    events = [
        Custom(id=f"g{next(seq)}", network=NET, channel="c1", user_id=u, ts=now, points=p)
        for u, p in points.items()
    ]
    append(r, rally.cfg, events)  # type: ignore[arg-type]
    assert rally.wait_idle(60)


def balance(r: redis.Redis, namespace: str, user: str) -> int:
    raw = r.hget(Keys(namespace).mstate, f"{NET}:{user}")
    return 0 if raw is None else int(state_decoder.decode(raw).balance)


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.tokens = client.server.app[ACCESS].tokens

    async def call(
        self, method: str, target: str, body: object = None, *, user: str | None = None,
        key: str = "admin", headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        raw = b"" if body is None else msgspec.json.encode(body)
        if user is not None:
            assert self.tokens is not None
            auth = bearer(self.tokens.issue(NET, user)[0])
        else:
            secret = ADMIN_SECRET if key == "admin" else SECRET
            auth = signed_headers(key, secret, raw, target=target, method=method)
        hdrs = {**auth, "Content-Type": "application/json", **(headers or {})}
        async with self.client.request(method, target, data=raw, headers=hdrs) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    async def put_item(self, item_id: str, **spec: Any) -> tuple[int, Any]:
        return await self.call("PUT", f"/v1/store/items/{item_id}?network={NET}", spec)

    async def redeem(
        self, member: str, item_id: str, idem: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {} if idem is None else {"Idempotency-Key": idem}
        kw.setdefault("user", member)
        return await self.call(
            "POST", f"/v1/members/{member}/redemptions?network={NET}", {"item_id": item_id},
            headers=headers, **kw,
        )  # fmt: skip


def run(settings: Any, redis_url: str, body: Any) -> Any:
    async def go() -> Any:
        async with serve(settings, redis_url) as client:
            return await body(Api(client))

    return asyncio.run(go())


def test_catalog_redeem_fulfil_refund_and_every_refusal(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = store_settings(namespace)
    give(shards, redis_client, {"alice": 900, "bob": 0})  # + welcome 100 and a streak day
    had = balance(redis_client, namespace, "alice")
    assert 1_000 <= had < 1_100

    async def body(api: Api) -> None:
        # the catalog: create (201), update (200), bad input names its field
        status, item = await api.put_item("mug", name="Mug", cost=300, stock=5, per_member_limit=2)
        assert status == 201, item
        assert (item["stock"], item["per_member_limit"], item["enabled"]) == (5, 2, True)
        status, item = await api.put_item("mug", description="A mug")
        assert (status, item["description"], item["cost"], item["stock"]) == (200, "A mug", 300, 5)
        assert (await api.put_item("x", cost=1))[1]["field"] == "name"
        status, err = await api.put_item("x", name="X", cost=0)
        assert (status, err["error"], err["field"]) == (400, "invalid_item", "cost")
        status, err = await api.put_item("x", name="X", cost=1, per_stream_limit=1)
        assert (status, err["field"]) == (400, "per_stream_limit")
        status, err = await api.put_item("x", name="X", cost=1, min_tier="Platinum")
        assert (status, err["field"]) == (400, "min_tier")
        status, err = await api.put_item("x", name="X", cost=1, colour="red")
        assert (status, err["field"]) == (400, "colour")
        status, err = await api.put_item("a" * 65, name="X", cost=1)
        assert (status, err["error"]) == (400, "invalid_item_id")
        status, err = await api.call("PUT", f"/v1/store/items/x?network={NET}",
                                     {"name": "X", "cost": 1}, user="alice")  # fmt: skip
        assert (status, err["error"]) == (403, "forbidden")
        assert (await api.put_item("gold", name="Gold only", cost=1, min_tier="Gold"))[0] == 201
        assert (await api.put_item("off", name="Off", cost=1, enabled=False))[0] == 201
        assert (await api.put_item("c2", name="C2 only", cost=1, channel="c2"))[0] == 201
        status, page = await api.call("GET", f"/v1/store/items?network={NET}&channel=c1",
                                      user="alice")  # fmt: skip
        assert status == 200
        assert [i["id"] for i in page["items"]] == ["gold", "mug"]  # not "off", not "c2"
        status, page = await api.call("GET", f"/v1/store/items?network={NET}")
        assert {i["id"] for i in page["items"]} == {"gold", "mug", "off", "c2"}

        # redeem: 201, a retry replays, another item under the key conflicts
        status, got = await api.redeem("alice", "mug", "k1")
        assert status == 201, got
        red = got["redemption"]
        assert (red["status"], red["cost"], got["balance"]) == ("pending", 300, had - 300)
        assert await api.redeem("alice", "mug", "k1") == (200, {"redemption": red})
        status, err = await api.redeem("alice", "gold", "k1")
        assert (status, err["error"], err["field"]) == (409, "idempotency_conflict",
                                                        "Idempotency-Key")  # fmt: skip
        status, err = await api.redeem("alice", "mug")
        assert (status, err["error"]) == (400, "missing_idempotency_key")
        status, err = await api.redeem("alice", "nope", "k2")
        assert (status, err["error"], err["field"]) == (404, "item_not_found", "item_id")
        status, err = await api.redeem("alice", "off", "k2")
        assert (status, err["error"]) == (409, "item_disabled")
        status, err = await api.redeem("alice", "gold", "k2")
        assert (status, err["error"], err["field"]) == (403, "tier_too_low", "min_tier")
        assert (err["tier_required"], err["points_needed"]) == ("Gold", 2_000 - had), (
            "the refusal says the tier and the lifetime points still needed"
        )
        assert (await api.put_item("vipmug", name="VIP mug", cost=1, channel="vip"))[0] == 201
        status, err = await api.redeem("alice", "vipmug", "k2")
        assert (status, err["error"], err["tier_required"]) == (403, "tier_too_low", "Diamond"), (
            "the channel's min_tier ([networks.N.channels.vip] min_tier) gates its items"
        )
        assert err["points_needed"] == 10_000 - had
        status, err = await api.redeem("bob", "mug", "k1")
        assert (status, err["error"], err["field"]) == (409, "insufficient_points", "cost")
        assert await api.redeem("bob", "mug", "k1") == (status, err), "a retry: the same refusal"
        status, err = await api.redeem("alice", "mug", "k1", user="bob")
        assert (status, err["error"]) == (403, "forbidden")
        assert (await api.redeem("alice", "mug", "k3"))[0] == 201
        status, err = await api.redeem("alice", "mug", "k4")
        assert (status, err["error"]) == (409, "member_limit_reached")
        assert (await api.call("GET", f"/v1/store/items/mug?network={NET}"))[1]["stock"] == 3

        # own redemptions; the admin's pending list; fulfil; refund
        status, mine = await api.call("GET", f"/v1/members/alice/redemptions?network={NET}",
                                      user="alice")  # fmt: skip
        assert status == 200
        assert [r["status"] for r in mine["redemptions"]] == ["pending", "pending"]
        status, pending = await api.call(
            "GET", f"/v1/store/redemptions?network={NET}&status=pending"
        )
        assert {r["id"] for r in pending["redemptions"]} == {r["id"] for r in mine["redemptions"]}
        first, second = pending["redemptions"][1]["id"], pending["redemptions"][0]["id"]
        status, done = await api.call("POST", f"/v1/store/redemptions/{first}/fulfil?network={NET}")
        assert (status, done["redemption"]["status"]) == (200, "fulfilled")
        status, err = await api.call("POST", f"/v1/store/redemptions/{first}/refund?network={NET}")
        assert (status, err["error"]) == (409, "already_fulfilled")
        status, back = await api.call(
            "POST", f"/v1/store/redemptions/{second}/refund?network={NET}"
        )
        assert (status, back["redemption"]["status"]) == (200, "refunded")
        again = await api.call("POST", f"/v1/store/redemptions/{second}/refund?network={NET}")
        assert again == (200, back), "a refund is idempotent"
        status, err = await api.call("POST", f"/v1/store/redemptions/{second}/fulfil?network={NET}")
        assert (status, err["error"]) == (409, "already_refunded")
        assert (await api.call("GET", f"/v1/store/items/mug?network={NET}"))[1]["stock"] == 4
        assert (await api.redeem("alice", "mug", "k5"))[0] == 201, "the refund gave a use back"
        status, err = await api.call("POST", f"/v1/store/redemptions/rd_nope/fulfil?network={NET}")
        assert (status, err["error"]) == (404, "redemption_not_found")

    run(settings, redis_server.url, body)
    assert balance(redis_client, namespace, "alice") == had - 300 * 2
    keys = Keys(namespace)
    assert shards.wait_idle(60)
    report = audit(redis_client, keys, settings.rulebook())
    assert report.ok, report.problems
    assert report.accounts == {f"store:{NET}": 600}
    notices = [f for _, f in redis_client.xrange(keys.notices)]
    assert sum(b"item_redeemed" in f for f in notices) == 3
    assert sum(b"item_refunded" in f for f in notices) == 1


def test_100_concurrent_requests_for_the_last_10_items(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = store_settings(namespace)
    users = [f"v{i}" for i in range(100)]
    give(shards, redis_client, dict.fromkeys(users, 400))  # about 500 each
    before = {u: balance(redis_client, namespace, u) for u in users}

    async def body(api: Api) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
        assert (await api.put_item("last", name="Last ones", cost=120, stock=10))[0] == 201
        race = await asyncio.gather(*[api.redeem(u, "last", f"r-{u}") for u in users])
        # one member, many keys, a per-member limit of 1: the stock given back every time
        await api.put_item("once", name="Once", cost=10, stock=50, per_member_limit=1)
        solo = await asyncio.gather(*[api.redeem("v0", "once", f"o{i}") for i in range(20)])
        assert (await api.call("GET", f"/v1/store/items/once?network={NET}"))[1]["stock"] == 49
        return race, solo

    race, solo = run(settings, redis_server.url, body)
    statuses = [s for s, _ in race]
    assert statuses.count(201) == 10, race
    assert statuses.count(409) == 90
    assert {b["error"] for s, b in race if s == 409} == {"out_of_stock"}
    assert all(b["field"] == "item_id" for s, b in race if s == 409)
    assert sorted(s for s, _ in solo) == [201] + [409] * 19
    assert {b["error"] for s, b in solo if s == 409} == {"member_limit_reached"}
    winners = {b["redemption"]["user_id"] for s, b in race if s == 201}
    for u in users:
        spent = (120 if u in winners else 0) + (10 if u == "v0" else 0)
        assert balance(redis_client, namespace, u) == before[u] - spent, u
    assert shards.wait_idle(60)
    report = audit(redis_client, Keys(namespace), settings.rulebook())
    assert report.ok, report.problems
    assert report.accounts == {f"store:{NET}": 10 * 120 + 10}


def test_a_redemption_left_half_done_is_finished_by_a_retry_or_the_sweeper(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """The member shards stop after the members earned: a redemption reserves its item, but
    its debit gets no answer (503 spend_pending) and it stays `reserving`. Once the shards
    are back, a retry with the same Idempotency-Key finishes one, the sweeper the other:
    each debited once, the stock taken once, the audit clean."""
    settings = store_settings(namespace, spend_timeout_s=0.5)
    give(shards, redis_client, {"ann": 500, "ben": 500})
    had = {u: balance(redis_client, namespace, u) for u in ("ann", "ben")}
    cfg = shards.cfg
    shards.stop()
    restarted: list[RallyClient] = []

    async def body(api: Api) -> None:
        assert (await api.put_item("tee", name="Tee", cost=200, stock=5))[0] == 201
        for user in ("ann", "ben"):
            status, err = await api.redeem(user, "tee", f"{user}-1")
            assert (status, err["error"], err["field"]) == (503, "spend_pending",
                                                            "Idempotency-Key")  # fmt: skip
        status, item = await api.call("GET", f"/v1/store/items/tee?network={NET}")
        assert item["stock"] == 3, "reserved"
        loop = asyncio.get_running_loop()
        restarted.append(await loop.run_in_executor(None, lambda: RallyClient(cfg).start(
            scheduler=False)))  # fmt: skip
        status, got = await api.redeem("ann", "tee", "ann-1")
        assert (status, got["redemption"]["status"]) == (200, "pending")
        store = api.client.server.app[STORE]
        assert await store.sweep(0.0) == 1
        status, mine = await api.call("GET", f"/v1/members/ben/redemptions?network={NET}",
                                      user="ben")  # fmt: skip
        assert [r["status"] for r in mine["redemptions"]] == ["pending"]
        assert (await api.redeem("ben", "tee", "ben-1"))[0] == 200
        assert (await api.call("GET", f"/v1/store/items/tee?network={NET}"))[1]["stock"] == 3

    try:
        run(settings, redis_server.url, body)
        for user in ("ann", "ben"):
            assert balance(redis_client, namespace, user) == had[user] - 200
        assert restarted[0].wait_idle(60)
        report = audit(redis_client, Keys(namespace), settings.rulebook())
        assert report.ok, report.problems
        assert report.accounts == {f"store:{NET}": 400}
    finally:
        for rally in restarted:
            rally.stop()


def test_per_stream_limits_and_cooldowns(
    shards: RallyClient, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = store_settings(namespace)
    give(shards, redis_client, {"cat": 900, "dan": 900, "eve": 900})

    def stream(kind: type[Online] | type[Offline]) -> None:
        ev = kind(id=f"s{next(seq)}", network=NET, channel="c1", ts=time.time())
        append(redis_client, shards.cfg, [ev])  # type: ignore[list-item]
        assert shards.wait_idle(60)

    async def body(api: Api) -> None:
        await api.put_item("hug", name="Hug", cost=1, channel="c1", per_stream_limit=2)
        status, err = await api.redeem("cat", "hug", "h0")
        assert (status, err["error"], err["field"]) == (409, "not_live", "item_id")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stream, Online)
        assert (await api.redeem("cat", "hug", "h1"))[0] == 201
        assert (await api.redeem("dan", "hug", "h1"))[0] == 201
        status, err = await api.redeem("eve", "hug", "h1")
        assert (status, err["error"]) == (409, "stream_limit_reached")
        await loop.run_in_executor(None, stream, Offline)
        await loop.run_in_executor(None, stream, Online)  # a new stream: a new count
        assert (await api.redeem("eve", "hug", "h2"))[0] == 201

        await api.put_item("horn", name="Horn", cost=1, cooldown_s=3600)
        assert (await api.redeem("cat", "horn", "c1"))[0] == 201
        status, err = await api.redeem("dan", "horn", "c1")
        assert (status, err["error"], err["field"]) == (429, "item_cooldown", "item_id")
        assert err["retry_at"] > time.time() + 3000
        await api.put_item("pop", name="Pop", cost=1, member_cooldown_s=3600)
        assert (await api.redeem("cat", "pop", "p1"))[0] == 201
        assert (await api.redeem("dan", "pop", "p1"))[0] == 201, "the cooldown is per member"
        status, err = await api.redeem("cat", "pop", "p2")
        assert (status, err["error"], err["field"]) == (429, "member_cooldown",
                                                        "member_cooldown_s")  # fmt: skip
        assert err["retry_at"] > time.time() + 3000
        # an insufficient balance does not hold the item's global cooldown
        await api.put_item("gem", name="Gem", cost=10**6, cooldown_s=3600)
        assert (await api.redeem("cat", "gem", "g1"))[1]["error"] == "insufficient_points"
        assert (await api.redeem("dan", "gem", "g1"))[1]["error"] == "insufficient_points"

    run(settings, redis_server.url, body)
    assert shards.wait_idle(60)
    report = audit(redis_client, Keys(namespace), settings.rulebook())
    assert report.ok, report.problems
