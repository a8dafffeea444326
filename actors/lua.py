"""The fenced, atomic, idempotent batch commit: one script call carries a batch's writes.

A shard collects its writes as plain commands, then COMMIT runs them in Redis atomically
together with the stream offset and the acknowledgements, but only while the shard's
fencing epoch is still current. Arguments are flat (no decoding in Lua). Full key names
are passed in ARGV (single-node Redis; a Redis Cluster port would hash-tag keys per shard).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

COMMIT = r"""
local a = ARGV
local epoch_key, epoch, stream, group, offsets, last_id = a[1], a[2], a[3], a[4], a[5], a[6]
if redis.call('GET', epoch_key) ~= epoch then
  return redis.error_reply('FENCED ' .. epoch_key)
end
-- idempotent: a commit re-sent after a timeout (its first send applied) changes nothing
local prev = redis.call('HGET', offsets, stream)
if prev then
  local pms, pseq = string.match(prev, '^(%d+)-(%d+)$')
  local lms, lseq = string.match(last_id, '^(%d+)-(%d+)$')
  pms, pseq, lms, lseq = tonumber(pms), tonumber(pseq), tonumber(lms), tonumber(lseq)
  if lms < pms or (lms == pms and lseq <= pseq) then return 0 end
end
local cmds = cmsgpack.unpack(a[7])
-- binary values travel concatenated in ARGV[9], their lengths in ARGV[8] (msgpack);
-- {k} in a command stands for the k-th of them
local data, starts = a[9], {1}
for k, n in ipairs(cmsgpack.unpack(a[8])) do starts[k + 1] = starts[k] + n end
for _, c in ipairs(cmds) do
  for k = 2, #c do
    local v = c[k]
    if type(v) == 'table' then c[k] = string.sub(data, starts[v[1]], starts[v[1] + 1] - 1) end
  end
  if c[1] == 'HMAX' then  -- HMAX key field value: keep the larger number
    local cur = tonumber(redis.call('HGET', c[2], c[3]) or '0')
    if c[4] > cur then redis.call('HSET', c[2], c[3], c[4]) end
  elseif c[1] == 'SEAL' then  -- SEAL key: rewrite a string at its exact size (APPEND over-allocates)
    local v = redis.call('GET', c[2])
    if v then redis.call('SET', c[2], v, 'KEEPTTL') end
  else
    redis.call(unpack(c))
  end
end
redis.call('HSET', offsets, stream, last_id)
local first = 10
local na = #a - first + 1
local j = 0
while j < na do
  local n = math.min(4000, na - j)
  redis.call('XACK', stream, group, unpack(a, first + j, first + j + n - 1))
  j = j + n
end
return 1
"""

CHUNK_ARGS = 4_000
"""Most values one command carries (Lua's unpack has a stack limit near 8,000)."""

Arg = bytes | str | int | float


_encoder = msgspec.msgpack.Encoder()


class Commit:
    """A batch's writes, collected as commands and run by COMMIT in one atomic call.

    The commands travel as one msgpack blob (packing a million separate arguments in
    Python costs more than the writes). Lua's cmsgpack reads no msgpack `bin`, so binary
    values travel concatenated in one argument, referred to as `[k]` (the k-th blob).
    Besides Redis commands, COMMIT knows `HMAX key field value` (keep the larger number)
    and `SEAL key` (rewrite a string at its exact size: APPEND leaves up to as much again
    allocated, for the appends to come).
    """

    def __init__(self) -> None:
        self.cmds: list[tuple[object, ...]] = []
        self.blobs: list[bytes] = []

    def _ref(self, value: Arg) -> object:
        if type(value) is bytes:
            self.blobs.append(value)
            return (len(self.blobs),)
        return value

    def cmd(self, *args: Arg) -> None:
        self.cmds.append(tuple(map(self._ref, args)))

    def pairs(self, name: str, key: str, fields: Sequence[str], blobs: Sequence[bytes]) -> None:
        """`name key field1 blob1 field2 blob2 ...` (HSET of binary values), chunked."""
        base = len(self.blobs)
        self.blobs.extend(blobs)
        step = CHUNK_ARGS // 2
        for start in range(0, len(fields), step):
            flat: list[object] = [name, key]
            for i in range(start, min(start + step, len(fields))):
                flat.append(fields[i])
                flat.append((base + i + 1,))
            self.cmds.append(tuple(flat))

    def push(self, key: str, blobs: Sequence[bytes]) -> None:
        """RPUSH key blob ..., chunked."""
        base = len(self.blobs)
        self.blobs.extend(blobs)
        for start in range(0, len(blobs), CHUNK_ARGS):
            end = min(start + CHUNK_ARGS, len(blobs))
            self.cmds.append(("RPUSH", key, *[(base + i + 1,) for i in range(start, end)]))

    def many(self, name: str, key: str, values: Sequence[Arg], width: int = 1) -> None:
        """`name key v1 v2 ...` split into commands of at most CHUNK_ARGS values."""
        step = (CHUNK_ARGS // width) * width
        ref = self._ref
        for start in range(0, len(values), step):
            self.cmds.append((name, key, *map(ref, values[start : start + step])))

    def args(
        self, epoch_key: str, epoch: int, stream: str, group: str, offsets: str,
        last_id: bytes, acks: Sequence[bytes],
    ) -> list[Arg]:  # fmt: skip
        blob = _encoder.encode(self.cmds)
        lengths = _encoder.encode([len(b) for b in self.blobs])
        head: list[Arg] = [epoch_key, epoch, stream, group, offsets, last_id, blob, lengths]
        return [*head, b"".join(self.blobs), *acks]
