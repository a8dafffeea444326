"""The feed scenario: fan-out of the notices stream to --feed-clients WebSockets.

--feed-clients clients (default 1,000) connect to GET /v1/feed of the bench network, signed
with the bench's API key, from this process. Then --feed-messages notices (store
redemptions, JSON, as the store writes them) are appended to the notices stream in one
pipeline, and the clock runs until every client has received every one of them. The figure
is messages delivered per second (clients x notices / seconds) and the time the last client
took to see the last notice. Clients and gateway share the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from benchmarks.bench import Bench
from gateway.signing import signed_headers

CONNECT_CONCURRENCY = 50
DEADLINE_S = 300.0


async def _connect(session: aiohttp.ClientSession, b: Bench) -> aiohttp.ClientWebSocketResponse:
    cfg = b.rally.config
    target = f"/v1/feed?network={cfg.network}"
    headers = signed_headers(cfg.key, cfg.secret, target=target, method="GET")
    return await session.ws_connect(b.rally.url + target, headers=headers, heartbeat=None)


async def _receive(ws: aiohttp.ClientWebSocketResponse, want: int, prefix: str) -> float:
    got = 0
    while got < want:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"feed socket ended early: {msg.type}")
        if json.loads(msg.data).get("redemption", "").startswith(prefix):
            got += 1
    return time.perf_counter()


def _notice(network: str, prefix: str, i: int, now: float) -> bytes:
    return json.dumps({
        "id": f"{prefix}{i}", "network": network, "user_id": f"fan{i % 97}", "item_id": "mug",
        "item_name": "Mug", "cost": 10, "channel": "c1", "status": "redeemed",
        "created_at": now, "updated_at": now, "spend_key": f"{prefix}{i}",
    }).encode()  # fmt: skip


async def _run(b: Bench, clients: int, messages: int) -> dict[str, Any]:
    prefix = f"fanout{int(time.time() * 1000)}-"
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await _connect(session, b)

        t0 = time.perf_counter()
        sockets = await asyncio.gather(*(one() for _ in range(clients)))
        connect_s = time.perf_counter() - t0
        waiters = [asyncio.create_task(_receive(ws, messages, prefix)) for ws in sockets]
        await asyncio.sleep(0.5)  # every handler is past its handshake and pumping
        now = time.time()
        pipe = b.r.client.pipeline(transaction=False)
        for i in range(messages):
            pipe.xadd(b.rally.keys.notices, {"item_redeemed": _notice(b.rally.config.network,
                                                                      prefix, i, now)})  # fmt: skip
        start = time.perf_counter()
        pipe.execute()
        ends = await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE_S)
        elapsed = max(ends) - start
        for ws in sockets:
            await ws.close()
    delivered = clients * messages
    return {
        "clients": clients,
        "messages": messages,
        "delivered": delivered,
        "connect_s": round(connect_s, 2),
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(delivered / elapsed),
    }


def feed_scenario(b: Bench) -> dict[str, Any]:
    o = b.opts
    b.show(["feed", f"{o.feed_clients:,} clients x {o.feed_messages:,} notices", *[""] * 8])
    summary = asyncio.run(_run(b, o.feed_clients, o.feed_messages))
    line = (
        f"feed fan-out: {summary['clients']:,} clients x {summary['messages']:,} notices = "
        f"{summary['delivered']:,} messages in {summary['elapsed_s']:.2f} s: "
        f"{summary['messages_per_s']:,} messages/s (connect {summary['connect_s']:.1f} s)"
    )
    b.console.print(line)
    return {"status": "ok", "runs": [], "summary": summary, "lines": [line]}
