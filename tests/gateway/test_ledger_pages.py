"""Ledger pages through the gateway across the boundary between the ledger log's entries
the archive does not hold yet and the DuckDB archive that holds the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from actors.client import RallyClient
from actors.keys import Keys
from actors.shards import ledger_encoder
from actors.trim import trim_streams
from engine.events import Chat, Event, Join, Online
from engine.ledger import Entry, member_account, treasury_account
from engine.reference import Reference
from gateway.redis_server import RedisServer
from tests.actors.conftest import append

from .helpers import get, make_settings, serve

T0 = 1_795_000_000.0
RECENT = 5


def traffic(chats: int) -> list[Event]:
    events: list[Event] = [
        Online(id="on", network="demo", channel="c1", ts=T0),
        Join(id="j", network="demo", channel="c1", user_id="u1", ts=T0 + 1),
        Join(id="j2", network="demo", channel="c1", user_id="u2", ts=T0 + 1),
    ]
    for i in range(chats):  # a chat every 31 s: past the 30 s cooldown, each pays
        for u in ("u1", "u2"):
            ts = T0 + 2 + 31 * i
            events.append(Chat(id=f"{u}-{i}", network="demo", channel="c1", user_id=u, ts=ts))
    return events


def test_pages_cross_from_the_log_into_the_archive(
    ray_cluster: None, redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    settings = make_settings(namespace).model_copy(update={"data_dir": tmp_path})
    cfg = settings.runtime(redis_server.url)
    client = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    events = traffic(chats=20)
    try:
        append(r, cfg, events)
        assert client.wait_idle(60)
        trim_streams(r, keys, cfg)  # the ledger log is gone: the archive is the record
        assert r.xlen(keys.ledgerlog(0)) == r.xlen(keys.ledgerlog(1)) == 0
    finally:
        client.stop()
    ref = Reference(settings.rulebook(), settings.limits.lateness_s)
    ref.ingest(events, 0.0)
    ref.finish()
    archived = [e.id for e in reversed(ref.ledger[("demo", "u1")])]
    assert len(archived) > 4 * RECENT
    # the sink is stopped: entries logged now stay in the log, the page's unarchived tail
    account = member_account("demo", "u1")
    fresh = [
        Entry(
            f"late{i}",
            T0 + 10_000 + i,
            "demo",
            treasury_account("demo"),
            account,
            1,
            "custom",
            "c1",
        )
        for i in range(RECENT)
    ]
    # ids past both streams' last and apart: "*" ids of two streams can coincide (one ms)
    last = max(int(r.xinfo_stream(keys.ledgerlog(m))["last-generated-id"].split(b"-")[0])
               for m in (0, 1))  # fmt: skip
    r.xadd(keys.ledgerlog(0), {"l": ledger_encoder.encode(fresh[:2]), "n": 2}, id=f"{last + 1}-0")
    r.xadd(keys.ledgerlog(1), {"l": ledger_encoder.encode(fresh[2:]), "n": RECENT - 2},
           id=f"{last + 2}-0")  # fmt: skip
    expected = [e.id for e in reversed(fresh)] + archived

    async def go() -> None:
        async with serve(settings, redis_server.url) as http:

            async def page(query: str) -> dict[str, Any]:
                status, body = await get(http, f"/v1/members/u1/ledger?network=demo&{query}")
                assert status == 200, body
                return dict(body)

            for limit in (1, 3, RECENT, 7, 50):
                got: list[str] = []
                cursor: int | None = 0
                while cursor is not None:
                    p = await page(f"limit={limit}&cursor={cursor}")
                    got += [e["id"] for e in p["entries"]]
                    cursor = p["next_cursor"]
                assert got == expected, limit
            straddle = await page(f"limit=4&cursor={RECENT - 2}")  # 2 from the log, 2 archived
            assert [e["id"] for e in straddle["entries"]] == expected[RECENT - 2 : RECENT + 2]
            assert straddle["entries"][2]["credit"] == "member:demo:u1"
            past = await page(f"limit=3&cursor={len(expected) - 1}")
            assert ([e["id"] for e in past["entries"]], past["next_cursor"]) == (
                expected[-1:],
                None,
            )
            beyond = await page(f"limit=3&cursor={len(expected) + 10}")
            assert beyond == {"entries": [], "next_cursor": None}

    asyncio.run(go())
