"""The fenced, atomic batch commit: one script call carries all of a batch's writes.

A shard collects its writes as plain commands, then COMMIT runs them in Redis atomically
together with the stream offset and the acknowledgements, but only while the shard's
fencing epoch is still current. Arguments are flat (no decoding in Lua). Full key names
are passed in ARGV (single-node Redis; a Redis Cluster port would hash-tag keys per shard).
"""

from __future__ import annotations

from collections.abc import Sequence

COMMIT = r"""
local a = ARGV
local epoch_key, epoch, stream, group, offsets, last_id = a[1], a[2], a[3], a[4], a[5], a[6]
if redis.call('GET', epoch_key) ~= epoch then
  return redis.error_reply('FENCED ' .. epoch_key)
end
local i = 8
for _ = 1, tonumber(a[7]) do
  local argc = tonumber(a[i])
  if a[i + 1] == 'HMAX' then  -- HMAX key field value: keep the larger number
    local cur = tonumber(redis.call('HGET', a[i + 2], a[i + 3]) or '0')
    if tonumber(a[i + 4]) > cur then redis.call('HSET', a[i + 2], a[i + 3], a[i + 4]) end
  else
    redis.call(unpack(a, i + 1, i + argc))
  end
  i = i + argc + 1
end
redis.call('HSET', offsets, stream, last_id)
local na = tonumber(a[i]); i = i + 1
local j = 0
while j < na do
  local n = math.min(4000, na - j)
  redis.call('XACK', stream, group, unpack(a, i + j, i + j + n - 1))
  j = j + n
end
return 1
"""

CHUNK_ARGS = 4_000
"""Most values one command carries (Lua's unpack has a stack limit near 8,000)."""

Arg = bytes | str | int | float


class Commit:
    """A batch's writes, collected as commands and run by COMMIT in one atomic call.

    Besides Redis commands, COMMIT knows `HMAX key field value` (keep the larger number).
    """

    def __init__(self) -> None:
        self.cmds: list[Arg] = []
        self.count = 0

    def cmd(self, *args: Arg) -> None:
        self.cmds.append(len(args))
        self.cmds.extend(args)
        self.count += 1

    def many(self, name: str, key: str, values: Sequence[Arg], width: int = 1) -> None:
        """`name key v1 v2 ...` split into commands of at most CHUNK_ARGS values."""
        step = (CHUNK_ARGS // width) * width
        for start in range(0, len(values), step):
            self.cmd(name, key, *values[start : start + step])

    def args(
        self, epoch_key: str, epoch: int, stream: str, group: str, offsets: str,
        last_id: bytes, acks: Sequence[bytes],
    ) -> list[Arg]:  # fmt: skip
        return [epoch_key, epoch, stream, group, offsets, last_id, self.count, *self.cmds,
                len(acks), *acks]  # fmt: skip
