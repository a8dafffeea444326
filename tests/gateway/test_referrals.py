"""Referrals through the gateway and the real shards: the member API call and the `referral`
event, refusals (400 for what the edge can tell, the engine's outcome for the rest), and
the outcome on the member endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from actors.client import RallyClient
from actors.keys import Keys
from actors.ledger_sink import ledger_tail
from engine.ledger import member_account
from gateway.redis_server import RedisServer
from gateway.signing import signed_headers

from .helpers import SECRET, body_of, get, make_settings, post, serve

NOW = 1_795_000_000.0


async def refer(client: Any, user: str, body: bytes) -> tuple[int, Any]:
    target = f"/v1/members/{user}/referral?network=demo"
    headers = signed_headers("k1", SECRET, body, now=NOW, target=target, method="POST")
    async with client.post(target, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def send(client: Any, events: list[dict[str, Any]]) -> tuple[int, Any]:
    body = body_of({"events": events})
    headers = {**signed_headers("k1", SECRET, body, now=NOW), "Content-Type": "application/json"}
    return await post(client, body, headers=headers)


def chat(i: int, user: str, ts: float) -> dict[str, Any]:
    return {"kind": "chat", "id": f"c{i}", "network": "demo", "channel": "c1", "ts": ts,
            "user_id": user, "user_name": user.title(), "text": "hi"}  # fmt: skip


def test_a_referral_pays_when_the_new_member_first_earns(
    ray_cluster: None, redis_server: RedisServer, namespace: str
) -> None:
    settings = make_settings(namespace)
    cfg = settings.runtime(redis_server.url)
    rally = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)

    clock = [NOW]  # the gateway's clock dates the API calls: it moves on between them

    async def go() -> dict[str, Any]:
        async with serve(settings, redis_server.url, clock=lambda: clock[0]) as client:
            assert (await send(client, [chat(0, "alice", NOW - 100)]))[0] == 202
            status, body = await refer(client, "bob", body_of({"referrer": "alice"}))
            assert status == 202, body
            assert body["referrer"] == "alice"
            again = await refer(client, "bob", body_of({"referrer": "alice"}))
            assert again[1]["event_id"] == body["event_id"]  # a retry is a duplicate
            status, body = await refer(client, "bob", body_of({"referrer": "bob"}))
            assert (status, body["field"], body["error"]) == (400, "referrer", "self_referral")
            status, body = await refer(client, "bob", body_of({"referrer": "no spaces"}))
            assert (status, body["field"]) == (400, "referrer")
            status, body = await refer(client, "bob", b"{}")
            assert (status, body["field"]) == (400, "referrer")
            # a cycle (alice <- bob <- alice), refused in event-time order by the engine
            clock[0] = NOW + 1
            assert (await refer(client, "alice", body_of({"referrer": "bob"})))[0] == 202
            # carol by event: bob is her referrer, alice her second level
            ev = {"kind": "referral", "id": "r-carol", "network": "demo", "channel": "c1",
                  "ts": NOW + 2, "user_id": "carol", "referrer": "bob"}  # fmt: skip
            assert (await send(client, [ev]))[0] == 202
            bad = {**ev, "id": "r-x", "referrer": ""}
            status, body = await send(client, [bad])
            assert (status, body["field"]) == (400, "referrer")
            later = [chat(1, "bob", NOW + 5), chat(2, "carol", NOW + 6)]
            assert (await send(client, later))[0] == 202
            assert await asyncio.to_thread(rally.wait_idle, 60)
            out = {}
            for u in ("alice", "bob", "carol"):
                status, out[u] = await get(client, f"/v1/members/{u}?network=demo", now=NOW)
                assert status == 200, out[u]
            return out

    try:
        got = asyncio.run(go())
    finally:
        rally.stop()
    alice, bob, carol = got["alice"]["referral"], got["bob"]["referral"], got["carol"]["referral"]
    assert (bob["referrer"], bob["status"], bob["upline"]) == ("alice", "paid", None)
    assert (carol["referrer"], carol["upline"], carol["status"]) == ("bob", "alice", "paid")
    assert alice["referrer"] is None  # the cycle was refused
    assert (alice["rewards_received"], alice["points_received"]) == (2, 100 + 25)
    assert (bob["rewards_received"], bob["points_received"]) == (1, 100)
    keys = Keys(namespace)
    entries = ledger_tail(r, keys, cfg.member_shards, member_account("demo", "alice"), {})
    paid = sorted((e.id, e.amount) for e in entries if e.rule.startswith("referral"))
    assert paid == [("demo:ref2:carol>alice/referral2", 25), ("demo:ref:bob>alice/referral", 100)]
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}
    assert (stats["referrals_ok"], stats["referrals_cycle"]) == (2, 1)
