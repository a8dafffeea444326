"""The ledger archive: every ledger entry, exactly once, in one DuckDB file.

One writer (actors/ledger_sink.py) appends the entries of the ledger log streams
(`ledgerlog:{m}`: field `l` = msgpack list[engine.ledger.Entry]) in Arrow batches. The last
stream id archived per stream is written in the same DuckDB transaction as the rows, so a
writer that crashes and starts again skips what it already stored: exactly once.

DuckDB lets one process open a file for writing, and then no other process may open it at
all. The writer therefore holds the file only while it commits a batch, and readers (old
ledger pages in the gateway, `rally audit`) open it read-only between two commits, each
side retrying while the other holds it (for at most `lock_timeout_s`).

DuckDB's own lock is not enough for that. It is a POSIX record lock, which belongs to the
process and is dropped when the process closes any descriptor of the file. Measured with
plain processes (writers appending while reader processes read from 4 threads each, as the
gateway does): some 40% of reads missed rows committed before they connected, and the file
lost whole commits (rows and offsets of a batch gone, later batches there, so the sink never
sends them again); readers with one thread each saw nothing wrong, and writers alone lost a
commit once too. So every connection is taken under the archive's own locks, held from before
DuckDB opens the file until it has closed it: one connection per process at a time (a thread
lock per file), inside flock(2) on `{path}.lock` (shared for readers, exclusive for the
writer; flock belongs to the open file, not the process), entered through the turnstile
`{path}.turn` so that readers cannot starve the writer.
tests/analytics/test_archive.py holds the reproduction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import pyarrow as pa

from analytics.landing import FEED_SCHEMA, FeedEntry, land
from engine.ledger import TREASURY_PREFIX, Entry, member_account
from engine.streamid import stream_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id VARCHAR NOT NULL,       -- engine.ledger.Entry fields ...
    ts DOUBLE NOT NULL,
    network VARCHAR NOT NULL,
    debit VARCHAR NOT NULL,
    credit VARCHAR NOT NULL,
    amount BIGINT NOT NULL,
    rule VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    stream VARCHAR NOT NULL,   -- ... then where it was read: the ledger log stream,
    entry_id VARCHAR NOT NULL, -- the stream entry id ("ms-seq"),
    entry_ms BIGINT NOT NULL,  -- the same id as two numbers (ordering),
    entry_seq BIGINT NOT NULL,
    pos INTEGER NOT NULL       -- and the entry's place in the stream entry's list
);
CREATE TABLE IF NOT EXISTS archive_offsets (
    stream VARCHAR PRIMARY KEY,
    entry_id VARCHAR NOT NULL, -- the last stream entry archived (with everything before it)
    entries BIGINT NOT NULL,   -- stream entries archived from this stream
    rows BIGINT NOT NULL       -- ledger rows archived from this stream
);
"""

ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("ts", pa.float64()),
        ("network", pa.string()),
        ("debit", pa.string()),
        ("credit", pa.string()),
        ("amount", pa.int64()),
        ("rule", pa.string()),
        ("channel", pa.string()),
        ("stream", pa.string()),
        ("entry_id", pa.string()),
        ("entry_ms", pa.int64()),
        ("entry_seq", pa.int64()),
        ("pos", pa.int32()),
    ]
)
ENTRY_COLUMNS = "id, ts, network, debit, credit, amount, rule, channel"
NEWEST_FIRST = "entry_ms DESC, entry_seq DESC, stream DESC, pos DESC"
"""A total order: two shards' ledger logs can get the same entry id (one millisecond);
actors.ledger_sink.ledger_tail orders the unarchived tail the same way, ascending."""
LOCK_RETRY_S = 0.005

_entry_rows = msgspec.msgpack.Decoder(list[tuple[str, float, str, str, str, int, str, str]])
"""The same blobs as rows: engine.ledger.Entry is array_like (its fields in order)."""


_file_locks: dict[Path, threading.Lock] = {}
_file_locks_guard = threading.Lock()
_hosts: dict[tuple[Path, int], duckdb.DuckDBPyConnection] = {}
ALIAS = "archive"
"""The name the archive file is attached under in its host database."""


def _file_lock(path: Path) -> threading.Lock:
    """The lock under which this process holds its one connection to the file at `path`."""
    key = path.resolve()
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.Lock())


