"""Read-only SQL and KPI reports over the latest snapshot (the CLI and the gateway)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import duckdb

from analytics import kpis, snapshot

ALLOWED = ("SELECT", "WITH", "DESCRIBE", "SHOW")
MAX_ROWS = 10_000
"""Most rows `sql` returns (a bigger answer is cut, and says so)."""
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


class QueryRefused(snapshot.SnapshotError):
    """The query is not a single read-only statement (SELECT, WITH, DESCRIBE, SHOW)."""


class QueryFailed(snapshot.SnapshotError):
    """DuckDB could not run the query."""


def check_read_only(query: str) -> None:
    """Refuse anything but one SELECT, WITH, DESCRIBE or SHOW statement."""
    text = _COMMENTS.sub(" ", query).strip()
    first = text.split(None, 1)[0].upper() if text else ""
    if first not in ALLOWED:
        raise QueryRefused(
            f"only {', '.join(ALLOWED)} queries may run here, not {first or 'an empty query'!r}"
        )
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise QueryFailed(f"the query does not parse: {err}") from err
    if len(statements) != 1:
        raise QueryRefused("exactly one read-only statement may run (no ';' followed by more)")
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name
        raise QueryRefused(
            f"only {', '.join(ALLOWED)} queries may run here: this one is a {kind} statement"
        )


def _day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * kpis.DAY_S))


def run_sql(root: str | Path, query: str, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Run a read-only query on the latest snapshot: columns, rows (at most max_rows),
    whether rows were cut, and the snapshot's id."""
    check_read_only(query)
    man = snapshot.latest(root)
    with snapshot.connect(root) as con:
        try:
            cur = con.execute(query)
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.Error as err:
            raise QueryFailed(str(err).splitlines()[0]) from err
        columns = [d[0] for d in cur.description or []]
    return {"snapshot": man.id, "columns": columns, "rows": rows[:max_rows],
            "truncated": len(rows) > max_rows}  # fmt: skip


def kpi_report(
    root: str | Path,
    first_day: int | None = None,
    last_day: int | None = None,
    network: str | None = None,
    channel: str | None = None,
    watch_intervals: tuple[tuple[str, str, int], ...] = (),
) -> dict[str, Any]:
    """Every KPI over the latest snapshot. The period defaults to the 30 days ending on the
    last day holding data (or on `last_day`); with no data at all, today's epoch day 0."""
    man = snapshot.latest(root)
    with snapshot.connect(root) as con:
        span = kpis.data_days(con)
        last = last_day if last_day is not None else (span[1] if span else 0)
        first = first_day if first_day is not None else last - 29
        if first > last:
            raise QueryRefused(
                f"the period is empty: it starts on {_day(first)}, after it ends on {_day(last)}"
            )
        scope = kpis.Scope(first, last, network, channel, watch_intervals)
        out = kpis.report(con, scope)
    out["snapshot"] = {"id": man.id, "taken_at": man.taken_at, "offsets": man.offsets}
    return out
