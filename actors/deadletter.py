"""Dead letters: read them, and put them back where they came from.

A shard moves an entry that failed `max_entry_failures` times to the `deadletter` stream
(actors/stream.py). Each dead letter keeps the source stream, the entry's id there, the
consumer group and shard, the error text, the failure count, when (ts_ms) and the original
fields (msgpack). `retry` appends those fields to the source stream as a new entry and
removes the dead letter, in one script: retrying the same dead letter twice appends once.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import redis

from actors import health
from actors.keys import Keys
from actors.redisconn import text
from actors.stream import fields_decoder

RETRY = r"""
local dl, counts, source, id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
if redis.call('XDEL', dl, id) == 0 then return false end
local new = redis.call('XADD', source, '*', unpack(ARGV, 2))
if redis.call('HINCRBY', counts, source, -1) <= 0 then redis.call('HDEL', counts, source) end
return new
"""
"""KEYS: dead-letter stream, counts hash, source stream. ARGV: dead letter id, field, value, ...
Returns the new entry's id, or nil when the dead letter is gone (already retried)."""

PAGE = 1_000


class DeadLetterError(Exception):
    """A dead letter that cannot be retried (unknown id)."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    """Id in the dead-letter stream."""
    stream: str
    """Source stream, without the namespace."""
    entry_id: str
    """The entry's id in its source stream."""
    group: str
    shard: str
    error: str
    failures: int
    ts_ms: int
    fields: dict[bytes, bytes]


def _decode(keys: Keys, dl_id: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=text(dl_id),
        stream=text(raw.get(b"stream", b"")).removeprefix(keys.prefix),
        entry_id=text(raw.get(b"id", b"")),
        group=text(raw.get(b"group", b"")),
        shard=text(raw.get(b"shard", b"")),
        error=text(raw.get(b"error", b"")),
        failures=int(raw.get(b"failures", 0)),
        ts_ms=int(raw.get(b"ts_ms", 0)),
        fields=fields_decoder.decode(raw[b"fields"]) if b"fields" in raw else {},
    )


def iter_dead_letters(
    r: redis.Redis, keys: Keys, stream: str | None = None
) -> Iterator[DeadLetter]:
    """Every dead letter, oldest first; only those from `stream` (without namespace) if given."""
    key = health.deadletter_key(keys)
    start = "-"
    while True:
        page = r.xrange(key, start, "+", count=PAGE)
        for dl_id, raw in page:
            dl = _decode(keys, dl_id, raw)
            if stream is None or dl.stream == stream:
                yield dl
        if len(page) < PAGE:
            return
        start = "(" + text(page[-1][0])


def retry(r: redis.Redis, keys: Keys, dl_id: str) -> str | None:
    """Append dead letter `dl_id`'s original entry to its source stream (a new entry) and
    remove the dead letter. Returns the new entry id, or None if it was already retried."""
    key = health.deadletter_key(keys)
    try:
        got = r.xrange(key, dl_id, dl_id, count=1)
    except redis.ResponseError as err:
        raise DeadLetterError(f"not a dead letter id: {dl_id!r} ({err})") from None
    if not got:
        return None
    dl_id_b, raw = got[0]
    source = raw.get(b"stream")
    if source is None or b"fields" not in raw:
        raise DeadLetterError(f"dead letter {dl_id} has no source stream or fields")
    flat: list[bytes] = [x for kv in fields_decoder.decode(raw[b"fields"]).items() for x in kv]
    new = r.eval(RETRY, 3, key, health.deadletter_count_key(keys), source, dl_id_b, *flat)
    return None if new is None else text(new)
