"""actors.redisconn against a real redis-server."""

from __future__ import annotations

import asyncio

from actors.redisconn import connect_async
from gateway.redis_server import RedisServer


def test_a_bounded_async_client_disconnects_its_pool_when_closed(
    redis_server: RedisServer,
) -> None:
    """A client with max_connections builds its own pool: closing the client must close
    the pool's connections too, or each is left to the collector (ResourceWarning: unclosed
    Connection) when a gateway or a benchmark stops."""

    async def run() -> list[bool]:
        r = connect_async(redis_server.url, max_connections=4, pool_timeout=5)
        await asyncio.gather(*(r.ping() for _ in range(8)))
        pool = r.connection_pool
        conns = [*pool._available_connections, *pool._in_use_connections]  # type: ignore[attr-defined]
        assert conns, "the pings opened connections"
        assert any(c.is_connected for c in conns)
        await r.aclose()
        return [c.is_connected for c in conns]

    assert not any(asyncio.run(run()))