def _host(path: Path) -> duckdb.DuckDBPyConnection:
    """This process's in-memory DuckDB database that attaches the file at `path` for each
    use. Starting a DuckDB database costs some 25-35 ms of CPU here, attaching a file to a
    running one ~3 ms: the ledger sink commits a few times a second, and every old ledger
    page the gateway serves reads the file. One per process (keyed by pid, so that a forked
    child makes its own: a database's threads do not survive a fork) and per file, used
    under that file's lock only."""
    key = (path.resolve(), os.getpid())
    with _file_locks_guard:
        host = _hosts.get(key)
        if host is None:
            host = _hosts[key] = duckdb.connect(":memory:")
        return host


class ArchiveError(Exception):
    """The ledger archive could not be read or written."""


class ArchiveBusy(ArchiveError):
    """Another process held the archive file for longer than the lock timeout."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One ledger log stream entry as read from Redis: its stream, id and `l` blob."""

    stream: str
    entry_id: str
    blob: bytes


@dataclass
class Appended:
    """What one `append` did: rows inserted, and the archive offset of every stream it saw
    (the last entry id stored, old or new)."""

    rows: int = 0
    offsets: dict[str, str] = field(default_factory=dict)
    feed_rows: int = 0
    """Events and notices landed."""
    skipped: int = 0
    """Ingest or notices entries that did not decode (analytics/landing.py)."""


@dataclass
class Record:
    """The ledger of record summed per account: the archive plus the ledger log entries it
    does not hold yet, read in one consistent snapshot of the archive (for the audit)."""

    offsets: dict[str, str] = field(default_factory=dict)
    """stream -> the last entry the archive holds."""
    archived_entries: dict[str, int] = field(default_factory=dict)
    """stream -> stream entries the archive holds."""
    rows: int = 0
    """Ledger entries in all: archived and not."""
    unarchived: int = 0
    balance: dict[str, int] = field(default_factory=dict)
    """account -> credits - debits."""
    entries: dict[str, int] = field(default_factory=dict)
    """account -> entries that credit or debit it."""
    duplicate_ids: int = 0
    non_positive: int = 0


