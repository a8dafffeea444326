"""`rally import` and `rally export`: balances in from another bot, balances out.

`rally import --from csv|streamelements|phantombot FILE` turns each row into an opening
balance (engine/migration.py): a spend-path credit applied by the member shards of the
running deployment exactly once per member. Rows that cannot apply are reported with the
reason; `--dry-run` only parses and reports. A file that is not an export of its source at
all is refused with one message and exit code 2.

`rally export --network N --out FILE` writes every member of N (balance, lifetime, tier,
streak) as CSV, or Parquet when FILE ends in `.parquet`.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.redisconn import connect
from engine.migration import (
    SOURCES,
    MigrationError,
    Parsed,
    Rejected,
    Row,
    opening_transfer,
    parse,
    phantombot_rows,
    resolve,
)

SUBMIT_WINDOW = 10_000
"""Transfers appended in one round trip before their results are awaited."""
SHOW_REJECTED = 20
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_FILE_BYTES = 2 * 1024**3


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    i = sub.add_parser("import", help="load balances from another bot as opening balances")
    common(i)
    i.add_argument("--from", dest="source", required=True, choices=SOURCES)
    i.add_argument("file", metavar="FILE")
    i.add_argument("--network", help="the network (default: the only one configured)")
    i.add_argument("--dry-run", action="store_true", help="parse and report; change nothing")
    i.add_argument(
        "--names", metavar="CSV",
        help="login name -> user id map (columns name,user_id) for name-keyed sources",
    )  # fmt: skip
    i.add_argument("--rejects", metavar="CSV", help="write every rejected row and why here")
    i.add_argument("--redis-url")
    e = sub.add_parser("export", help="write a network's balances, tiers, streaks (CSV/Parquet)")
    common(e)
    e.add_argument("--network", help="the network (default: the only one configured)")
    e.add_argument("--out", required=True, metavar="FILE", help="FILE.csv or FILE.parquet")
    e.add_argument("--redis-url")


def _network(args: argparse.Namespace, settings: Any, cli_error: type[Exception]) -> str:
    network = args.network or settings.default_network()
    if network is None:
        raise cli_error("--network is required (several networks are configured)")
    if network not in settings.networks:
        raise cli_error(f"--network: no network {network!r} is configured")
    return str(network)


def read_rows(source: str, path: Path) -> list[Row | Rejected]:
    """The checked rows of an export file; MigrationError when it is not one."""
    if not path.is_file():
        raise MigrationError(f"no such file: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise MigrationError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if source == "phantombot" and head == SQLITE_MAGIC:
        return phantombot_rows(_phantombot_db(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MigrationError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from err
    return parse(source, text)  # type: ignore[arg-type]


def _phantombot_db(path: Path) -> list[tuple[object, object]]:
    """(login, points) of PhantomBot's SQLite store (table phantombot_points)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return list(db.execute("SELECT variable, value FROM phantombot_points"))
    except sqlite3.DatabaseError as err:
        raise MigrationError(f"{path}: not a PhantomBot database ({err})") from err


def read_names(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"name", "user_id"} <= set(reader.fieldnames):
                raise MigrationError(f"--names {path}: expected the columns name,user_id")
            return {r["name"].strip().lower(): r["user_id"].strip() for r in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MigrationError(f"--names {path}: {err}") from err


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    points: int = 0
    unchanged: int = 0
    """Already imported: the same row again, or a member who has an opening balance."""
    skipped: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    elapsed_s: float = 0.0


def submit(
    r: Any, keys: Any, member_shards: int, network: str, parsed: Parsed,
    rep: ImportReport, timeout_s: float,
) -> None:  # fmt: skip
    """Apply the opening balances through the spend path, a window at a time."""
    from actors.spend import SyncSpendClient, record_key

    client = SyncSpendClient(r, keys, member_shards, timeout_s=timeout_s)
    try:
        now = time.time()
        for start in range(0, len(parsed.rows), SUBMIT_WINDOW):
            rows = parsed.rows[start : start + SUBMIT_WINDOW]
            transfers = [opening_transfer(network, row, now) for row in rows]
            known = r.mget([record_key(keys, t) for t in transfers])
            results = client.submit_many(transfers)
            for row, t, before, res in zip(rows, transfers, known, results, strict=True):
                if res.code == "ok" and before is None:
                    rep.imported += 1
                    rep.points += t.amount
                elif res.code in ("ok", "limit_reached"):
                    rep.unchanged += 1
                elif res.code == "conflict":
                    reason = "imported before with another balance or lifetime (kept)"
                    rep.rejected.append(Rejected(row.line, row.user_id, reason))
                else:
                    rep.rejected.append(Rejected(row.line, row.user_id, f"refused: {res.code}"))
    finally:
        client.close()


def run_import(
    args: argparse.Namespace, settings: Any, redis_of: Callable[..., Any],
    cli_error: type[Exception],
) -> int:  # fmt: skip

    from actors.keys import Keys
    from actors.spend import SpendTimeout

    network = _network(args, settings, cli_error)
    started = time.perf_counter()
    try:
        names = read_names(Path(args.names)) if args.names else None
        parsed = resolve(read_rows(args.source, Path(args.file)), names)
    except MigrationError as err:
        raise cli_error(str(err)) from None
    rep = ImportReport(rows=len(parsed.rows) + len(parsed.rejected) + parsed.skipped)
    rep.skipped = parsed.skipped
    rep.rejected = list(parsed.rejected)
    if not args.dry_run and parsed.rows:
        with redis_of(settings, own_if_stopped=False) as (url, _own):
            r = connect(url)
            try:
                submit(r, Keys.of(settings.namespace, url), settings.shards.member, network, parsed,
                       rep, settings.spend.timeout_s)  # fmt: skip
            except SpendTimeout as err:
                raise cli_error(
                    f"{err}: is the deployment running? Run the import again (it is safe)"
                ) from None
            finally:
                r.close()
    rep.elapsed_s = time.perf_counter() - started
    _print_report(args, network, parsed, rep)
    if args.rejects:
        with Path(args.rejects).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["line", "user_id", "reason"])
            w.writerows((x.line, x.user_id, x.reason) for x in rep.rejected)
    return 0


