"""Read-only SQL over the latest snapshot: what is refused, and how it is said."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics import query, snapshot
from analytics.archive import LedgerArchive
from tests.analytics.test_archive import entries, log_entry


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("DELETE FROM ledger", "not 'DELETE'"),
        ("COPY ledger TO 'x.csv'", "not 'COPY'"),
        ("ATTACH 'x.duckdb'", "not 'ATTACH'"),
        ("  -- nothing\n", "not 'an empty query'"),
        ("SELECT 1; DROP TABLE ledger", "exactly one read-only statement"),
        ("WITH x AS (SELECT 1) DELETE FROM ledger", "only SELECT.*is a DELETE statement"),
        ("WITH x AS (SELECT 1) INSERT INTO ledger SELECT * FROM ledger", "is a INSERT statement"),
    ],
)
def test_anything_but_one_read_only_statement_is_refused(sql: str, says: str) -> None:
    with pytest.raises(query.QueryRefused, match=says):
        query.check_read_only(sql)


def test_select_with_describe_and_show_run(tmp_path: Path) -> None:
    archive = LedgerArchive(tmp_path / "ledger.duckdb")
    archive.create()
    archive.append([log_entry(1, entries("a", 0, 3, amount=5))])
    snapshot.take(archive, tmp_path / "s", now=1_800_000_000.0)
    for sql in ("SELECT sum(balance) FROM members", "WITH x AS (SELECT 15) SELECT * FROM x"):
        assert query.run_sql(tmp_path / "s", sql)["rows"] == [(15,)]
    assert query.run_sql(tmp_path / "s", "DESCRIBE payouts")["rows"]
    assert ("payouts",) in query.run_sql(tmp_path / "s", "SHOW TABLES")["rows"]
    with pytest.raises(query.QueryRefused, match="starts on 2026-11-19, after it ends on"):
        query.kpi_report(tmp_path / "s", first_day=20_776, last_day=20_770)