class LedgerArchive:
    """The archive file at `path`: `append` (the one writer), `page` and `totals` (readers)."""

    def __init__(
        self, path: str | Path, lock_timeout_s: float = 30.0, chat_text: bool = False
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.chat_text = chat_text
        """Land chat messages' text with the events (else NULL)."""

    # -- connections ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, read_only: bool) -> Iterator[float]:
        """The archive's own locks (see the module doc): this process's one turn at the
        file, then the shared (readers) or exclusive (writer) flock. Yields the deadline."""
        deadline = time.monotonic() + self.lock_timeout_s
        lock = _file_lock(self.path)
        if not lock.acquire(timeout=max(0.0, self.lock_timeout_s)):
            raise ArchiveBusy(f"the ledger archive {self.path} stayed busy in this process")
        try:
            with self._hold(read_only, deadline):
                yield deadline
        finally:
            lock.release()

    @contextlib.contextmanager
    def _open(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the file, which is detached (closed) on exit: the only one of
        this process while it is open, under the archive's own lock; retries while another
        process holds the file. Its unqualified table names are the archive's."""
        with self._locked(read_only) as deadline:
            host = self._connect(read_only, deadline)
            try:
                con = host.cursor()  # what a caller registers or leaves open ends with it
                try:
                    con.execute(f"USE {ALIAS}")
                    yield con
                finally:
                    con.close()  # rolls back a transaction left open (readers leave theirs)
            finally:
                host.execute(f"DETACH {ALIAS}")

    def copy_to(self, dest: Path) -> bool:
        """Copy the file (and its write-ahead log, if any) to `dest` under the readers' lock,
        with no DuckDB connection: a consistent copy (the writer commits and closes between
        batches) that holds the writer up for a file copy only. False if there is no archive."""
        if not self.path.exists():
            return False
        with self._locked(read_only=True):
            shutil.copyfile(self.path, dest)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():
                shutil.copyfile(wal, dest.with_name(dest.name + ".wal"))
        return True

    @contextlib.contextmanager
    def _hold(self, read_only: bool, deadline: float) -> Iterator[None]:
        """The archive's own lock across processes, held from before DuckDB opens the file
        until after it has closed it: flock(2) on `{path}.lock`, shared for readers and
        exclusive for the writer, entered through the turnstile `{path}.turn` (which the
        writer keeps while it waits), so that a stream of readers cannot starve the writer."""
        turn = os.open(f"{self.path}.turn", os.O_RDWR | os.O_CREAT, 0o644)
        held = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._flock(turn, fcntl.LOCK_EX, deadline)
            try:
                self._flock(held, fcntl.LOCK_SH if read_only else fcntl.LOCK_EX, deadline)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
            yield
        finally:
            os.close(held)  # releases the flock
            os.close(turn)

    def _flock(self, fd: int, mode: int, deadline: float) -> None:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError as err:
                if time.monotonic() >= deadline:
                    raise ArchiveBusy(f"the ledger archive {self.path} stayed locked") from err
                time.sleep(LOCK_RETRY_S)

    def _connect(self, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        """This process's host database with the file attached as ALIAS."""
        host = _host(self.path)
        path = str(self.path).replace("'", "''")
        mode = " (READ_ONLY)" if read_only else ""
        host.execute(f"DETACH DATABASE IF EXISTS {ALIAS}")  # left by a failed detach
        while True:
            try:
                host.execute(f"ATTACH '{path}' AS {ALIAS}{mode}")
                return host
            except duckdb.IOException as err:
                if "lock" not in str(err).lower():
                    raise ArchiveError(
                        f"cannot open the ledger archive {self.path}: {err}"
                    ) from err
                if time.monotonic() >= deadline:
                    raise ArchiveBusy(f"the ledger archive {self.path} stayed locked") from err
                time.sleep(LOCK_RETRY_S)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection, or None while nothing was ever archived."""
        if not self.path.exists():
            yield None
            return
        with self._open(read_only=True) as con:
            yield con

    @contextlib.contextmanager
    def _as_of(self) -> Iterator[tuple[duckdb.DuckDBPyConnection | None, dict[str, str]]]:
        """A read-only connection inside a transaction (None while nothing was ever
        archived) and what it holds of each stream (stream -> last archived entry id): the
        unarchived tail starts just past those offsets."""
        with self._reader() as con:
            offsets: dict[str, str] = {}
            if con is not None:
                con.execute("BEGIN TRANSACTION")
                offsets = dict(
                    con.execute("SELECT stream, entry_id FROM archive_offsets").fetchall()
                )
            yield con, offsets

    def create(self) -> None:
        """Create the file and its tables if missing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._open(read_only=False) as con:
            con.execute(SCHEMA)
            con.execute(FEED_SCHEMA)

    # -- the writer -----------------------------------------------------------------------
    def append(self, log: Sequence[LogEntry], feed: Sequence[FeedEntry] = ()) -> Appended:
        """Store the ledger entries of `log` and the events and notices of `feed` (stream
        entries in stream order) exactly once: entries at or below a stream's archived offset
        are skipped; the rows and the new offsets commit in one transaction."""
        try:
            with self._open(read_only=False) as con:
                con.execute("BEGIN TRANSACTION")
                out = _append(con, log)
                _append_feed(con, feed, self.chat_text, out)
                con.execute("COMMIT")
                return out
        except duckdb.Error as err:
            raise ArchiveError(f"archiving {len(log)} ledger log entries failed: {err}") from err

    # -- readers --------------------------------------------------------------------------
    def offsets(self) -> dict[str, str]:
        with self._reader() as con:
            if con is None:
                return {}
            return dict(con.execute("SELECT stream, entry_id FROM archive_offsets").fetchall())

    def feed_offsets(self) -> dict[str, str]:
        """stream -> the last ingest or notices entry landed."""
        with self._reader() as con:
            if con is None:
                return {}
            return dict(con.execute("SELECT stream, entry_id FROM feed_offsets").fetchall())

    def scalar(self, sql: str) -> Any:
        """The first column of the first row of a read-only query (tests, the CLI)."""
        with self._reader() as con:
            if con is None:
                return None
            got = con.execute(sql).fetchone()
            return None if got is None else got[0]

    def count(self) -> tuple[int, int]:
        """(rows, distinct entry ids)."""
        with self._reader() as con:
            if con is None:
                return 0, 0
            got = con.execute("SELECT count(*), count(DISTINCT id) FROM ledger").fetchone()
            assert got is not None
            return int(got[0]), int(got[1])

    def member_page(
        self, account: str, skip: int, limit: int, tail: Callable[[dict[str, str]], list[Entry]]
    ) -> tuple[list[Entry], bool]:
        """A page of the ledger of record for `account` (entries crediting or debiting it),
        newest first: skipping `skip` entries, at most `limit`, and whether more follow.

        The newest entries may not be archived yet: `tail(offsets)` returns the account's
        entries that the ledger log holds past `offsets` (stream -> last archived entry id),
        oldest first. It runs while this process holds the archive, so no entry can move
        from the log into the archive in between: the page misses and repeats nothing."""
        try:
            with self._as_of() as (con, offsets):
                recent = tail(offsets)[::-1]
                page = recent[skip : skip + limit]
                more = len(recent) > skip + limit
                if con is None or more:
                    return page, more
                want = limit - len(page)
                rows = con.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM ledger WHERE credit = $a OR debit = $a "
                    f"ORDER BY {NEWEST_FIRST} LIMIT $limit OFFSET $skip",
                    {"a": account, "limit": want + 1, "skip": max(0, skip - len(recent))},
                ).fetchall()
        except duckdb.Error as err:
            raise ArchiveError(f"reading the ledger archive failed: {err}") from err
        page += [Entry(*row) for row in rows[:want]]
        return page, len(rows) > want

    def earned(
        self,
        network: str,
        channel: str,
        since: float,
        until: float,
        tail: Callable[[dict[str, str]], list[Entry]],
    ) -> dict[str, int]:
        """Points each member of `network` earned in `channel` with `since` <= ts < `until`
        (the entries `is_earning` keeps), by user id: the archive's entries plus
        `tail(offsets)`, those of the ledger log past `offsets` (stream -> last archived
        entry id), read while this process holds the archive, as member_page does, so that
        no entry is counted twice or missed while the sink moves it into the archive."""
        members = member_account(network, "")
        rows: list[tuple[str, int]] = []
        try:
            with self._as_of() as (con, offsets):
                if con is not None:
                    rows = con.execute(
                        "SELECT credit, sum(amount)::BIGINT FROM ledger"
                        " WHERE network = $n AND channel = $c AND ts >= $since AND ts < $until"
                        " AND starts_with(debit, $t) AND starts_with(credit, $m)"
                        " GROUP BY credit",
                        {"n": network, "c": channel, "since": since, "until": until,
                         "t": TREASURY_PREFIX, "m": members},
                    ).fetchall()  # fmt: skip
                recent = tail(offsets)
        except duckdb.Error as err:
            raise ArchiveError(f"reading the ledger archive failed: {err}") from err
        cut = len(members)
        out = {credit[cut:]: int(amount) for credit, amount in rows}
        for e in recent:
            user = e.credit[cut:]
            out[user] = out.get(user, 0) + e.amount
        return out


def is_earning(e: Entry, network: str, channel: str, since: float, until: float) -> bool:
    """`e` is points a member of `network` earned in `channel` between `since` (included)
    and `until`: an entry from the treasury, as the leaderboards count earnings
    (actors.shards.LedgerProjector). LedgerArchive.earned selects the same in SQL."""
    return (
        e.network == network
        and e.channel == channel
        and since <= e.ts < until
        and e.debit.startswith(TREASURY_PREFIX)
        and e.credit.startswith(member_account(network, ""))
    )


def ledger_record(archive: LedgerArchive | None, log: Sequence[LogEntry]) -> Record:
    """The ledger of record: the archive (None: no archive) plus those entries of `log`
    (ledger log stream entries read from Redis before this call) that it does not hold yet,
    summed per account, with the count of duplicate entry ids and of non-positive amounts."""
    out = Record()
    try:
        with contextlib.ExitStack() as stack:
            con = None if archive is None else stack.enter_context(archive._reader())
            if con is not None:
                con.execute("BEGIN TRANSACTION")
                for s, e, k in con.execute(
                    "SELECT stream, entry_id, entries FROM archive_offsets"
                ).fetchall():
                    out.offsets[s] = e
                    out.archived_entries[s] = int(k)
            fresh = [
                x
                for x in log
                if x.stream not in out.offsets or _after(x.entry_id, out.offsets[x.stream])
            ]
            extra, _ = _arrow(fresh)
            out.unarchived = extra.num_rows
            if con is None:
                con = stack.enter_context(contextlib.closing(duckdb.connect(":memory:")))
                con.execute(SCHEMA)
            con.register("extra", extra)
            rec = "(SELECT * FROM ledger UNION ALL SELECT * FROM extra)"
            for account, balance, n in con.execute(
                "SELECT account, sum(delta), sum(n) FROM ("
                f"  SELECT credit AS account, sum(amount) AS delta, count(*) AS n FROM {rec}"
                "  GROUP BY credit"
                "  UNION ALL"
                f"  SELECT debit, -sum(amount), count(*) FROM {rec} GROUP BY debit"
                ") GROUP BY account"
            ).fetchall():
                out.balance[account] = int(balance)
                out.entries[account] = int(n)
            got = con.execute(
                "SELECT count(*), count(*) - count(DISTINCT id),"
                f" count(*) FILTER (WHERE amount <= 0) FROM {rec}"
            ).fetchone()
            assert got is not None
            out.rows, out.duplicate_ids, out.non_positive = (int(x) for x in got)
            return out
    except duckdb.Error as err:
        raise ArchiveError(f"reading the ledger archive failed: {err}") from err


Landed = dict[str, tuple[str, int, int]]
"""Per stream, what a table of offsets (archive_offsets, feed_offsets) says has landed:
(last entry id, entries, rows)."""
_E = TypeVar("_E", LogEntry, FeedEntry)


def _landed(con: duckdb.DuckDBPyConnection, table: str) -> Landed:
    rows = con.execute(f"SELECT stream, entry_id, entries, rows FROM {table}").fetchall()
    return {s: (e, k, n) for s, e, k, n in rows}


def _past(entries: Sequence[_E], done: Landed) -> list[_E]:
    """The entries after their stream's landed offset (a replayed entry lands once)."""
    return [x for x in entries if x.stream not in done or _after(x.entry_id, done[x.stream][0])]


def _advance(
    con: duckdb.DuckDBPyConnection,
    table: str,
    done: Landed,
    fresh: Sequence[LogEntry] | Sequence[FeedEntry],
    rows: Mapping[str, int],
    out: Appended,
) -> None:
    """Moves each stream's offset in `table` past its fresh entries, in the same
    transaction as their rows, and reports the new offsets in `out`."""
    last: dict[str, str] = {}
    added: dict[str, int] = {}
    for x in fresh:
        last[x.stream] = x.entry_id
        added[x.stream] = added.get(x.stream, 0) + 1
    for s, e in last.items():
        _, k, n = done.get(s, ("", 0, 0))
        con.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?)",
            [s, e, k + added[s], n + rows.get(s, 0)],
        )
        out.offsets[s] = e


