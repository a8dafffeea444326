"""A shard's commit on a real Redis Cluster whose deployment slot moves to another master (a
reshard): the commit follows it, and a shard keeps applying its stream across the move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from actors.keys import Keys
from actors.lua import Commit, CommitCall, NativeCommit
from actors.redisconn import connect, hmget
from actors.stream import not_the_entry
from tests.cluster import RedisClusterNodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path).start()
    yield nodes
    nodes.stop()


def test_a_commit_follows_the_deployment_slot_to_its_new_master(
    cluster: RedisClusterNodes,
) -> None:
    r = connect(cluster.url)
    keys = Keys("reshard", tagged=True)
    epoch, stream, board = keys.k("epoch", "channel", 0), keys.ingest(0), keys.k("board")
    r.set(epoch, 1)

    def commit(n: int) -> int:
        c = Commit()
        c.cmd("HSET", board, f"f{n}", n)
        last = f"{n}-0".encode()
        call = CommitCall(c, epoch, 1, stream, "shards", keys.offsets, last, [last])
        return NativeCommit(r)(args=call)

    assert commit(1) == 1
    slot = key_slot(board.encode())
    before = cluster.owner(slot)
    after = (before + 1) % len(cluster.nodes)
    cluster.move_slot(slot, after)  # the client's slot map still names the old owner
    assert cluster.owner(slot) == after
    assert commit(2) == 1
    assert commit(2) == 0  # sent again (a lost reply): the offset says it landed
    with redis.Redis(port=cluster.nodes[after].port) as new_owner:
        assert new_owner.hgetall(board) == {b"f1": b"1", b"f2": b"2"}
        assert new_owner.hget(keys.offsets, stream) == b"2-0"
    r.close()


def test_redirects_and_failovers_are_no_fault_of_the_entries() -> None:
    """A reshard or failover mid-commit is retried from the committed state, never
    dead-lettered as the entries' fault (redis-py strips these replies of their code)."""
    from redis._parsers.base import BaseParser

    for reply in ("MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381",
                  "TRYAGAIN Multiple keys request during rehashing of slot",
                  "CLUSTERDOWN The cluster is down", "MASTERDOWN Link with MASTER is down",
                  "BUSY Redis is busy running a script"):  # fmt: skip
        assert not_the_entry(BaseParser.parse_error(reply)), reply
    assert not not_the_entry(BaseParser.parse_error("WRONGTYPE Operation against a key"))


def test_a_packed_hmget_answers_as_the_client_does_across_a_reshard(
    cluster: RedisClusterNodes,
) -> None:
    """actors.redisconn.hmget (what a member shard loads states with) on the deployment's
    slot: the same answer as redis-py's, before and after the slot moves to another master
    (the MOVED reply on its own connection is asked again through the client)."""
    r = connect(cluster.url)
    key = Keys("reshard", tagged=True).mstate
    r.hset(key, mapping={"a": b"\x01", "c": b""})
    fields = ["a", "b", "c"]
    assert hmget(r, key, fields) == r.hmget(key, fields) == [b"\x01", None, b""]
    slot = key_slot(key.encode())
    cluster.move_slot(slot, (cluster.owner(slot) + 1) % len(cluster.nodes))
    assert hmget(r, key, fields) == [b"\x01", None, b""]
    assert hmget(r, key, fields) == [b"\x01", None, b""]  # the client learnt the new owner
    r.close()