def _print_report(
    args: argparse.Namespace, network: str, parsed: Parsed, rep: ImportReport
) -> None:
    if args.dry_run:
        points = sum(row.balance for row in parsed.rows)
        print(f"dry run, network {network!r}: {rep.rows} rows, {len(parsed.rows)} would import "
              f"({points} points), {rep.skipped} empty, {len(rep.rejected)} rejected")  # fmt: skip
    else:
        print(f"network {network!r}: {rep.rows} rows, {rep.imported} imported ({rep.points} "
              f"points), {rep.unchanged} already imported, {rep.skipped} empty, "
              f"{len(rep.rejected)} rejected, in {rep.elapsed_s:.1f} s")  # fmt: skip
    for x in rep.rejected[:SHOW_REJECTED]:
        print(f"  rejected line {x.line} {x.user_id!r}: {x.reason}", file=sys.stderr)
    if len(rep.rejected) > SHOW_REJECTED:
        more = len(rep.rejected) - SHOW_REJECTED
        print(f"  ... and {more} more (--rejects FILE lists them all)", file=sys.stderr)


EXPORT_COLUMNS = ("user_id", "name", "balance", "lifetime", "tier", "tier_name", "streak",
                  "last_active_day")  # fmt: skip


def export_rows(
    r: Any, keys: Any, network: str, tiers: Any, now: float
) -> Iterator[tuple[Any, ...]]:
    """Every member of `network`: the EXPORT_COLUMNS, in no particular order."""
    import datetime as dt

    from engine.member import effective_streak, state_decoder

    today = int(now // 86_400)
    prefix = f"{network}:"
    for raw_key, raw in r.hscan_iter(keys.mstate, match=f"{_glob(network)}:*", count=2_000):
        nu = raw_key.decode()
        if not nu.startswith(prefix):
            continue
        s = state_decoder.decode(raw)
        day = "" if s.last_day < 0 else dt.date.fromordinal(719_163 + s.last_day).isoformat()
        yield (nu[len(prefix) :], s.name, s.balance, s.lifetime, s.tier, tiers.names[s.tier],
               effective_streak(s, today), day)  # fmt: skip


def _glob(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in text)


def run_export(
    args: argparse.Namespace, settings: Any, redis_of: Callable[..., Any],
    cli_error: type[Exception],
) -> int:  # fmt: skip

    from actors.keys import Keys

    network = _network(args, settings, cli_error)
    out = Path(args.out)
    if out.suffix not in (".csv", ".parquet"):
        raise cli_error("--out: the file must end in .csv or .parquet")
    if not out.parent.is_dir():
        raise cli_error(f"--out: no directory {out.parent}")
    tiers = settings.rulebook().network(network).tiers
    with redis_of(settings, own_if_stopped=True) as (url, _own):
        r = connect(url)
        try:
            rows = sorted(
                export_rows(r, Keys.of(settings.namespace, url), network, tiers, time.time())
            )
        finally:
            r.close()
    if out.suffix == ".csv":
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(EXPORT_COLUMNS)
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(zip(*rows, strict=True)) if rows else [()] * len(EXPORT_COLUMNS)
        types = (pa.string(), pa.string(), pa.int64(), pa.int64(), pa.int32(), pa.string(),
                 pa.int32(), pa.string())  # fmt: skip
        table = pa.table(
            {n: pa.array(c, type=t) for n, c, t in zip(EXPORT_COLUMNS, cols, types, strict=True)}
        )
        pq.write_table(table, out)
    print(f"network {network!r}: {len(rows)} members written to {out}")
    return 0
