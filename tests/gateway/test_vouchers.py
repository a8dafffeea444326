"""Vouchers through the real gateway, Redis and Ray member shards: admins mint batches, members
scan codes; each code credits its points exactly once through the spend path, however many
scans race for it; every refusal has its own 4xx; every attempt is listed; the audit stays
clean."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from aiohttp.test_utils import TestClient

from actors.client import RallyClient
from actors.keys import Keys
from actors.spend import SyncSpendClient
from analytics.archive import LedgerArchive
from engine import voucher as vc
from engine.ledger import Entry
from engine.member import state_decoder
from engine.spend import Transfer
from engine.store import redemption_id
from engine.voucher import Attempt, Batch
from gateway.audit import audit, read_ledger_logs
from gateway.auth import TokenSigner
from gateway.redis_server import RedisServer
from gateway.routes.vouchers import VOUCHERS
from gateway.settings import Settings
from gateway.signing import bearer, signed_headers
from gateway.store import StoreKeys

from .helpers import ADMIN_SECRET, SECRET, make_settings, serve

TOKEN_SECRET = "voucher-token-secret-0123456789"
entries_decoder = msgspec.msgpack.Decoder(list[Entry])
NET = "demo"


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def deployment(
    ray_cluster: None, redis_server: RedisServer, namespace: str, tmp_path: Path
) -> Iterator[tuple[Settings, RallyClient]]:
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    no_sweeper = settings.vouchers.model_copy(update={"sweep_interval_s": 0.0})
    settings = settings.model_copy(update={"data_dir": tmp_path, "vouchers": no_sweeper})
    client = RallyClient(settings.runtime(redis_server.url)).start(scheduler=False)
    yield settings, client
    client.stop()


async def call(
    client: TestClient, method: str, target: str, body: object = None, *,
    key: str = "admin", secret: str = ADMIN_SECRET, headers: dict[str, str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    """A request signed with an API key (over target and body) unless `headers` are given."""
    data = b"" if body is None else msgspec.json.encode(body)
    if headers is None:
        headers = signed_headers(key, secret, data, target=target, method=method)
    async with client.request(
        method, target, data=data, headers={"Content-Type": "application/json", **headers}
    ) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def mint(
    client: TestClient, network: str = NET, **req: Any
) -> tuple[dict[str, Any], list[str]]:
    req.setdefault("count", 3)
    req.setdefault("points", 250)
    req.setdefault("expires_in_s", 3_600)
    status, body = await call(client, "POST", f"/v1/vouchers/batches?network={network}", req)
    assert status == 201, body
    return body["batch"], body["codes"]


def token(settings: Settings, clock: Clock, user: str, network: str = NET) -> dict[str, str]:
    signer = TokenSigner.from_settings(settings, clock)
    assert signer is not None
    return bearer(signer.issue(network, user)[0])


async def scan(
    client: TestClient, settings: Settings, clock: Clock, user: str, code: str, **kw: Any
) -> tuple[int, Any]:
    target = f"/v1/members/{user}/vouchers?network={kw.pop('network', NET)}"
    if kw.pop("as_key", False):
        return await call(client, "POST", target, {"code": code}, key="k1", secret=SECRET)
    return await call(client, "POST", target, {"code": code}, headers=token(settings, clock, user))


def balance(r: redis.Redis, keys: Keys, user: str) -> int:
    raw = r.hget(keys.mstate, f"{NET}:{user}")
    return 0 if raw is None else int(state_decoder.decode(raw).balance)


def scanned_notices(r: redis.Redis, keys: Keys) -> list[vc.VoucherScanned]:
    dec = msgspec.msgpack.Decoder(vc.VoucherScanned)
    return [dec.decode(f[b"voucher_scanned"]) for _, f in r.xrange(keys.notices)
            if b"voucher_scanned" in f]  # fmt: skip


def audited(deployment: tuple[Settings, RallyClient], r: redis.Redis) -> list[str]:
    """The audit's problems, once the deployment is idle."""
    settings, rally = deployment
    assert rally.wait_idle(60)
    rep = audit(
        r, Keys(settings.namespace), settings.rulebook(), LedgerArchive(settings.archive_path())
    )
    return rep.problems


