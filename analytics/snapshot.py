"""Snapshots analysts open while the engine writes: Parquet by day, a read-only DuckDB file.

A snapshot is a directory `{root}/{id}/`:

    ledger/day=YYYY-MM-DD/*.parquet        every archived ledger entry (day: UTC day of ts)
    events/day=.../*.parquet               every accepted event
    tier_changes/day=.../*.parquet         every tier change
    notices/day=.../*.parquet              voucher scans, raffle draws, store notices
    snapshot.duckdb                        views over the Parquet files (VIEWS below)
    manifest.json                          what it covers: the archive offsets of every
                                           stream (ledger and feed), rows per table, time

It is written under a temporary name (`{root}/.tmp-{id}`) and renamed into place when
complete, and only then does `{root}/LATEST` (replaced atomically) name it: a reader never
sees half a snapshot. Readers open snapshot.duckdb read-only; it holds nothing but views,
so any number of analysts may keep it open, and the archive's writer never waits for them.
The export reads a copy of the archive file, taken under the readers' lock (the writer
waits for the file copy, a second or so for 10 million rows, not for the whole export).
The newest `kept` snapshots are kept; older ones are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from analytics.archive import ArchiveError, LedgerArchive
from analytics.kpis import ISSUED

TABLES = ("ledger", "events", "tier_changes", "notices")
DAY = "strftime(make_timestamp(CAST(ts * 1000000 AS BIGINT)), '%Y-%m-%d')"

VIEWS = {
    # the first row of each event id: an id re-sent in a later batch was acknowledged twice
    "events": """
        SELECT * EXCLUDE (rn) FROM (
            SELECT *, row_number() OVER (PARTITION BY network, id
                                         ORDER BY entry_ms, entry_seq, pos) AS rn
            FROM events_raw) WHERE rn = 1""",
    "members": """
        WITH acct AS (
            SELECT network, credit AS account, amount, ts,
                   starts_with(debit, 'treasury:') AS earned FROM ledger
            UNION ALL
            SELECT network, debit, -amount, ts, false FROM ledger),
        m AS (
            SELECT network, substr(account, length('member:' || network || ':') + 1) AS user_id,
                   sum(amount) AS balance,
                   sum(amount) FILTER (WHERE earned) AS lifetime_points,
                   min(ts) AS first_ts, max(ts) AS last_ts
            FROM acct WHERE starts_with(account, 'member:') GROUP BY ALL),
        e AS (
            SELECT network, user_id, min(ts) AS first_ts, max(ts) AS last_ts
            FROM events WHERE user_id <> '' GROUP BY ALL),
        t AS (
            SELECT network, user_id, arg_max(new_tier, ts) AS tier
            FROM tier_changes GROUP BY ALL)
        SELECT coalesce(m.network, e.network) AS network,
               coalesce(m.user_id, e.user_id) AS user_id,
               coalesce(m.balance, 0) AS balance,
               coalesce(m.lifetime_points, 0) AS lifetime_points,
               coalesce(t.tier, 0) AS tier,
               least(m.first_ts, e.first_ts) AS joined_ts,
               greatest(m.last_ts, e.last_ts) AS last_ts
        FROM m FULL JOIN e USING (network, user_id)
        LEFT JOIN t ON t.network = coalesce(m.network, e.network)
                   AND t.user_id = coalesce(m.user_id, e.user_id)""",
    "channels": f"""
        WITH ev AS (
            SELECT network, channel, count(*) AS events,
                   count(DISTINCT user_id) FILTER (WHERE user_id <> '') AS members,
                   min(ts) AS first_ts, max(ts) AS last_ts
            FROM events GROUP BY ALL),
        pts AS (
            SELECT network, channel, sum({ISSUED}) AS points_issued
            FROM ledger WHERE channel <> '' GROUP BY ALL HAVING sum({ISSUED}) <> 0)
        SELECT network, channel, coalesce(ev.events, 0) AS events,
               coalesce(ev.members, 0) AS members,
               coalesce(pts.points_issued, 0) AS points_issued, first_ts, last_ts
        FROM ev FULL JOIN pts USING (network, channel)""",
    "spends": """
        SELECT * FROM ledger WHERE starts_with(debit, 'member:')""",
    # one row per redemption (engine/store.py Redemption, as JSON in the item_* notices):
    # item_redeemed once its points were taken, item_fulfilled / item_refunded later
    "store_redemptions": """
        WITH r AS (
            SELECT kind, ts, network, json_extract_string(body, '$.id') AS redemption, body
            FROM notices WHERE kind IN ('item_redeemed', 'item_fulfilled', 'item_refunded')),
        ends AS (
            SELECT network, redemption,
                   min(ts) FILTER (WHERE kind = 'item_fulfilled') AS fulfilled_ts,
                   min(ts) FILTER (WHERE kind = 'item_refunded') AS refunded_ts
            FROM r GROUP BY ALL)
        SELECT r.ts, r.network, json_extract_string(r.body, '$.user_id') AS user_id,
               json_extract_string(r.body, '$.item_id') AS item,
               json_extract_string(r.body, '$.item_name') AS item_name,
               CAST(json_extract(r.body, '$.cost') AS BIGINT) AS cost,
               json_extract_string(r.body, '$.channel') AS channel,
               nullif(json_extract_string(r.body, '$.voucher'), '') AS voucher,
               r.redemption, ends.fulfilled_ts, ends.refunded_ts, r.body
        FROM r LEFT JOIN ends USING (network, redemption) WHERE r.kind = 'item_redeemed'""",
    "raffle_entries": """
        SELECT * FROM ledger WHERE rule IN ('raffle_ticket', 'raffle_entry')""",
    "raffle_draws": """
        SELECT ts, network, json_extract_string(body, '$.raffle') AS raffle,
               json_extract_string(body, '$.channel') AS channel,
               json_extract(body, '$.winners') AS winners,
               CAST(json_extract(body, '$.prize_points') AS BIGINT) AS prize_points
        FROM notices WHERE kind = 'raffle_drawn'""",
    # one row per payout, from its ledger entries (engine/payout.py: the reservation
    # member -> payout:{network}, keyed payout:{id}; the move to payout:{network}:paid once
    # settled, keyed payout-paid:{id}; the refund of a voided one, keyed payout-void:{id};
    # a ledger entry id is "{network}:{user_id}/x/{key}", engine/spend.py entry_id)
    "payouts": """
        WITH p AS (
            SELECT network, rule, ts, amount,
                   substr(id, length(network) + 2,
                          strpos(id, '/x/') - length(network) - 2) AS user_id,
                   regexp_replace(substr(id, strpos(id, '/x/') + 3),
                                  '^payout(-paid|-void)?:', '') AS payout
            FROM ledger WHERE rule IN ('payout', 'payout_paid', 'payout_void'))
        SELECT network, payout, any_value(user_id) AS user_id,
               max(amount) FILTER (WHERE rule = 'payout') AS points,
               min(ts) FILTER (WHERE rule = 'payout') AS reserved_ts,
               min(ts) FILTER (WHERE rule = 'payout_paid') AS paid_ts,
               min(ts) FILTER (WHERE rule = 'payout_void') AS voided_ts,
               CASE WHEN count(*) FILTER (WHERE rule = 'payout_paid') > 0 THEN 'paid'
                    WHEN count(*) FILTER (WHERE rule = 'payout_void') > 0 THEN 'voided'
                    ELSE 'pending' END AS status
        FROM p GROUP BY network, payout""",
    "voucher_scans": """
        SELECT ts, network, user_id, json_extract_string(body, '$.code_id') AS code_id,
               json_extract_string(body, '$.batch') AS batch,
               CAST(json_extract(body, '$.points') AS BIGINT) AS points,
               json_extract_string(body, '$.item') AS item
        FROM notices WHERE kind = 'voucher_scanned'""",
}
"""Views over the base tables (ledger, events_raw, tier_changes, notices)."""


class SnapshotError(Exception):
    """No snapshot could be taken or opened."""


class NoSnapshot(SnapshotError):
    """No snapshot has been taken yet."""


@dataclass
class Manifest:
    id: str
    taken_at: float
    offsets: dict[str, str] = field(default_factory=dict)
    """stream -> the last entry the snapshot covers (ledger logs, ingest logs, notices)."""
    rows: dict[str, int] = field(default_factory=dict)
    path: str = ""


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One snapshot at a time per root (the sink's periodic ones, `rally analytics snapshot`)."""
    fd = os.open(root / ".snapshot.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def take(archive: LedgerArchive, root: str | Path, now: float, kept: int = 3) -> Manifest:
    """Export the archive as a new snapshot under `root`, make it the latest, keep `kept`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root):
        sid = (
            time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
        )
        final = (root / sid).resolve()
        tmp = root / f".tmp-{sid}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            man = _export(archive, tmp, final, sid, now)
            (tmp / "manifest.json").write_text(json.dumps(asdict(man), indent=1))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_atomic(root / "LATEST", sid)
        _prune(root, kept)
        return man


def _export(archive: LedgerArchive, tmp: Path, final: Path, sid: str, now: float) -> Manifest:
    man = Manifest(id=sid, taken_at=now, path=str(final))
    empty: dict[str, str] = {}
    copy = tmp / ".archive.duckdb"
    try:
        if not archive.copy_to(copy):
            raise NoSnapshot(f"the archive {archive.path} does not exist yet")
        with contextlib.closing(duckdb.connect(str(copy), read_only=True)) as con:
            con.execute("BEGIN TRANSACTION")
            for table in ("archive_offsets", "feed_offsets"):
                man.offsets.update(
                    dict(con.execute(f"SELECT stream, entry_id FROM {table}").fetchall())
                )
            for table in TABLES:
                n = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                man.rows[table] = int(n[0]) if n else 0
                if man.rows[table]:
                    con.execute(
                        f"COPY (SELECT *, {DAY} AS day FROM {table}) TO '{tmp / table}'"
                        " (FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)"
                    )
                else:  # no Parquet to read: an empty table of the same columns in the file
                    cols = con.execute(f"DESCRIBE {table}").fetchall()
                    empty[table] = ", ".join(f'"{c[0]}" {c[1]}' for c in cols) + ", day DATE"
            con.execute("COMMIT")
    except duckdb.Error as err:
        raise SnapshotError(f"exporting the archive failed: {err}") from err
    except ArchiveError as err:
        raise SnapshotError(str(err)) from err
    finally:
        for leftover in (copy, copy.with_name(copy.name + ".wal")):
            leftover.unlink(missing_ok=True)
    # DuckDB binds a view when it is created: its Parquet files must be found under the
    # final path by then. That path is a symbolic link to the temporary directory while the
    # views are made (nothing names the snapshot yet: LATEST is written after the rename).
    os.symlink(tmp.resolve(), final)
    db = duckdb.connect(str(tmp / "snapshot.duckdb"))
    try:
        for table in TABLES:
            name = "events_raw" if table == "events" else table
            if table in empty:
                db.execute(f"CREATE TABLE {name} ({empty[table]})")
            else:
                glob = final / table / "*" / "*.parquet"
                db.execute(
                    f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}',"
                    " hive_partitioning = true)"
                )
        for name, sql in VIEWS.items():
            db.execute(f"CREATE VIEW {name} AS {sql}")
        db.execute("CREATE TABLE manifest AS SELECT ? AS id, ? AS taken_at", [sid, now])
    finally:
        db.close()
        os.unlink(final)
    return man


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, kept: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in done[: max(0, len(done) - max(1, kept))]:
        shutil.rmtree(old, ignore_errors=True)


def latest(root: str | Path) -> Manifest:
    """The manifest of the latest snapshot under `root`; NoSnapshot if none."""
    root = Path(root)
    try:
        sid = (root / "LATEST").read_text().strip()
        raw = json.loads((root / sid / "manifest.json").read_text())
    except FileNotFoundError as err:
        raise NoSnapshot(f"no analytics snapshot under {root} yet") from err
    return Manifest(**raw)


def connect(root: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the latest snapshot (views: members, ledger, events,
    channels, tier_changes, notices and the spending tables: spends, store_redemptions,
    raffle_entries, raffle_draws, voucher_scans, payouts)."""
    man = latest(root)
    try:
        return duckdb.connect(str(Path(man.path) / "snapshot.duckdb"), read_only=True)
    except duckdb.Error as err:
        raise SnapshotError(f"cannot open snapshot {man.id}: {err}") from err
