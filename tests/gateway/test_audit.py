"""`rally audit` judges the ledger of record: the DuckDB archive plus the ledger log it does
not hold yet; it catches a lost, a changed or a doubled entry in either."""

from __future__ import annotations

from pathlib import Path

import duckdb
import redis

from actors.client import RallyClient
from actors.keys import Keys
from actors.trim import trim_streams
from analytics.archive import LedgerArchive
from engine.rules import RuleBook
from gateway.audit import audit
from tests.actors.conftest import append, make_cfg
from tests.actors.test_crash import day_of_traffic


def test_audit_reads_the_archive_and_catches_tampering(
    ray_cluster: None, redis_server, namespace: str, tmp_path: Path
) -> None:
    archive = LedgerArchive(tmp_path / "ledger.duckdb")
    cfg = make_cfg(redis_server.url, namespace, archive_path=str(archive.path))
    client = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    book = RuleBook({})
    try:
        batches = day_of_traffic(n_batches=10, per_batch=100)
        for b in batches[:6]:
            append(r, cfg, b)
        assert client.wait_idle(60)
        trim_streams(r, keys, cfg)
        for b in batches[6:]:  # these stay in the ledger log too: not trimmed yet
            append(r, cfg, b)
        assert client.wait_idle(60)
    finally:
        client.stop()
    report = audit(r, keys, book, archive)
    assert report.ok, report.problems
    assert report.members == 300
    assert 0 < report.archived <= report.entries
    # without the archive, the trimmed ledger log is not the whole record
    alone = audit(r, keys, book)
    assert any("were trimmed before they were archived" in p for p in alone.problems)

    with duckdb.connect(str(archive.path)) as con:  # change one archived amount
        con.execute("UPDATE ledger SET amount = amount + 1 WHERE id = (SELECT min(id) FROM ledger)")
    changed = audit(r, keys, book, archive)
    assert any("!= ledger" in p for p in changed.problems), changed.problems
    assert any("treasury" in p for p in changed.problems)

    with duckdb.connect(str(archive.path)) as con:  # double one entry
        con.execute("UPDATE ledger SET amount = amount - 1 WHERE id = (SELECT min(id) FROM ledger)")
        con.execute("INSERT INTO ledger SELECT * FROM ledger LIMIT 1")
    doubled = audit(r, keys, book, archive)
    assert any("1 duplicate ledger entry ids" in p for p in doubled.problems), doubled.problems

    with duckdb.connect(str(archive.path)) as con:  # lose what one stream entry carried
        con.execute("DELETE FROM ledger WHERE rowid IN (SELECT max(rowid) FROM ledger)")
        con.execute(
            "DELETE FROM ledger WHERE (stream, entry_id) IN "
            "(SELECT stream, entry_id FROM ledger LIMIT 1)"
        )
    lost = audit(r, keys, book, archive)
    assert any("entries recorded" in p for p in lost.problems), lost.problems