def test_mint_scan_and_every_refusal(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)

    async def go() -> None:
        async with serve(settings, redis_server.url, clock) as client:
            batch, codes = await mint(client, batch="party", note="launch stream")
            assert batch["account"] == f"voucher:{NET}:party"
            # redeemed once, credited through the spend path
            status, body = await scan(client, settings, clock, "alice", codes[0])
            assert status == 200, body
            assert body["points"] == 250
            assert body["balance"] == 250
            assert body["code_id"] == "party/0"
            assert not body["resumed"]
            # by an API key covering the network, on behalf of a member
            status, body = await scan(client, settings, clock, "bob", codes[1], as_key=True)
            assert (status, body["balance"]) == (200, 250)
            refusals = [
                (await scan(client, settings, clock, "alice", codes[0]), 409, "voucher_used"),
                (await scan(client, settings, clock, "carol", codes[0]), 409, "voucher_used"),
                (await scan(client, settings, clock, "carol", "RV1:NOPE"), 400, "voucher_malformed"),
                (await scan(client, settings, clock, "carol", "hello"), 400, "voucher_malformed"),
                (await scan(client, settings, clock, "carol", forge(codes[2])), 422, "voucher_forged"),
            ]  # fmt: skip
            _, other_codes = await mint(client, network="other", count=1)
            refusals.append(
                (await scan(client, settings, clock, "carol", other_codes[0]), 422,
                 "voucher_wrong_network")
            )  # fmt: skip
            svc = client.app[VOUCHERS]
            unknown = Batch("ghost", NET, 1, int(clock.now) + 60, svc.keys.key_id.hex(), 0, 5)
            ghost = vc.mint(unknown, svc.keys.key_id, svc.keys.sign)[0]
            refusals.append(
                (await scan(client, settings, clock, "carol", ghost), 404, "voucher_unknown_batch")
            )
            _, soon = await mint(client, count=1, expires_in_s=60, batch="soon")
            clock.now += 61
            refusals.append(
                (await scan(client, settings, clock, "carol", soon[0]), 410, "voucher_expired")
            )
            for (status, body), want_status, want_code in refusals:
                assert (status, body["error"]) == (want_status, want_code), body
                assert body["field"] == "code"
            # bad requests are not scans
            status, body = await call(
                client, "POST", f"/v1/members/carol/vouchers?network={NET}", {"kode": "x"},
                headers=token(settings, clock, "carol"),
            )  # fmt: skip
            assert (status, body["field"]) == (400, "kode")
            status, body = await scan(client, settings, clock, "carol", codes[2], network="other")
            assert status == 403, "a member token scans only for its own member and network"
            # admins see every attempt, newest first, paged
            status, body = await call(client, "GET", f"/v1/vouchers/attempts?network={NET}&limit=5")
            assert status == 200
            page1 = body["attempts"]
            status, body2 = await call(
                client, "GET", f"/v1/vouchers/attempts?network={NET}&before={body['next_before']}"
            )
            outcomes = [a["outcome"] for a in page1 + body2["attempts"]]
            assert outcomes == [
                "voucher_expired", "voucher_unknown_batch", "voucher_wrong_network", "voucher_forged",
                "voucher_malformed", "voucher_malformed", "voucher_used", "voucher_used",
                "redeemed", "redeemed",
            ]  # fmt: skip
            assert body2["next_before"] is None
            forged = page1[3]
            assert (forged["user_id"], forged["code_id"], forged["by"]) == (
                "carol",
                "party/2",
                "token",
            )
            assert page1[-1]["user_id"] == "carol"  # voucher_malformed: no code id
            assert [a["by"] for a in body2["attempts"][-2:]] == ["key:k1", "token"]
            assert (await call(client, "GET", f"/v1/vouchers/attempts?network={NET}",
                               key="k1", secret=SECRET))[0] == 200  # fmt: skip
            assert (await call(client, "GET", "/v1/vouchers/attempts?network=other",
                               key="k1", secret=SECRET))[0] == 403  # fmt: skip
            status, body = await call(client, "GET", f"/v1/vouchers/batches?network={NET}")
            assert {b["id"]: b["redeemed"] for b in body["batches"]} == {"party": 2, "soon": 0}
            async with client.get("/v1/vouchers/keys") as resp:
                assert [k["current"] for k in (await resp.json())["keys"]] == [True]

    asyncio.run(go())
    assert not audited(deployment, r)
    assert balance(r, keys, "alice") == 250
    assert balance(r, keys, "bob") == 250
    notices = scanned_notices(r, keys)
    assert sorted((n.user_id, n.code_id) for n in notices) == [
        ("alice", "party/0"),
        ("bob", "party/1"),
    ]
    # the feed flags refusals: carol's scan of alice's code, then nothing more from carol for
    # REFUSED_NOTICE_EVERY_S (her junk scans are attempts only); alice's own repeat is no alarm
    refused = [msgspec.json.decode(f[b"voucher_refused"]) for _, f in r.xrange(keys.notices)
               if b"voucher_refused" in f]  # fmt: skip
    assert [(n["user_id"], n["outcome"], n["code_id"]) for n in refused] == [
        ("carol", "voucher_used", "party/0")
    ]
    logged = [
        e for le in read_ledger_logs(r, keys).entries for e in entries_decoder.decode(le.blob)
    ]
    ledger = [e for e in logged if f"member:{NET}:alice" in (e.debit, e.credit)]
    assert [(e.debit, e.credit, e.amount, e.rule) for e in ledger] == [
        (f"voucher:{NET}:party", f"member:{NET}:alice", 250, "voucher")
    ]
    assert int(r.hget(keys.accounts, f"voucher:{NET}:party")) == -500


