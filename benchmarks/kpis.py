"""The kpis scenario: the full KPI report over a large archive, and the sink's rows/s.

1. Generate --kpis-rows ledger rows (default 10,000,000) straight into a DuckDB archive
   file with SQL (members, channels and 60 days of watch ticks, chat points, welcome
   bonuses and store spends), with half as many events and a tier change per 20 members;
   take a snapshot (Parquet by day + views); time the full KPI report over it (the
   default 30-day scope, all networks), then one channel's.
2. The sink's own work, without Redis: --kpis-sink-rows ledger entries in ledger-log
   blobs of 5,000 (as member shards write them) and as many events in ingest blobs of
   1,000, decoded, turned into Arrow and committed by LedgerArchive.append in batches of
   50,000 rows (actors.ledger_sink.FLUSH_ROWS): rows/s of each. Reading them from Redis
   costs one XREADGROUP per 20 stream entries (100,000 rows), which is not counted.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from analytics import kpis, snapshot
from analytics.archive import LedgerArchive, LogEntry
from analytics.landing import FeedEntry
from benchmarks.bench import Bench
from engine import events as ev
from engine.ledger import Entry, entry_encoder
from engine.member import DAY_S
from gateway.reads import PERIOD_DAYS

DAYS = 60
FIRST_DAY = 20_400
CHANNELS = 50
PER_LOG_ENTRY = 5_000
PER_INGEST_ENTRY = 1_000


def generate(archive: LedgerArchive, rows: int) -> dict[str, int]:
    """Fill the archive's tables with SQL (pseudo-random by hash of the row number)."""
    members = max(100, rows // 100)
    t0, span = FIRST_DAY * 86_400, DAYS * 86_400
    with archive._open(read_only=False) as con:
        con.execute(f"""
        INSERT INTO ledger
        SELECT 'x' || i, {t0} + i * {span / rows}, 'bench',
               CASE WHEN k < 95 THEN 'treasury:bench' ELSE 'member:bench:m' || m END,
               CASE WHEN k < 95 THEN 'member:bench:m' || m ELSE 'store:bench' END,
               CASE WHEN k < 70 THEN 10 WHEN k < 95 THEN 1 ELSE 5 END,
               CASE WHEN k < 70 THEN 'watch' WHEN k < 94 THEN 'chat' WHEN k < 95 THEN 'welcome'
                    ELSE 'store_redeem' END,
               CASE WHEN k < 95 THEN 'c' || (m % {CHANNELS}) ELSE '' END,
               'bench:ledgerlog:0', '0-0', 0, 0, 0
        FROM (SELECT i, hash(i) % 100 AS k, hash(i * 7 + 1) % {members} AS m
              FROM range({rows}) t(i))""")
        events = rows // 2
        con.execute(f"""
        INSERT INTO events
        SELECT 'e' || i, 'bench', 'c' || (m % {CHANNELS}), 'm' || m,
               CASE WHEN k < 80 THEN 'chat' WHEN k < 95 THEN 'join' ELSE 'custom' END,
               {t0} + i * {span / events},
               CASE WHEN k >= 95 THEN 'quiz' ELSE '' END, 0, NULL,
               'bench:ingest:0', '0-0', 0, 0, 0
        FROM (SELECT i, hash(i + 3) % 100 AS k, hash(i * 13 + 5) % {members} AS m
              FROM range({events}) t(i))""")
        tiers = members // 20
        con.execute(f"""
        INSERT INTO tier_changes
        SELECT 'bench', 'm' || (i * 20), 0, 1, {t0} + hash(i) % {span}, 500, '0-0'
        FROM range({tiers}) t(i)""")
    return {"ledger": rows, "events": events, "tier_changes": tiers, "members": members}


def sink_rates(work: Path, rows: int) -> dict[str, float]:
    """Rows/s of LedgerArchive.append for ledger blobs, then for event blobs."""
    archive = LedgerArchive(work / "sink.duckdb")
    archive.create()
    t = FIRST_DAY * 86_400.0
    log: list[LogEntry] = []
    for n in range(rows // PER_LOG_ENTRY):
        chunk = [Entry(f"s{n}/{i}", t + i, "bench", "treasury:bench", f"member:bench:m{i % 997}",
                       10, "watch", "c1") for i in range(PER_LOG_ENTRY)]  # fmt: skip
        log.append(LogEntry("bench:ledgerlog:0", f"{n + 1}-0", entry_encoder.encode(chunk)))
    feed: list[FeedEntry] = []
    for n in range(rows // PER_INGEST_ENTRY):
        batch: list[ev.Event] = [
            ev.Chat(id=f"e{n}-{i}", network="bench", channel="c1", ts=t + i, user_id=f"m{i}")
            for i in range(PER_INGEST_ENTRY)
        ]
        feed.append(FeedEntry("bench:ingest:0", f"{n + 1}-0", {b"e": ev.encode_events(batch)}))
    per = 50_000
    t0 = time.perf_counter()
    for i in range(0, len(log), per // PER_LOG_ENTRY):
        archive.append(log[i : i + per // PER_LOG_ENTRY])
    t1 = time.perf_counter()
    for i in range(0, len(feed), per // PER_INGEST_ENTRY):
        archive.append([], feed[i : i + per // PER_INGEST_ENTRY])
    t2 = time.perf_counter()
    n_ledger, n_events = len(log) * PER_LOG_ENTRY, len(feed) * PER_INGEST_ENTRY
    return {"ledger_rows": n_ledger, "ledger_rows_per_s": round(n_ledger / (t1 - t0)),
            "event_rows": n_events, "event_rows_per_s": round(n_events / (t2 - t1))}  # fmt: skip


def board_reads(archive: LedgerArchive, last: int) -> dict[str, float]:
    """Seconds to sum one channel's board of a day, a week and a month ending on `last`
    from the archive (LedgerArchive.earned, what GET .../leaderboard?period= reads; the
    unarchived tail is empty here), best of three."""
    out: dict[str, float] = {}
    for period, days in PERIOD_DAYS.items():
        since, until = (last - days + 1) * DAY_S, (last + 1) * DAY_S
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            got = archive.earned("bench", "c7", since, until, lambda _offsets: [])
            best = min(best, time.perf_counter() - t)
        assert got, f"the generated archive has no {period} board"
        out[period] = best
    return out


def kpis_scenario(b: Bench) -> dict[str, Any]:
    o = b.opts
    rows, sink_rows = o.kpis_rows, o.kpis_sink_rows
    b.show(["kpis", f"{rows:,} ledger rows", *[""] * 8])
    work = Path(tempfile.mkdtemp(prefix="rally-kpis-", dir=o.out))
    try:
        archive = LedgerArchive(work / "ledger.duckdb")
        archive.create()
        t0 = time.perf_counter()
        sizes = generate(archive, rows)
        t1 = time.perf_counter()
        boards = board_reads(archive, FIRST_DAY + DAYS - 1)
        t_snap = time.perf_counter()
        man = snapshot.take(archive, work / "snapshots", time.time())
        t2 = time.perf_counter()
        last = FIRST_DAY + DAYS - 1
        with snapshot.connect(work / "snapshots") as con:
            t3 = time.perf_counter()
            rep = kpis.report(con, kpis.Scope(last - 29, last))
            t4 = time.perf_counter()
            kpis.report(con, kpis.Scope(last - 29, last, "bench", "c7"))
            t5 = time.perf_counter()
        assert rep["points"]["issued"] > 0, "the generated archive issued no points"
        rates = sink_rates(work, sink_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        **sizes, "generate_s": round(t1 - t0, 2), "snapshot_s": round(t2 - t_snap, 2),
        "snapshot_rows": man.rows, "report_s": round(t4 - t3, 2),
        "channel_report_s": round(t5 - t4, 2), "mau": rep["active"]["mau"], **rates,
        **{f"board_{period}_s": round(v, 3) for period, v in boards.items()},
    }  # fmt: skip
    lines = [
        f"{rows:,} ledger rows + {sizes['events']:,} events ({sizes['members']:,} members, "
        f"{DAYS} days): generated in {summary['generate_s']} s, snapshot (Parquet by day + "
        f"views) {summary['snapshot_s']} s; full KPI report (30 days, all) "
        f"{summary['report_s']} s, one channel {summary['channel_report_s']} s",
        f"leaderboard of one channel read from the archive (gateway/reads.py): day "
        f"{boards['day']:.3f} s, week {boards['week']:.3f} s, month {boards['month']:.3f} s",
        f"sink (decode + Arrow + DuckDB commit, no Redis): {rates['ledger_rows_per_s']:,} "
        f"ledger rows/s, {rates['event_rows_per_s']:,} event rows/s "
        f"({rates['ledger_rows']:,} rows each)",
    ]
    b.console.print("\n".join(lines))
    return {"status": "ok", "runs": [], "summary": summary, "lines": lines}
