"""`rally analytics ...`: snapshot, kpis, sql, report (over the latest snapshot).

rally analytics snapshot                 take a snapshot of the archive now
rally analytics kpis [--from D --to D --network N --channel C] [--json]
rally analytics sql "SELECT ..."         read-only SQL (SELECT, WITH, DESCRIBE, SHOW)
rally analytics report --out DIR         PNG charts and one HTML page
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from analytics.kpis import DAY_S


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("analytics", help="snapshots, KPIs, read-only SQL and reports (DuckDB)")
    a = p.add_subparsers(dest="action", required=True)
    common(a.add_parser("snapshot", help="take an analytics snapshot of the archive now"))
    k = a.add_parser("kpis", help="the KPIs of the latest snapshot as a table (or --json)")
    common(k)
    _scope_args(k)
    k.add_argument("--json", action="store_true", help="print the KPIs as JSON")
    q = a.add_parser("sql", help="read-only SQL over the latest snapshot")
    common(q)
    q.add_argument("query", metavar="QUERY")
    q.add_argument("--json", action="store_true", help="print the rows as JSON")
    r = a.add_parser("report", help="PNG charts and an HTML page of the KPIs")
    common(r)
    _scope_args(r)
    r.add_argument("--out", required=True, help="the directory to write into")


def _scope_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="first", type=_day, help="first day YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="last", type=_day, help="last day YYYY-MM-DD (default: newest)")
    p.add_argument("--network", help="one network (default: all)")
    p.add_argument("--channel", help="one channel (default: all)")


def _day(text: str) -> int:
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD, got {text!r}") from None
    return (d - dt.date(1970, 1, 1)).days


def day_text(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))


def run(args: argparse.Namespace, settings_of: Any, cli_error: type[Exception]) -> int:
    from analytics import query, snapshot
    from analytics.archive import ArchiveError, LedgerArchive
    from analytics.intervals import watch_intervals

    settings = settings_of(args)
    root = settings.snapshot_dir()
    try:
        if args.action == "snapshot":
            archive = LedgerArchive(settings.archive_path())
            man = snapshot.take(archive, root, time.time(), settings.analytics.snapshots_kept)
            rows = ", ".join(f"{n:,} {t}" for t, n in man.rows.items())
            print(f"snapshot {man.id}: {rows}\n{man.path}")
            return 0
        if args.action == "sql":
            out = query.run_sql(root, args.query)
            _print_rows(out, args.json)
            return 0
        rep = query.kpi_report(root, args.first, args.last, args.network, args.channel,
                               watch_intervals(settings.rulebook()))  # fmt: skip
        if args.action == "report":
            from analytics.report import write_report

            page = write_report(rep, args.out)
            print(f"report written: {page}")
            return 0
        if args.json:
            print(json.dumps(rep, default=str, indent=1))
        else:
            _print_kpis(rep)
        return 0
    except snapshot.NoSnapshot as err:
        if args.action == "snapshot":  # no archive: nothing was ever landed here
            raise cli_error(
                f"{err}: the ledger sink of a running deployment (`rally serve`, `rally demo`)"
                " creates it; check --config / --data-dir"
            ) from None
        raise cli_error(f"{err}: run `rally analytics snapshot` first") from None
    except (snapshot.SnapshotError, ArchiveError, OSError) as err:
        raise cli_error(str(err)) from None


def _print_rows(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*out["columns"], title=f"snapshot {out['snapshot']}")
    for row in out["rows"]:
        table.add_row(*(str(v) for v in row))
    Console().print(table)
    if out["truncated"]:
        print(f"(only the first {len(out['rows']):,} rows)")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _print_kpis(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = rep["scope"]
    where = f"network {s['network'] or 'all'}, channel {s['channel'] or 'all'}"
    title = f"KPIs {day_text(s['first_day'])} .. {day_text(s['last_day'])} ({where})"
    t = Table("KPI", "value", title=title)
    a, c, st, p, w = rep["active"], rep["chat"], rep["streaks"], rep["points"], rep["watch"]
    for name, v in (
        ("DAU (mean)", a["dau"]), ("DAU (last day)", a["dau_last_day"]), ("WAU", a["wau"]),
        ("MAU", a["mau"]), ("chat DAU (mean)", c["chat_dau"]), ("chat MAU", c["chat_mau"]),
        ("members with 7+ day streaks", st["streak_7"]), ("streak continuation", st["share"]),
        ("points issued", p["issued"]), ("points spent", p["spent"]),
        ("points imported", p["imported"]), ("points outstanding", p["outstanding"]), ("avg watch time per viewer (s)",
        w["avg_watch_s"]),
    ):  # fmt: skip
        t.add_row(name, _fmt(v))
    console.print(t)
    for name, rows in (("retention by join day", rep["retention"]), ("tiers", rep["tiers"]),
                       ("tier upgrades per month", rep["tier_upgrades"]),
                       ("top channels", rep["top_channels"]),
                       ("event attendance", rep["attendance"])):  # fmt: skip
        if not rows:
            continue
        tab = Table(*rows[0].keys(), title=name)
        for row in rows:
            cells = {k: (day_text(v) if k == "cohort" else _fmt(v)) for k, v in row.items()}
            tab.add_row(*cells.values())
        console.print(tab)
