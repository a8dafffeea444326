"""The import scenario: `rally import` of --import-members opening balances.

Writes a CSV of that many members (user_id, balance, lifetime), then times what `rally
import --from csv` does: parse and check the file (gateway/migrate_cli.py read_rows +
engine.migration.resolve) and apply every row through the spend path (the member shards'
exactly-once commits). The same file is imported a second time: nothing may change (every
row reported as already imported), and that rerun is timed too.
"""

from __future__ import annotations

import random
import time
from typing import Any

from actors.redisconn import connect
from benchmarks.bench import Bench
from engine.migration import resolve
from gateway.migrate_cli import ImportReport, read_rows, submit

TIMEOUT_S = 600.0


def import_scenario(b: Bench) -> dict[str, Any]:
    o = b.opts
    n = o.import_members
    net = b.rally.config.network
    b.show(["import", f"{n:,} members", *[""] * 8])
    path = o.out / "import.csv"
    rng = random.Random(o.seed)
    with path.open("w") as f:
        f.write("user_id,balance,lifetime\n")
        for i in range(n):
            bal = rng.randrange(0, 5_000)
            f.write(f"mig{b.token}{i},{bal},{bal + rng.randrange(0, 20_000)}\n")
    summary: dict[str, Any] = {"members": n, "file_mb": round(path.stat().st_size / 2**20, 1)}
    r = connect(b.rally.redis_url)
    try:
        for run in ("first", "rerun"):
            t0 = time.perf_counter()
            parsed = resolve(read_rows("csv", path), None)
            t1 = time.perf_counter()
            rep = ImportReport()
            submit(r, b.rally.keys, b.rally.runtime.member_shards, net, parsed, rep, TIMEOUT_S)
            t2 = time.perf_counter()
            summary[f"{run}_parse_s"] = round(t1 - t0, 2)
            summary[f"{run}_apply_s"] = round(t2 - t1, 2)
            summary[f"{run}_members_per_s"] = round(n / (t2 - t0))
            summary[f"{run}_imported"] = rep.imported
            summary[f"{run}_unchanged"] = rep.unchanged
            summary[f"{run}_rejected"] = len(rep.rejected)
    finally:
        r.close()
        path.unlink(missing_ok=True)
    ok = summary["first_imported"] == n and summary["rerun_unchanged"] == n
    return {"status": "ok" if ok else "failed", "runs": [], "summary": summary}
