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
    notices         group "archive"    offsets[notices|archive] (the sink lands them)
                    group "webhooks"   its pending entries (acknowledged once their
                                       deliveries are stored: actors/event_hooks.py)

The ledger log is the ledger of record until the archive holds it: it is trimmed only when
the archive's consumer group exists and has committed. The notices stream also serves the
feed, which replays the newest `notices_kept` entries to a client resuming with ?after=:
at least those stay whatever the groups did (writers cap it with `MAXLEN ~` NOTICES_MAXLEN
too). A stream with a consumer group not listed here is left alone (whoever added the group
must say what its offset is).
Trimming is exact (what `~` would keep is at most a stream node of 100 entries per stream,
and an exact MINID costs little more: whole nodes are dropped, the one cut in two is
compacted).
"""

from __future__ import annotations

import logging

import redis

from actors.config import RuntimeConfig
from actors.event_hooks import GROUP as WEBHOOKS_GROUP
from actors.keys import Keys
from actors.ledger_sink import GROUP as ARCHIVE_GROUP
from actors.ledger_sink import archive_offset_field
from actors.redisconn import text
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
    bounds = _group_bounds(r, keys, stream, ledger_log)
    if not bounds:
        return None
    ms, seq = min(bounds)
    return f"{ms}-{seq}"


def _group_bounds(
    r: redis.Redis, keys: Keys, stream: str, ledger_log: bool
) -> list[tuple[int, int]] | None:
    """Per consumer group of `stream`, the smallest id it may still need; [] if it has no
    group, None when nothing may be trimmed (no such stream, a group that has committed
    nothing, or one the trimmer does not know)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        return None
    names = [text(g["name"]) for g in groups]
    if ledger_log and ARCHIVE_GROUP not in names:
        return None
    bounds: list[tuple[int, int]] = []
    fields: list[str] = []
    for group, name in zip(groups, names, strict=True):
        if name == WEBHOOKS_GROUP and stream == keys.notices:
            bounds.append(_acknowledged_bound(r, stream, group))
            continue
        f = _field(stream, name, ledger_log)
        if f is None:
            if (stream, name) not in _warned:  # once: the trimmer runs every second
                _warned.add((stream, name))
                log.warning("not trimming %s: unknown consumer group %r", stream, name)
            return None
        fields.append(f)
    if fields:
        pipe = r.pipeline(transaction=False)
        for f in fields:
            pipe.hget(keys.offsets, f)
        committed = pipe.execute()
        if any(c is None for c in committed):
            return None
        bounds += [(ms, seq + 1) for ms, seq in (stream_id(c) for c in committed)]
    return bounds


def _acknowledged_bound(r: redis.Redis, stream: str, group: dict[str, object]) -> tuple[int, int]:
    """The smallest id a group that acknowledges what it is done with (XACK) may still
    need: its oldest pending entry, or the one after the last delivered to it."""
    if int(str(group["pending"])):
        summary = r.xpending(stream, text(group["name"]))
        return stream_id(summary["min"])
    ms, seq = stream_id(text(group["last-delivered-id"]))
    return ms, seq + 1


MARK_SPACING = 16
"""The trimmer notes where the notices stream stands at most this many times per `kept`
entries appended, and at most once a run: beyond the newest `kept`, it keeps the larger of
`kept / MARK_SPACING` and what was appended between two runs."""


def trim_notices(r: redis.Redis, keys: Keys, kept: int) -> int:
    """Trim the notices stream to what its consumer groups have not committed, keeping at
    least the newest `kept` entries for the feed; returns the entries removed.

    Where the newest `kept` begin is found without reading them (a walk over 1,000 entries
    of reward notices held Redis ~7 ms, over 100,000 1.6 s): each call notes the stream's
    entries-added count and last id (XINFO STREAM) in `noticemarks`, and the newest mark at
    least `kept` entries old is the floor."""
    stream, marks_key = keys.notices, keys.notice_marks
    try:
        info = r.xinfo_stream(stream)
    except redis.ResponseError:  # no such stream
        return 0
    added, last = info.get("entries-added"), text(info["last-generated-id"])
    if added is None:  # Redis before 7.0 does not count: the writers' cap only
        return 0
    marks = [_mark(m) for m in r.lrange(marks_key, 0, -1)]
    if marks and marks[0][0] > added:  # the stream was deleted and made again
        r.delete(marks_key)
        marks = []
    if not marks or added - marks[0][0] >= max(1, kept // MARK_SPACING):
        r.lpush(marks_key, f"{added} {last}")
        marks.insert(0, (added, last))
    old = next((i for i, (n, _) in enumerate(marks) if added - n >= kept), None)
    if old is None:
        return 0
    if old < len(marks) - 1:
        r.ltrim(marks_key, 0, old)  # older marks can never be the floor again
    if int(info["length"]) <= kept:
        return 0
    bounds = _group_bounds(r, keys, stream, ledger_log=False)
    if bounds is None:
        return 0
    ms, seq = stream_id(marks[old][1])
    ms, seq = min([(ms, seq + 1), *bounds])
    return int(r.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))


def _mark(raw: bytes) -> tuple[int, str]:
    n, _, entry_id = raw.decode().partition(" ")
    return int(n), entry_id


def trim_streams(r: redis.Redis, keys: Keys, cfg: RuntimeConfig) -> dict[str, int]:
    """Trim ingest, credits, ledgerlog and notices streams to what every consumer
    committed; returns the entries removed per stream."""
    streams = [(keys.ingest(p), False) for p in range(cfg.channel_shards)]
    streams += [(keys.credits(m), False) for m in range(cfg.member_shards)]
    streams += [(keys.ledgerlog(m), True) for m in range(cfg.member_shards)]
    out: dict[str, int] = {}
    for stream, ledger_log in streams:
        min_id = safe_min_id(r, keys, stream, ledger_log)
        if min_id is not None:
            out[stream] = int(r.xtrim(stream, minid=min_id, approximate=False))
    notices = trim_notices(r, keys, cfg.notices_kept)
    if notices:
        out[keys.notices] = notices
    return out
