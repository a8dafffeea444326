"""One way to open Redis: a single server (or a primary) and a Redis Cluster alike.

`connect(url)` asks the server at `url` once per process whether it is a Redis Cluster
node (`INFO cluster`) and opens a `redis.cluster.RedisCluster` when it is, so that one
`[redis] url` naming any node of an existing cluster is all a deployment sets. On a
cluster every key of a deployment carries the hash tag of its namespace (Keys.of in
actors/keys.py), so that each script, transaction and multi-key read touches one hash slot,
which Redis Cluster requires.

The answer is taken once per process, when its first client opens. A server that did not
answer then is taken for a single one (clients open lazily, and the gateway starts while
Redis is down): a process started while the cluster node it names is unreachable would use
untagged keys, and fail on the keys of other nodes, until it restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

UNBOUNDED = 2**31
"""redis-py's own default bound of a connection pool."""

_cluster: dict[str, bool] = {}


def text(value: object) -> str:
    """A reply's bytes (or anything else) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_cluster(url: str) -> bool:
    """Whether the server at `url` runs with `cluster-enabled yes`, asked once per process.
    A server that does not answer is taken for a single one, and asked again next time:
    clients open lazily, and a single server is what an unreachable URL has always meant."""
    if url not in _cluster:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=10) as probe:
                info = probe.info("cluster")
        except redis.ConnectionError:
            return False
        except redis.ResponseError:  # INFO refused (a managed service's ACL): not a cluster
            info = {}
        _cluster[url] = bool(info.get("cluster_enabled"))
    return _cluster[url]


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A client for `url`: a `RedisCluster` when the server is a cluster node. Callers use
    the commands both share (the cluster client routes each by its key's slot)."""
    if is_cluster(url):
        return cast(redis.Redis, RedisCluster.from_url(url, **kwargs))
    return redis.Redis.from_url(url, **kwargs)


def pool_for(r: redis.Redis, key: str) -> redis.ConnectionPool:
    """The connection pool of the server that holds `key` (`connection_for` takes a
    connection of one's own from it)."""
    if isinstance(r, RedisCluster):
        node = r.get_node_from_key(key)
        return cast(redis.ConnectionPool, r.get_redis_connection(node).connection_pool)
    return r.connection_pool


def slot_moved(r: redis.Redis, err: redis.exceptions.MovedError) -> bool:
    """Tell a cluster client that a slot moved (a MOVED reply to a command sent on a connection
    of one's own), so that its next `pool_for` names the new owner. False when `r` is not a
    cluster client (a single server never moves a slot)."""
    if not isinstance(r, RedisCluster):
        return False
    r.nodes_manager.move_slot(err)
    return True


RETRIED_THROUGH_CLIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""Errors of a read sent on a connection of one's own that the client itself knows how to
retry (reconnect, follow a moved or migrating slot, wait for the cluster)."""


@contextmanager
def connection_for(r: redis.Redis, key: str) -> Iterator[Any]:
    """A connection of its own to the server that holds `key`, for commands packed and read
    by the caller (actors.lua.NativeCommit's MULTI/EXEC, `hmget`). On any error it is
    disconnected before it goes back to the pool: what is still on the wire is unknown."""
    pool = pool_for(r, key)
    conn = pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def hmget(r: redis.Redis, key: str, fields: Sequence[str]) -> list[bytes | None]:
    """`r.hmget(key, fields)`, packed by hiredis in one call: redis-py encodes each argument
    in Python (~1 µs a field, what a watch tick's member shard paid for each new viewer).
    Sent on a connection of the key's server; a reply that cannot be trusted (a broken
    connection, a moved or migrating slot) is asked again through `r`, which knows how to."""
    try:
        with connection_for(r, key) as conn:
            conn.send_packed_command([hiredis.pack_command(("HMGET", key, *fields))])
            return cast(list[bytes | None], conn.read_response())
    except RETRIED_THROUGH_CLIENT:
        return cast(list[bytes | None], r.hmget(key, fields))


def connect_async(
    url: str,
    *,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
    **kwargs: Any,
) -> aioredis.Redis:
    """The asyncio client for `url`, a cluster one when the server is a cluster node.

    `max_connections` bounds a single server's pool, and callers then wait up to
    `pool_timeout` for a free connection (a blocking pool). A cluster client cannot wait: past
    its bound (100 per node by default) it refuses a command. So it is left unbounded, as a
    single server's client without `max_connections` is."""
    if is_cluster(url):
        return cast(
            aioredis.Redis, AsyncRedisCluster.from_url(url, max_connections=UNBOUNDED, **kwargs)
        )
    if max_connections is None:
        return aioredis.Redis.from_url(url, **kwargs)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **kwargs
    )
    return aioredis.Redis.from_pool(pool)  # the client owns its pool: aclose() disconnects it