def forge(code: str) -> str:
    """The same code with one signature character changed (still canonical base32)."""
    i = len(code) - 10
    return code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1 :]


def test_concurrent_scans_redeem_each_code_once(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)
    users = [f"m{i}" for i in range(40)]

    async def go() -> list[list[tuple[int, Any]]]:
        async with serve(settings, redis_server.url, clock) as client:
            _, codes = await mint(client, count=3, points=100, batch="race")
            # code 0: 40 members at once; code 1: one member 30 times at once;
            # code 2: both, interleaved
            return [
                await asyncio.gather(*(scan(client, settings, clock, u, codes[0]) for u in users)),
                await asyncio.gather(
                    *(scan(client, settings, clock, "solo", codes[1]) for _ in range(30))
                ),
                await asyncio.gather(
                    *(scan(client, settings, clock, u, codes[2]) for u in users[:20] * 2)
                ),
            ]

    for results in asyncio.run(go()):
        ok = [body for status, body in results if status == 200]
        assert len(ok) == 1, [b for _, b in results if "error" not in b]
        refused = {(status, body["error"]) for status, body in results if status != 200}
        assert refused <= {(409, "voucher_used"), (409, "voucher_pending")}, refused
    total = sum(balance(r, keys, u) for u in [*users, "solo"])
    assert total == 300
    assert len(scanned_notices(r, keys)) == 3
    assert not audited(deployment, r)
    assert int(r.hget(keys.accounts, f"voucher:{NET}:race")) == -300


