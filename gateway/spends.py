"""The gateway process's spend client (actors/spend.py), shared by every route that spends:
the store, raffles, vouchers. `app[SPENDS].submit(transfer)` answers once the member's
shard has made the transfer durable (engine/spend.py Result)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from actors.keys import Keys
from actors.redisconn import connect_async
from actors.spend import SpendClient
from gateway.settings import Settings

SPENDS = web.AppKey("spends", SpendClient)
MAX_CONNECTIONS = 512
"""Redis connections of the spend client and the routes that spend: past them a request
waits for one (a blocking pool) instead of failing."""
REDIS_TIMEOUT_S = 10.0


def install_spends(
    app: web.Application,
    settings: Settings,
    redis_url: str,
    keys: Keys,
    clock: Callable[[], float] = time.time,
) -> SpendClient:
    """The process's SpendClient, on its own pool of Redis connections (one of them is
    always held by the reply reader's blocking read)."""
    client = connect_async(
        redis_url,
        max_connections=MAX_CONNECTIONS,
        pool_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    spends = SpendClient(
        client, keys, settings.shards.member, timeout_s=settings.spend.timeout_s, clock=clock
    )
    app[SPENDS] = spends

    async def running(app: web.Application) -> AsyncIterator[None]:
        yield
        await spends.close()
        await client.aclose()

    app.cleanup_ctx.append(running)
    return spends
