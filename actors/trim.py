"""Stream trimming: drop stream entries every consumer has committed, and nothing else.

A consumer commits the id of the last entry it applied (its offset, in the offsets hash)
atomically with what it produced; after a crash it acknowledges, without applying, every
entry at or below that offset. So an entry at or below the offset of every consumer group
of its stream is never needed again, and `XTRIM MINID` just above the smallest of those
offsets removes only such entries. A restarted shard still finds everything it has not
committed.

    ingest:{p}      group "shards"     offsets[ingest:{p}]
    credits:{m}     group "shards"     offsets[credits:{m}]
    ingest:{p}      group "archive"    offsets[ingest:{p}|archive] (the sink's events)
    ledgerlog:{m}   group "projector"  offsets[ledgerlog:{m}]
                    group "archive"    offsets[ledgerlog:{m}|archive]

The ledger log is the ledger of record until the archive holds it: it is trimmed only when
the archive's consumer group exists and has committed. A stream with a consumer group not
listed here is left alone (whoever added the group must say what its offset is).
Trimming is exact (what `~` would keep is at most a stream node of 100 entries per stream,
and an exact MINID costs little more: whole nodes are dropped, the one cut in two is
compacted).
"""

from __future__ import annotations

import logging

import redis

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.ledger_sink import GROUP as ARCHIVE_GROUP
from actors.ledger_sink import archive_offset_field
from actors.shards import ChannelShard, LedgerProjector
from engine.streamid import stream_id

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def _field(stream: str, group: str, ledger_log: bool) -> str | None:
    """The offsets hash field of `group`'s committed offset on `stream`; None if unknown."""
    if group == ChannelShard.group and not ledger_log:  # channel and member shards
        return stream
    if ledger_log and group == LedgerProjector.group:
        return stream
    if group == ARCHIVE_GROUP:  # the ledger sink: ledger logs and accepted events
        return archive_offset_field(stream)
    return None


def safe_min_id(r: redis.Redis, keys: Keys, stream: str, ledger_log: bool) -> str | None:
    """The id below which every consumer group of `stream` has committed everything
    (as a MINID argument), or None when nothing may be trimmed."""
    try:
        groups = [g["name"] for g in r.xinfo_groups(stream)]
    except redis.ResponseError:  # no such stream
        return None
    names = [g.decode() if isinstance(g, bytes) else str(g) for g in groups]
    if not names or (ledger_log and ARCHIVE_GROUP not in names):
        return None
    fields: list[str] = []
    for group in names:
        f = _field(stream, group, ledger_log)
        if f is None:
            if (stream, group) not in _warned:  # once: the trimmer runs every second
                _warned.add((stream, group))
                log.warning("not trimming %s: unknown consumer group %r", stream, group)
            return None
        fields.append(f)
    pipe = r.pipeline(transaction=False)
    for f in fields:
        pipe.hget(keys.offsets, f)
    committed = pipe.execute()
    if any(c is None for c in committed):
        return None
    ms, seq = min(stream_id(c) for c in committed if c is not None)
    return f"{ms}-{seq + 1}"


def trim_streams(r: redis.Redis, keys: Keys, cfg: RuntimeConfig) -> dict[str, int]:
    """Trim ingest, credits and ledgerlog streams to what every consumer committed;
    returns the entries removed per stream."""
    streams = [(keys.ingest(p), False) for p in range(cfg.channel_shards)]
    streams += [(keys.credits(m), False) for m in range(cfg.member_shards)]
    streams += [(keys.ledgerlog(m), True) for m in range(cfg.member_shards)]
    out: dict[str, int] = {}
    for stream, ledger_log in streams:
        min_id = safe_min_id(r, keys, stream, ledger_log)
        if min_id is not None:
            out[stream] = int(r.xtrim(stream, minid=min_id, approximate=False))
    return out