def test_a_claim_left_pending_is_finished_by_its_member_once(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A gateway that died after claiming (and maybe after crediting) leaves a pending claim:
    the member's next scan, or a gateway's sweeper, finishes it once `resume_after_s` passed;
    the points arrive once."""
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)

    async def go() -> None:
        async with serve(settings, redis_server.url, clock) as client:
            _, codes = await mint(client, count=4, points=70, batch="crash")
            svc = client.app[VOUCHERS]
            left = ((0, "dana", False), (1, "dana", True), (2, "hal", False), (3, "ivy", True))
            for serial, user, credited in left:
                v = vc.decode(codes[serial])[0]
                attempt = Attempt(clock.now, NET, user, "", "x")
                claim = await svc.store.claim(
                    NET, "crash", serial, user, now=clock.now, resume_after_s=30,
                    expires_at=v.expires_at, attempt=attempt,
                )  # fmt: skip
                assert claim.outcome == "claimed"
                if credited:  # it died after the spend path applied the credit
                    spends = SyncSpendClient(r, keys, settings.shards.member)
                    t = Transfer(f"voucher:crash/{serial}", NET, user, 70, "credit",
                                 f"voucher:{NET}:crash", "voucher", ref=f"crash/{serial}")  # fmt: skip
                    assert (await asyncio.to_thread(spends.submit, t)).code == "ok"
            assert await svc.sweep() == 0, "nothing is stale yet"
            for serial in (0, 1):
                status, body = await scan(client, settings, clock, "dana", codes[serial])
                assert (status, body["error"]) == (409, "voucher_pending")
                status, body = await scan(client, settings, clock, "erin", codes[serial])
                assert (status, body["error"]) == (409, "voucher_used")
            clock.now += 31
            for serial in (0, 1):
                status, body = await scan(client, settings, clock, "dana", codes[serial])
                assert (status, body["resumed"]) == (200, True), body
                status, body = await scan(client, settings, clock, "dana", codes[serial])
                assert (status, body["error"]) == (409, "voucher_used")
            # hal and ivy never scan again: a sweeper finishes their claims, once
            assert await svc.sweep() == 2
            assert await svc.sweep() == 0
            status, body = await scan(client, settings, clock, "hal", codes[2])
            assert (status, body["error"]) == (409, "voucher_used")
            _, page = await call(client, "GET", f"/v1/vouchers/attempts?network={NET}")
            swept = [a for a in page["attempts"] if a["by"] == "sweeper"]
            assert sorted((a["user_id"], a["outcome"]) for a in swept) == [
                ("hal", "resumed"),
                ("ivy", "resumed"),
            ]
            assert not await svc.store.redis.zcard(keys.voucher_pending)

    asyncio.run(go())
    assert balance(r, keys, "dana") == 140
    assert balance(r, keys, "hal") == 70
    assert balance(r, keys, "ivy") == 70
    assert len(scanned_notices(r, keys)) == 4
    assert not audited(deployment, r)


def test_the_audit_catches_a_code_credited_twice(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Bypassing the claim, one code credited to two members shows up in `rally audit`."""
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)

    async def go() -> None:
        async with serve(settings, redis_server.url, clock) as client:
            _, codes = await mint(client, count=1, points=10, batch="twice")
            assert (await scan(client, settings, clock, "fay", codes[0]))[0] == 200
            spends = SyncSpendClient(r, keys, settings.shards.member)
            t = Transfer("voucher:twice/0", NET, "gus", 10, "credit", f"voucher:{NET}:twice",
                         "voucher", ref="twice/0")  # fmt: skip
            assert (await asyncio.to_thread(spends.submit, t)).code == "ok"

    asyncio.run(go())
    problems = audited(deployment, r)
    assert any("voucher:demo:twice" in p for p in problems), problems


def test_redis_down_is_503_not_500(namespace: str, tmp_path: Path) -> None:
    settings = make_settings(namespace, auth={"token_secret": TOKEN_SECRET})
    settings = settings.model_copy(update={"data_dir": tmp_path})
    clock = Clock()

    async def go() -> None:
        async with serve(settings, "redis://127.0.0.1:1/0", clock) as client:
            svc = client.app[VOUCHERS]
            batch = Batch("b", NET, 1, int(clock.now) + 60, svc.keys.key_id.hex(), 0, 5)
            code = vc.mint(batch, svc.keys.key_id, svc.keys.sign)[0]
            status, body = await scan(client, settings, clock, "zed", code)
            assert (status, body["error"]) == (503, "unavailable"), body
            status, body = await call(
                client, "POST", f"/v1/vouchers/batches?network={NET}",
                {"count": 1, "points": 5, "expires_in_s": 60},
            )  # fmt: skip
            assert (status, body["error"]) == (503, "unavailable"), body

    asyncio.run(go())


