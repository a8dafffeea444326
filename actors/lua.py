"""The fenced, atomic, idempotent batch commit: one transaction carries a batch's writes.

A shard collects its writes as plain commands (`Commit`), then `NativeCommit` runs them in
Redis atomically (MULTI/EXEC) together with the stream offset and the acknowledgements, but
only while the shard's fencing epoch is still current (WATCH). Full key names are used
(single-node Redis; a Redis Cluster port would hash-tag keys per shard).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import hiredis
import redis
from redis._parsers.base import BaseParser

from actors.redisconn import connection_for, slot_moved
from engine.streamid import stream_id

CHUNK_ARGS = 4_000
"""Most values one command carries (a command of a million values would be one long write)."""

Arg = bytes | str | int | float


class Commit:
    """A batch's writes, collected as plain commands, run atomically with the shard's offset
    and acknowledgements by `NativeCommit`.

    Besides Redis commands, a commit knows `HMAX key field value` (keep the larger number)
    and `SEAL key` (rewrite a string at its exact size: APPEND leaves up to as much again
    allocated, for the appends to come).
    """

    def __init__(self) -> None:
        self.cmds: list[tuple[Arg, ...]] = []

    def cmd(self, *args: Arg) -> None:
        self.cmds.append(args)

    def pairs(self, name: str, key: str, fields: Sequence[str], blobs: Sequence[bytes]) -> None:
        """`name key field1 blob1 field2 blob2 ...` (HSET of binary values), chunked."""
        step = CHUNK_ARGS // 2
        for start in range(0, len(fields), step):
            flat: list[Arg] = [name, key]
            for i in range(start, min(start + step, len(fields))):
                flat.append(fields[i])
                flat.append(blobs[i])
            self.cmds.append(tuple(flat))

    def push(self, key: str, blobs: Sequence[bytes]) -> None:
        """RPUSH key blob ..., chunked."""
        for start in range(0, len(blobs), CHUNK_ARGS):
            self.cmds.append(("RPUSH", key, *blobs[start : start + CHUNK_ARGS]))

    def many(self, name: str, key: str, values: Sequence[Arg], width: int = 1) -> None:
        """`name key v1 v2 ...` split into commands of at most CHUNK_ARGS values."""
        step = (CHUNK_ARGS // width) * width
        for start in range(0, len(values), step):
            self.cmds.append((name, key, *values[start : start + step]))


HMAX = """local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0"""
SEAL = """local v = redis.call('GET', KEYS[1])
if v then redis.call('SET', KEYS[1], v, 'KEEPTTL') end
return 0"""


MOVED_RETRIES = 1
"""Times a commit refused with MOVED is sent again, to the slot's new owner."""


class CommitCall(NamedTuple):
    """What one fenced commit needs: the writes, the fencing epoch and the stream position."""

    commit: Commit
    epoch_key: str
    epoch: int
    stream: str
    group: str
    offsets: str
    last_id: bytes
    acks: Sequence[bytes]


