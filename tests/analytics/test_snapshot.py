"""Snapshots: Parquet by day plus a read-only DuckDB file of views, atomic, never blocking."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from analytics import snapshot
from analytics.archive import LedgerArchive
from tests.analytics.test_archive import entries, log_entry
from tests.analytics.test_landing import traffic


@pytest.fixture
def archive(tmp_path: Path) -> LedgerArchive:
    a = LedgerArchive(tmp_path / "ledger.duckdb")
    a.create()
    return a


def test_no_snapshot_yet(tmp_path: Path) -> None:
    with pytest.raises(snapshot.NoSnapshot):
        snapshot.latest(tmp_path / "snaps")


def test_a_snapshot_holds_every_table_and_view(archive: LedgerArchive, tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    archive.append([log_entry(1, entries("a", 0, 3, amount=5))], traffic())
    man = snapshot.take(archive, root, now=1_800_000_000.0)
    assert man.rows == {"ledger": 3, "events": 3, "tier_changes": 1, "notices": 4}
    assert man.offsets == {"t:ledgerlog:0": "1-0", "t:ingest:0": "3-0", "t:notices": "4-0"}
    assert snapshot.latest(root).id == man.id
    assert json.loads((Path(man.path) / "manifest.json").read_text())["rows"] == man.rows
    assert sorted(p.name for p in (Path(man.path) / "ledger").iterdir()) == ["day=2026-11-18"]
    con = snapshot.connect(root)
    try:  # an analyst's session stays open while the archive takes writes and snapshots
        archive.append([log_entry(2, entries("a", 3, 1, amount=5))])
        second = snapshot.take(archive, root, now=1_800_000_001.0)
        assert second.rows["ledger"] == 4
        assert con.execute("SELECT count(*) FROM ledger").fetchone() == (3,)
        assert con.execute("SELECT balance, lifetime_points, tier FROM members"
                           " WHERE user_id = 'a'").fetchone() == (15, 15, 1)  # fmt: skip
        for view in ("events", "channels", "tier_changes", "spends", "store_redemptions",
                     "raffle_entries", "raffle_draws", "voucher_scans", "notices"):  # fmt: skip
            con.execute(f"SELECT * FROM {view}").fetchall()
        assert con.execute("SELECT code_id, points FROM voucher_scans").fetchall() == [
            ("code1", 50)
        ]
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE x (a INT)")
    finally:
        con.close()
    with snapshot.connect(root) as newer:
        assert newer.execute("SELECT count(*) FROM ledger").fetchone() == (4,)
    for n in range(3):
        snapshot.take(archive, root, now=1_800_000_010.0 + n, kept=2)
    assert len([p for p in root.iterdir() if p.is_dir()]) == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]


def test_an_empty_archive_snapshots_to_empty_views(archive: LedgerArchive, tmp_path: Path) -> None:
    snapshot.take(archive, tmp_path / "s", now=1_800_000_000.0)
    with snapshot.connect(tmp_path / "s") as con:
        assert con.execute("SELECT count(*) FROM members").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_the_writer_appends_while_a_snapshot_exports(
    archive: LedgerArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export reads a copy: while it runs, the writer commits (and the snapshot holds
    what the archive held when it was copied)."""
    archive.append([log_entry(1, entries("a", 0, 3))])
    writer = LedgerArchive(archive.path, lock_timeout_s=0.5)
    real_connect = duckdb.connect
    appended: list[int] = []

    def connect(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        if path.endswith(".archive.duckdb"):  # the export opens its copy: the archive is free
            appended.append(writer.append([log_entry(2, entries("a", 3, 2))]).rows)
        return real_connect(path, read_only=read_only)

    monkeypatch.setattr(snapshot.duckdb, "connect", connect)
    man = snapshot.take(archive, tmp_path / "snaps", now=1_800_000_000.0)
    assert appended == [2]
    assert man.rows["ledger"] == 3
    assert man.offsets["t:ledgerlog:0"] == "1-0"
    assert not list((tmp_path / "snaps" / man.id).glob(".archive*"))  # the copy is gone


def test_a_failed_snapshot_leaves_the_latest_one_whole(
    archive: LedgerArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "snaps"
    archive.append([log_entry(1, entries("a", 0, 3))])
    first = snapshot.take(archive, root, now=1_800_000_000.0)
    archive.append([log_entry(2, entries("a", 3, 2))])
    monkeypatch.setitem(snapshot.VIEWS, "broken", "SELECT nope FROM ledger")
    with pytest.raises(duckdb.Error):  # fails after its Parquet files were written
        snapshot.take(archive, root, now=1_800_000_001.0)
    assert snapshot.latest(root).id == first.id
    assert sorted(p.name for p in root.iterdir()) == sorted([".snapshot.lock", "LATEST", first.id])
    with snapshot.connect(root) as con:
        assert con.execute("SELECT count(*) FROM ledger").fetchone() == (3,)


def test_a_restarted_sink_keeps_the_snapshot_cadence(
    archive: LedgerArchive, tmp_path: Path
) -> None:
    from actors.ledger_sink import snapshot_age

    root = tmp_path / "snaps"
    assert snapshot_age(str(root), 1_800_000_000.0) == 0.0  # none yet: a whole interval
    assert snapshot_age("", 1_800_000_000.0) == 0.0
    snapshot.take(archive, root, now=1_800_000_000.0)
    assert snapshot_age(str(root), 1_800_003_000.0) == 3_000.0
    assert snapshot_age(str(root), 1_700_000_000.0) == 0.0  # a clock set back