# -- vouchers worth a store item ----------------------------------------------------------------
async def put_item(client: TestClient, item_id: str, **spec: Any) -> None:
    status, body = await call(client, "PUT", f"/v1/store/items/{item_id}?network={NET}", spec)
    assert status == 201, body


async def stock(client: TestClient, item_id: str) -> int | None:
    status, body = await call(client, "GET", f"/v1/store/items/{item_id}?network={NET}")
    assert status == 200, body
    return body["stock"]  # type: ignore[no-any-return]


async def redemptions(
    client: TestClient, settings: Settings, clock: Clock, user: str | None = None
) -> list[dict[str, Any]]:
    if user is None:
        status, body = await call(client, "GET", f"/v1/store/redemptions?network={NET}")
    else:
        target = f"/v1/members/{user}/redemptions?network={NET}"
        status, body = await call(client, "GET", target, headers=token(settings, clock, user))
    assert status == 200, body
    return body["redemptions"]  # type: ignore[no-any-return]


def redeemed_notices(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [msgspec.json.decode(f[b"item_redeemed"]) for _, f in r.xrange(keys.notices)
            if b"item_redeemed" in f]  # fmt: skip


def test_an_item_voucher_redeems_a_free_pending_redemption_or_answers_the_stores_refusal(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A code worth an item: a free store redemption (stock taken, limits applied, pending
    until fulfilled); a refusal by the store releases the code, which works again later."""
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)

    async def go() -> None:
        async with serve(settings, redis_server.url, clock) as client:
            await put_item(client, "mug", name="Mug", cost=300, stock=2, per_member_limit=1)
            await put_item(client, "gold", name="Gold only", cost=5, min_tier="Gold")
            _, codes = await mint(client, count=4, points=0, item="mug", batch="mugs")
            status, body = await scan(client, settings, clock, "alice", codes[0])
            assert status == 200, body
            red = body["redemption"]
            assert (body["item"], body["points"], body["code_id"]) == ("mug", 0, "mugs/0")
            assert (red["status"], red["cost"], red["voucher"], red["user_id"]) == (
                "pending", 0, "mugs/0", "alice",
            )  # fmt: skip
            assert await stock(client, "mug") == 1
            assert [x["id"] for x in await redemptions(client, settings, clock, "alice")] == [
                red["id"]
            ]
            assert [x["id"] for x in await redemptions(client, settings, clock)] == [red["id"]]
            # the item's per-member limit: refused with the store's code; the code is released
            status, body = await scan(client, settings, clock, "alice", codes[1])
            assert (status, body["error"], body["field"]) == (
                409, "member_limit_reached", "per_member_limit",
            ), body  # fmt: skip
            status, body = await scan(client, settings, clock, "bob", codes[1])
            assert (status, body["redemption"]["status"]) == (200, "pending"), body
            bob_rid = body["redemption"]["id"]
            assert await stock(client, "mug") == 0
            # out of stock: 409 naming item_id; the code stays usable
            status, body = await scan(client, settings, clock, "carol", codes[2])
            assert (status, body["error"], body["field"]) == (409, "out_of_stock", "item_id")
            status, body = await scan(client, settings, clock, "carol", codes[2])
            assert (status, body["error"]) == (409, "out_of_stock")
            # a refund of a free redemption gives the stock back and credits nothing
            status, body = await call(
                client, "POST", f"/v1/store/redemptions/{red['id']}/refund?network={NET}"
            )
            assert (status, body["redemption"]["status"]) == (200, "refunded"), body
            assert await stock(client, "mug") == 1
            status, body = await scan(client, settings, clock, "carol", codes[2])
            assert (status, body["redemption"]["status"]) == (200, "pending"), body
            status, body = await call(
                client, "POST", f"/v1/store/redemptions/{bob_rid}/fulfil?network={NET}"
            )
            assert (status, body["redemption"]["status"]) == (200, "fulfilled"), body
            # a used item code is used; the tier and a missing item answer the store's codes
            status, body = await scan(client, settings, clock, "dan", codes[1])
            assert (status, body["error"]) == (409, "voucher_used")
            _, gold = await mint(client, count=1, points=0, item="gold", batch="golds")
            status, body = await scan(client, settings, clock, "dan", gold[0])
            assert (status, body["error"], body["field"]) == (403, "tier_too_low", "min_tier")
            _, ghost = await mint(client, count=1, points=0, item="ghost", batch="ghosts")
            status, body = await scan(client, settings, clock, "dan", ghost[0])
            assert (status, body["error"], body["field"]) == (404, "item_not_found", "item_id")
            # every attempt is recorded with its outcome
            _, page = await call(client, "GET", f"/v1/vouchers/attempts?network={NET}&limit=20")
            assert [(a["user_id"], a["outcome"]) for a in reversed(page["attempts"])] == [
                ("alice", "redeemed"), ("alice", "member_limit_reached"), ("bob", "redeemed"),
                ("carol", "out_of_stock"), ("carol", "out_of_stock"), ("carol", "redeemed"),
                ("dan", "voucher_used"), ("dan", "tier_too_low"), ("dan", "item_not_found"),
            ]  # fmt: skip
            status, body = await call(client, "GET", f"/v1/vouchers/batches?network={NET}")
            assert {b["id"]: b["redeemed"] for b in body["batches"]}["mugs"] == 3
            assert not await client.app[VOUCHERS].store.redis.zcard(keys.voucher_pending)
            # the member's cooldown: 429 naming member_cooldown_s, with Retry-After
            await put_item(client, "pin", name="Pin", cost=10, member_cooldown_s=3_600)
            _, pins = await mint(client, count=2, points=0, item="pin", batch="pins")
            assert (await scan(client, settings, clock, "erin", pins[0]))[0] == 200
            target = f"/v1/members/erin/vouchers?network={NET}"
            async with client.post(
                target, json={"code": pins[1]}, headers=token(settings, clock, "erin")
            ) as resp:
                body = await resp.json()
                assert (resp.status, body["error"], body["field"]) == (
                    429, "member_cooldown", "member_cooldown_s",
                ), body  # fmt: skip
                assert 3_500 <= int(resp.headers["Retry-After"]) <= 3_600

    asyncio.run(go())
    assert not audited(deployment, r)
    assert {u: balance(r, keys, u) for u in ("alice", "bob", "carol")} == {
        "alice": 0, "bob": 0, "carol": 0,
    }  # fmt: skip
    assert sorted((n.user_id, n.item, n.points) for n in scanned_notices(r, keys)) == [
        ("alice", "mug", 0), ("bob", "mug", 0), ("carol", "mug", 0), ("erin", "pin", 0),
    ]  # fmt: skip
    assert sorted(n["user_id"] for n in redeemed_notices(r, keys)) == [
        "alice", "bob", "carol", "erin",
    ]  # fmt: skip


def test_concurrent_scans_of_item_codes_make_one_redemption_each(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)
    users = [f"m{i}" for i in range(40)]

    async def go() -> tuple[list[list[tuple[int, Any]]], list[tuple[int, Any]], int | None]:
        async with serve(settings, redis_server.url, clock) as client:
            await put_item(client, "cap", name="Cap", cost=50, stock=100)
            await put_item(client, "last", name="Last one", cost=50, stock=1)
            _, codes = await mint(client, count=2, points=0, item="cap", batch="caps")
            _, lasts = await mint(client, count=2, points=0, item="last", batch="lasts")
            races = [
                await asyncio.gather(*(scan(client, settings, clock, u, codes[0]) for u in users)),
                await asyncio.gather(
                    *(scan(client, settings, clock, "solo", codes[1]) for _ in range(30))
                ),
            ]
            # two codes, one item left: one redemption, one out_of_stock
            last = await asyncio.gather(
                scan(client, settings, clock, "p", lasts[0]),
                scan(client, settings, clock, "q", lasts[1]),
            )
            return races, last, await stock(client, "cap")

    races, last, left = asyncio.run(go())
    for results in races:
        ok = [body for status, body in results if status == 200]
        assert len(ok) == 1, [b for _, b in results if "error" not in b]
        refused = {(status, body["error"]) for status, body in results if status != 200}
        assert refused <= {(409, "voucher_used"), (409, "voucher_pending")}, refused
    assert left == 98
    assert sorted((status, body.get("error", "")) for status, body in last) == [
        (200, ""), (409, "out_of_stock"),
    ]  # fmt: skip
    assert len(redeemed_notices(r, keys)) == 3
    assert len(scanned_notices(r, keys)) == 3
    assert not audited(deployment, r)


def test_an_item_claim_left_pending_is_finished_once_by_a_resume_or_the_sweeper(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A gateway that died after claiming an item code (before or after making the free
    redemption) leaves a pending claim: the member's next scan or a sweeper finishes it with
    the same redemption, never a second one."""
    settings, r, clock = deployment[0], redis_client, Clock()
    keys = Keys(settings.namespace)

    async def go() -> None:
        async with serve(settings, redis_server.url, clock) as client:
            await put_item(client, "tee", name="Tee", cost=80, stock=10)
            _, codes = await mint(client, count=3, points=0, item="tee", batch="crash")
            svc = client.app[VOUCHERS]
            assert svc.shop is not None
            item = await svc.shop.item(NET, "tee")
            assert item is not None
            made = {}
            for serial, user, redeemed in ((0, "dana", False), (1, "dana", True), (2, "hal", True)):
                v = vc.decode(codes[serial])[0]
                claim = await svc.store.claim(
                    NET, "crash", serial, user, now=clock.now, resume_after_s=30,
                    expires_at=v.expires_at, attempt=Attempt(clock.now, NET, user, "", "x"),
                )  # fmt: skip
                assert (claim.outcome, claim.n) == ("claimed", 1)
                if redeemed:  # it died after the store made the redemption
                    rid = redemption_id(NET, user, f"voucher:{v.code_id}#1")
                    red, _, _ = await svc.shop.redeem(item[0], user, rid, voucher=v.code_id)
                    assert red.status == "pending"
                    made[serial] = rid
            status, body = await scan(client, settings, clock, "dana", codes[0])
            assert (status, body["error"]) == (409, "voucher_pending")
            clock.now += 31
            status, body = await scan(client, settings, clock, "dana", codes[0])
            assert (status, body["resumed"], body["redemption"]["status"]) == (200, True, "pending")
            status, body = await scan(client, settings, clock, "dana", codes[1])
            assert (status, body["redemption"]["id"]) == (200, made[1]), body
            assert await svc.sweep() == 1
            assert await svc.sweep() == 0
            status, body = await scan(client, settings, clock, "hal", codes[2])
            assert (status, body["error"]) == (409, "voucher_used")
            reds = await redemptions(client, settings, clock)
            assert sorted(x["user_id"] for x in reds) == ["dana", "dana", "hal"]
            assert made[2] in {x["id"] for x in reds}
            assert await stock(client, "tee") == 7

    asyncio.run(go())
    assert len(scanned_notices(r, keys)) == 3
    assert len(redeemed_notices(r, keys)) == 3
    assert not audited(deployment, r)


def test_the_audit_catches_an_item_code_redeemed_without_its_redemption(
    deployment: tuple[Settings, RallyClient], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings, r, clock = deployment[0], redis_client, Clock()

    async def go() -> str:
        async with serve(settings, redis_server.url, clock) as client:
            await put_item(client, "hat", name="Hat", cost=40)
            _, codes = await mint(client, count=1, points=0, item="hat", batch="hats")
            status, body = await scan(client, settings, clock, "fay", codes[0])
            assert status == 200, body
            return str(body["redemption"]["id"])

    rid = asyncio.run(go())
    assert not audited(deployment, r)
    r.delete(StoreKeys(Keys(settings.namespace), NET).redemption(rid))
    assert audited(deployment, r) == [
        f"voucher:{NET}:hats: code hats/0 redeemed without its free redemption"
    ]
