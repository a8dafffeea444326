"""The ledger sink: the one writer of the DuckDB ledger archive (analytics/archive.py).

It reads every ledger log stream (`ledgerlog:{m}`), every ingest stream (`ingest:{p}`: the
accepted events) and the `notices` stream (tier changes, voucher scans, raffle draws, store
redemptions) through its own consumer group ("archive") and lands their rows in the archive
in Arrow batches (analytics/landing.py for events and notices), exactly once: the
archive stores the last stream id per stream in the same DuckDB transaction as the rows,
and on every (re)start the sink re-reads its pending entries, of which those at or below
that id are acknowledged without being stored again. After the DuckDB commit it
acknowledges the entries and records the archived offset in Redis (offsets hash, field
`{stream}|archive`), which is what lets the trimmer (actors/trim.py) drop ledger log
entries: the archive is the ledger of record once they are gone.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable

import msgspec
import redis

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.redisconn import connect
from actors.stream import GC_THRESHOLDS, SOCKET_TIMEOUT_S, Entry, ensure_group, not_the_entry
from analytics import snapshot
from analytics.archive import LedgerArchive, LogEntry
from analytics.landing import FeedEntry
from engine.ledger import Entry as LedgerEntry
from engine.streamid import stream_id

log = logging.getLogger(__name__)

GROUP = "archive"
CONSUMER = "archive"
FLUSH_ROWS = 50_000
"""Most ledger rows one DuckDB transaction carries (a stream entry alone may exceed it)."""
FLUSH_INTERVAL_S = 0.5
"""Least time between two commits while the load is light: each commit attaches and
detaches the DuckDB file (readers get it in between), which costs some 3 ms."""
READ_COUNT = 20
"""Stream entries read per stream at once: each carries up to 5,000 ledger entries
(actors.shards.CREDITS_PER_ENTRY), so one read stays near FLUSH_ROWS even after a backlog."""
ACK_CHUNK = 10_000


TAIL_READ = 100
"""Ledger log entries one XRANGE of the unarchived tail reads at a time."""
_ledger_list = msgspec.msgpack.Decoder(list[LedgerEntry])


def ledger_tail(
    r: redis.Redis, keys: Keys, member_shards: int, account: str, offsets: dict[str, str]
) -> list[LedgerEntry]:
    """The entries crediting or debiting `account` that the ledger logs hold past `offsets`
    (stream -> last entry id the archive holds; a stream missing there: all of it), in the
    archive's order (stream entry id, stream name, then place in the entry). Every stream is read: a
    transfer between two members is logged once, by the shard of the member it starts from."""
    return ledger_tail_where(
        r, keys, member_shards, offsets, lambda e: account in (e.credit, e.debit)
    )


def ledger_tail_where(
    r: redis.Redis,
    keys: Keys,
    member_shards: int,
    offsets: dict[str, str],
    match: Callable[[LedgerEntry], bool],
) -> list[LedgerEntry]:
    """The entries `match` keeps among those the ledger logs hold past `offsets`, in the
    archive's order (ledger_tail)."""
    found: list[tuple[tuple[int, int], str, int, LedgerEntry]] = []
    for m in range(member_shards):
        stream = keys.ledgerlog(m)
        start = offsets.get(stream)
        lo = "-" if start is None else f"({start}"
        while True:
            got = r.xrange(stream, lo, "+", count=TAIL_READ)
            for eid, fields in got:
                blob = fields.get(b"l")
                if blob is None:
                    continue
                at = stream_id(eid)
                for pos, e in enumerate(_ledger_list.decode(blob)):
                    if match(e):
                        found.append((at, stream, pos, e))
            if len(got) < TAIL_READ:
                break
            ms, seq = stream_id(got[-1][0])
            lo = f"({ms}-{seq}"
    found.sort(key=lambda x: (x[0], x[1], x[2]))  # as the archive's NEWEST_FIRST, reversed
    return [e for _, _, _, e in found]


