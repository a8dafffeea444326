"""`rally import` / `rally export` against a running deployment, as an operator runs them:
opening balances land once (a second run and a second source change nothing), rejected
rows are reported, a malformed file exits 2, the export reads back, `rally audit` passes."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.e2e.conftest import Deployment, get, rally_cli

NET = "tv"


def _member(dep: Deployment, user: str) -> dict:
    status, body = get(dep.url, f"/v1/members/{user}?network={NET}")
    assert status == 200, body
    return body


def test_import_twice_then_export_and_audit(deployment: Deployment, tmp_path: Path) -> None:
    cfg = ["--config", str(deployment.config)]
    src = tmp_path / "balances.csv"
    src.write_text(
        "user_id,balance,lifetime,name\nalice,600,2500,Alice\nbob,40,,Bob\n"
        ",5,,\ncarl,-1,,\ndave,abc,,\nalice,9,,\nerin,0,0,\n"
    )
    dry = rally_cli("import", "--from", "csv", str(src), "--dry-run", *cfg)
    assert dry.returncode == 0, dry.stderr
    assert "2 would import (640 points), 1 empty, 4 rejected" in dry.stdout
    assert "rejected line 4 'carl': balance must be 0" in dry.stderr

    rejects = tmp_path / "rejects.csv"
    first = rally_cli("import", "--from", "csv", str(src), "--rejects", str(rejects), *cfg)
    assert first.returncode == 0, first.stderr
    assert "2 imported (640 points), 0 already imported" in first.stdout
    assert len(list(csv.DictReader(rejects.open()))) == 4
    alice = _member(deployment, "alice")
    assert (alice["balance"], alice["lifetime_points"], alice["tier"]) == (600, 2500, "Gold")

    again = rally_cli("import", "--from", "csv", str(src), *cfg)
    assert again.returncode == 0, again.stderr
    assert "0 imported (0 points), 2 already imported" in again.stdout

    se = tmp_path / "se.json"  # alice again from another source: she keeps her first opening
    se.write_text(json.dumps({"users": [{"username": "Alice", "points": 999},
                                        {"username": "Frank", "points": 70}]}))  # fmt: skip
    other = rally_cli("import", "--from", "streamelements", str(se), *cfg)
    assert "1 imported (70 points), 0 already imported, 0 empty, 1 rejected" in other.stdout
    assert "'alice': imported before with another balance" in other.stderr
    assert _member(deployment, "alice")["balance"] == 600

    db = tmp_path / "phantombot.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE phantombot_points (section TEXT, variable TEXT, value TEXT)")
        con.executemany("INSERT INTO phantombot_points VALUES ('', ?, ?)",
                        [("Gina", "30"), ("nobody", "4")])  # fmt: skip
    names = tmp_path / "names.csv"
    names.write_text("name,user_id\ngina,7001\n")
    pb = rally_cli("import", "--from", "phantombot", str(db), "--names", str(names), *cfg)
    assert "1 imported (30 points)" in pb.stdout, pb.stdout + pb.stderr
    assert "'nobody': name not in the names map" in pb.stderr
    assert _member(deployment, "7001")["balance"] == 30

    bad = tmp_path / "bad.csv"
    bad.write_text("who,points\nx,1\n")
    refused = rally_cli("import", "--from", "csv", str(bad), *cfg)
    assert refused.returncode == 2
    assert "no user column" in refused.stderr
    assert "Traceback" not in refused.stderr

    out_csv, out_pq = tmp_path / "members.csv", tmp_path / "members.parquet"
    for out in (out_csv, out_pq):
        done = rally_cli("export", "--network", NET, "--out", str(out), *cfg)
        assert done.returncode == 0, done.stderr
    rows = {r["user_id"]: r for r in csv.DictReader(out_csv.open())}
    assert set(rows) == {"alice", "bob", "frank", "7001"}
    assert (rows["alice"]["balance"], rows["alice"]["tier_name"]) == ("600", "Gold")
    table = pq.read_table(out_pq).to_pylist()
    assert {r["user_id"]: r["balance"] for r in table} == {
        "alice": 600, "bob": 40, "frank": 70, "7001": 30
    }  # fmt: skip
    wrong = rally_cli("export", "--network", NET, "--out", str(tmp_path / "x.xlsx"), *cfg)
    assert wrong.returncode == 2
    assert ".csv or .parquet" in wrong.stderr

    started = time.monotonic()
    audit = rally_cli("audit", *cfg)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert time.monotonic() - started < 120