class NativeCommit:
    """Runs a Commit as one MULTI/EXEC on one connection, fenced and idempotent, without a
    Lua interpreter between the shard and its writes (a command runs at its native cost;
    in the Lua commit it replaced each also paid for its msgpack decoding and
    `redis.call`).

    Round trip 1: WATCH the shard's epoch key, read it and the committed offset. A stale
    epoch raises `FENCED`; an offset at or past `last_id` (a commit re-sent after a lost
    reply) returns 0 and writes nothing. Round trip 2: MULTI, the writes, the offset, the
    XACKs, EXEC. A newer instance that bumps the epoch in between makes EXEC abort
    (nothing written): `FENCED` as well. A command Redis refuses while queueing (OOM, a bad
    argument) aborts the whole transaction (EXECABORT); one failing while EXEC runs is
    raised after it.
    """

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def __call__(self, *, args: CommitCall) -> int:
        """On a Redis Cluster whose slot moved to another master (a reshard), the commit is
        sent again to the new owner, once: a MOVED reply means nothing was written (WATCH,
        or every queued command, was refused: EXECABORT)."""
        for attempt in range(MOVED_RETRIES + 1):
            try:
                with connection_for(self.r, args.epoch_key) as conn:
                    return self._run(conn, args)
            except redis.exceptions.MovedError as err:
                if attempt == MOVED_RETRIES or not slot_moved(self.r, err):
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _run(conn: Any, a: CommitCall) -> int:
        pack = hiredis.pack_command
        conn.send_packed_command(
            [pack(("WATCH", a.epoch_key)), pack(("GET", a.epoch_key)),
             pack(("HGET", a.offsets, a.stream))]
        )  # fmt: skip
        conn.read_response()
        epoch, prev = conn.read_response(), conn.read_response()
        stale = epoch is None or int(epoch) != a.epoch
        if stale or (prev is not None and stream_id(prev) >= stream_id(a.last_id)):
            conn.send_packed_command([pack(("UNWATCH",))])
            conn.read_response()
            if stale:
                raise redis.ResponseError(f"FENCED {a.epoch_key}")
            return 0
        out = [pack(("MULTI",))]
        for cmd in a.commit.cmds:
            name = cmd[0]
            if name == "HMAX":
                cmd = ("EVAL", HMAX, 1, *cmd[1:])
            elif name == "SEAL":
                cmd = ("EVAL", SEAL, 1, cmd[1])
            out.append(pack(cmd))
        out.append(pack(("HSET", a.offsets, a.stream, a.last_id)))
        acks = a.acks
        for start in range(0, len(acks), CHUNK_ARGS):
            out.append(pack(("XACK", a.stream, a.group, *acks[start : start + CHUNK_ARGS])))
        out.append(pack(("EXEC",)))
        conn.send_packed_command(coalesce(out))
        refused, replies = _read_replies(conn, len(out))
        if isinstance(replies, hiredis.ReplyError):  # EXECABORT: nothing was written
            raise _error(refused or replies)
        if replies is None:  # the epoch key changed after WATCH: a newer instance
            raise redis.ResponseError(f"FENCED {a.epoch_key}")
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise _error(reply)
        return 1


COALESCE_BYTES = 1 << 16
"""Packed commands are joined into writes of about this size (one `sendall` each)."""


def coalesce(packed: list[bytes], size: int = COALESCE_BYTES) -> list[bytes]:
    """The commit's packed commands as a few writes: runs of small ones joined up to `size`
    bytes, each large one (a state HSET of thousands of fields, a ledger blob) as it is. One
    join of everything copied a large commit (a million-viewer tick's is ~200 MB) once more."""
    writes: list[bytes] = []
    run: list[bytes] = []
    run_bytes = 0
    for cmd in packed:
        if len(cmd) >= size:
            if run:
                writes.append(b"".join(run))
                run, run_bytes = [], 0
            writes.append(cmd)
            continue
        run.append(cmd)
        run_bytes += len(cmd)
        if run_bytes >= size:
            writes.append(b"".join(run))
            run, run_bytes = [], 0
    if run:
        writes.append(b"".join(run))
    return writes


READ_CHUNK = 1 << 16


def _error(reply: hiredis.ReplyError) -> redis.RedisError:
    """A Redis error reply as redis-py raises it (OOM, READONLY, ... get their own class)."""
    return BaseParser.parse_error(str(reply))  # type: ignore[no-any-return]


def _read_replies(conn: Any, n: int) -> tuple[hiredis.ReplyError | None, Any]:
    """Read `n` replies off `conn`'s socket: the first error among all but the last, and
    the last (EXEC's). The others are MULTI's OK and a QUEUED per command, or the error
    that makes EXEC answer EXECABORT: read in C by a reader of our own rather than one
    redis-py call each (a commit can queue a hundred thousand commands). redis-py's own
    reader holds nothing at this point: every reply before was read."""
    sock = conn._sock
    if sock is None:
        raise redis.ConnectionError("connection closed")
    reader = hiredis.Reader()
    buf = bytearray(READ_CHUNK)
    last: Any = None
    refused: hiredis.ReplyError | None = None
    while n:
        reply = reader.gets()
        if reply is False:
            try:
                got = sock.recv_into(buf)
            except TimeoutError as err:
                raise redis.TimeoutError("timeout reading the commit's replies") from err
            except OSError as err:
                raise redis.ConnectionError(f"reading the commit's replies: {err}") from err
            if not got:
                raise redis.ConnectionError("connection closed by the server")
            reader.feed(buf, 0, got)
            continue
        if n > 1 and refused is None and isinstance(reply, hiredis.ReplyError):
            refused = reply
        last = reply
        n -= 1
    return refused, last