def _append(con: duckdb.DuckDBPyConnection, log: Sequence[LogEntry]) -> Appended:
    """The ledger part of LedgerArchive.append, inside its transaction."""
    done = _landed(con, "archive_offsets")
    out = Appended(offsets={s: d[0] for s, d in done.items()})
    fresh = _past(log, done)
    if fresh:
        rows, counts = _arrow(fresh)
        con.register("incoming", rows)
        con.execute("INSERT INTO ledger SELECT * FROM incoming")
        con.unregister("incoming")
        _advance(con, "archive_offsets", done, fresh, counts, out)
        out.rows = rows.num_rows
    return out


def _append_feed(
    con: duckdb.DuckDBPyConnection, feed: Sequence[FeedEntry], chat_text: bool, out: Appended
) -> None:
    """The feed part of LedgerArchive.append, inside its transaction: events, tier changes
    and notices past each stream's landed offset (analytics/landing.py)."""
    done = _landed(con, "feed_offsets")
    for s, d in done.items():
        out.offsets[s] = d[0]
    fresh = _past(feed, done)
    if not fresh:
        return
    got = land(fresh, chat_text)
    for name, table in (("events", got.events), ("tier_changes", got.tiers),
                        ("notices", got.notices)):  # fmt: skip
        if table.num_rows:
            con.register("incoming", table)
            con.execute(f"INSERT INTO {name} SELECT * FROM incoming")
            con.unregister("incoming")
    _advance(con, "feed_offsets", done, fresh, got.rows, out)
    out.feed_rows += sum(got.rows.values())
    out.skipped += got.skipped


def _after(entry_id: str, offset: str) -> bool:
    return stream_id(entry_id) > stream_id(offset)


def _arrow(log: Sequence[LogEntry]) -> tuple[pa.Table, dict[str, int]]:
    """The Arrow table of every ledger entry in `log` (columns of ARROW_SCHEMA), and how
    many rows each stream gave. Entries are decoded as plain tuples (Entry is array_like)
    and turned into columns at once."""
    counts: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    c_stream: list[str] = []
    c_eid: list[str] = []
    c_ms: list[int] = []
    c_seq: list[int] = []
    c_pos: list[int] = []
    for x in log:
        entries = _entry_rows.decode(x.blob)
        n = len(entries)
        ms, seq = stream_id(x.entry_id)
        rows += entries
        c_stream += [x.stream] * n
        c_eid += [x.entry_id] * n
        c_ms += [ms] * n
        c_seq += [seq] * n
        c_pos += range(n)
        counts[x.stream] = counts.get(x.stream, 0) + n
    entry_cols: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * 8
    cols = [*entry_cols, c_stream, c_eid, c_ms, c_seq, c_pos]
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, ARROW_SCHEMA, strict=True)],
        schema=ARROW_SCHEMA,
    )
    return table, counts