def snapshot_age(root: str, now: float) -> float:
    """How long ago the latest snapshot under `root` was taken (0 without one), so that a
    restarted sink keeps the snapshot cadence instead of waiting a whole interval again (a
    deployment restarted more often than `snapshot_interval_s` would never take one)."""
    if not root:
        return 0.0
    try:
        return max(0.0, now - snapshot.latest(root).taken_at)
    except (snapshot.SnapshotError, OSError, ValueError, TypeError):
        return 0.0


def archive_offset_field(stream: str) -> str:
    """The offsets hash field holding the last entry of `stream` the archive committed."""
    return f"{stream}|{GROUP}"


class LedgerSink:
    """Consumes every ledgerlog stream into the archive; one instance per deployment."""

    kind = "archive"

    def __init__(self, cfg: RuntimeConfig) -> None:
        if not cfg.archive_path:
            raise ValueError("the ledger sink needs RuntimeConfig.archive_path")
        self.cfg = cfg
        self.keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.r = connect(cfg.redis_url, socket_keepalive=True, socket_timeout=SOCKET_TIMEOUT_S)
        self.ledger_streams = {self.keys.ledgerlog(m) for m in range(cfg.member_shards)}
        self.streams = [self.keys.ledgerlog(m) for m in range(cfg.member_shards)]
        self.streams += [self.keys.ingest(p) for p in range(cfg.channel_shards)]
        self.streams.append(self.keys.notices)
        for stream in self.streams:
            ensure_group(self.r, stream, GROUP)
        self.archive = LedgerArchive(cfg.archive_path, chat_text=cfg.archive_chat_text)
        self.archive.create()
        self.rows = 0
        self.feed_rows = 0
        self.snapshots = 0
        self.last_snapshot = time.monotonic() - snapshot_age(cfg.snapshot_dir, time.time())
        self.batches = 0
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ledger-sink", daemon=True)
        self.thread.start()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        gc.set_threshold(*GC_THRESHOLDS)  # as a shard's process: batches of 50,000 rows
        while not self.stopping.is_set():
            try:
                self._drain_pending()
                self._follow()
            except Exception as err:
                if not_the_entry(err):
                    log.warning("ledger sink lost Redis (%r); resuming from the archived offsets",
                                err)  # fmt: skip
                    self._pause(0.5)
                else:
                    log.exception("ledger sink failed a batch; resuming from the archived offsets")
                    self._pause(1.0)

    def _pause(self, seconds: float) -> None:
        self.errors += 1
        self.stopping.wait(seconds)

    def _read(self, start: dict[str, str], block_ms: int | None) -> list[tuple[str, list[Entry]]]:
        got = self.r.xreadgroup(
            GROUP,
            CONSUMER,
            start,
            count=self.cfg.read_count,
            block=block_ms,  # type: ignore[arg-type]
        )
        return [(s.decode() if isinstance(s, bytes) else s, entries) for s, entries in got or []]

    def _drain_pending(self) -> None:
        """What this consumer read before a crash and never acknowledged, in stream order:
        the archive's offsets decide what is stored and what only acknowledged."""
        start = dict.fromkeys(self.streams, "0")
        while not self.stopping.is_set():
            batch = Batch(self.ledger_streams)
            for stream, entries in self._read(start, None):
                for eid, fields in entries:
                    batch.add(stream, eid, fields)
                if entries:
                    start[stream] = entries[-1][0].decode()
            if not batch.ids:
                return
            self._flush(batch)

    def _follow(self) -> None:
        """New entries, in commits of at most FLUSH_ROWS rows at most every FLUSH_INTERVAL_S."""
        start = dict.fromkeys(self.streams, ">")
        batch = Batch(self.ledger_streams)
        last_flush = time.monotonic()
        while not self.stopping.is_set():
            for stream, entries in self._read(start, self.cfg.block_ms):
                for eid, fields in entries:
                    batch.add(stream, eid, fields)
            if batch.ids and (
                batch.rows >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_INTERVAL_S
            ):
                last_flush = time.monotonic()
                self._flush(batch)
                batch = Batch(self.ledger_streams)
            self._maybe_snapshot()
        if batch.ids:
            self._flush(batch)

    def _flush(self, batch: Batch) -> None:
        done = self.archive.append(batch.log, batch.feed)
        if done.skipped:
            log.warning("ledger sink skipped %d stream entries that did not decode", done.skipped)
        with self.r.pipeline(transaction=True) as pipe:
            for stream, ids in batch.ids.items():
                for i in range(0, len(ids), ACK_CHUNK):
                    pipe.xack(stream, GROUP, *ids[i : i + ACK_CHUNK])
                if stream in done.offsets:
                    pipe.hset(self.keys.offsets, archive_offset_field(stream), done.offsets[stream])
            pipe.hincrby(self.keys.stats, "entries_archived", done.rows)
            pipe.hincrby(self.keys.stats, "feed_rows_archived", done.feed_rows)
            pipe.execute()
        self.rows += done.rows
        self.feed_rows += done.feed_rows
        self.batches += 1

    def _maybe_snapshot(self) -> None:
        """A periodic snapshot, when one is due (between two commits: it reads the archive)."""
        every = self.cfg.snapshot_interval_s
        if not (self.cfg.snapshot_dir and every > 0):
            return
        if time.monotonic() - self.last_snapshot < every:
            return
        self.last_snapshot = time.monotonic()
        try:
            self.snapshot()
        except (snapshot.SnapshotError, OSError):  # the archive itself is fine: keep landing
            self.errors += 1
            log.exception("ledger sink could not take the periodic snapshot")

    def snapshot(self) -> dict[str, object]:
        """Take a snapshot now; its manifest."""
        if not self.cfg.snapshot_dir:
            raise ValueError("the ledger sink has no RuntimeConfig.snapshot_dir")
        man = snapshot.take(
            self.archive, self.cfg.snapshot_dir, time.time(), self.cfg.snapshots_kept
        )
        self.snapshots += 1
        return {"id": man.id, "rows": man.rows, "path": man.path}

    # -- actor methods --------------------------------------------------------------------
    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return self.thread.is_alive()

    def info(self) -> dict[str, object]:
        return {
            "consumer": self.kind,
            "rows": self.rows,
            "feed_rows": self.feed_rows,
            "snapshots": self.snapshots,
            "batches": self.batches,
            "errors": self.errors,
            "alive": self.thread.is_alive(),
            "path": str(self.archive.path),
        }

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


class Batch:
    """Stream entries read but not yet archived: their ledger blobs, the ingest and notices
    entries, and the ids per stream."""

    def __init__(self, ledger_streams: set[str]) -> None:
        self.ledger_streams = ledger_streams
        self.log: list[LogEntry] = []
        self.feed: list[FeedEntry] = []
        self.ids: dict[str, list[bytes]] = {}
        self.rows = 0

    def add(self, stream: str, eid: bytes, fields: dict[bytes, bytes] | None) -> None:
        self.ids.setdefault(stream, []).append(eid)
        if stream not in self.ledger_streams:
            if fields:  # a deleted pending entry: trimmed, so archived before
                self.feed.append(FeedEntry(stream, eid.decode(), fields))
                # events are not decoded here: some 64 bytes of msgpack each, for FLUSH_ROWS
                self.rows += 1 if b"e" not in fields else max(1, len(fields[b"e"]) // 64)
            return
        blob = (fields or {}).get(b"l")
        if blob is None:  # a deleted pending entry: trimmed, so archived before
            return
        self.log.append(LogEntry(stream, eid.decode(), blob))
        self.rows += int((fields or {}).get(b"n", 1))
