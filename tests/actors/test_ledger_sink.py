"""The ledger sink: every ledger entry lands in the DuckDB archive exactly once, through
kill -9 of the sink under load and a crash between its DuckDB commit and its XACK."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest
import ray
import redis

from actors.client import LedgerSinkActor, RallyClient
from actors.keys import Keys
from actors.ledger_sink import CONSUMER, GROUP, archive_offset_field
from actors.stream import ensure_group
from analytics import snapshot
from analytics.archive import LedgerArchive, LogEntry
from engine.member import state_decoder
from engine.rules import RuleBook
from gateway.audit import audit
from tests.actors.conftest import append, make_cfg
from tests.actors.test_crash import day_of_traffic


def poll(condition, timeout_s: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def member_entries(r: redis.Redis, keys: Keys) -> int:
    return sum(state_decoder.decode(v).entries for v in r.hvals(keys.mstate))


def archived(r: redis.Redis, keys: Keys) -> int:
    return int(r.hget(keys.stats, "entries_archived") or 0)


@pytest.fixture
def archive_path(tmp_path: Path) -> Path:
    return tmp_path / "analytics" / "ledger.duckdb"


def test_sink_kill9_under_load_stores_every_entry_once(
    ray_cluster: None, redis_server, namespace: str, archive_path: Path
) -> None:
    snaps = archive_path.parent / "snapshots"
    cfg = make_cfg(redis_server.url, namespace, archive_path=str(archive_path),
                   snapshot_dir=str(snaps), snapshot_interval_s=0.5)  # fmt: skip
    client = RallyClient(cfg).start(scheduler=False)
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    try:
        batches = day_of_traffic(n_batches=150, per_batch=100)
        feeding = threading.Thread(target=lambda: [append(r, cfg, b) for b in batches])
        feeding.start()
        poll(lambda: archived(r, keys) > 0, what="the first archived batch")
        old = client.kill9("archive")
        feeding.join()
        assert client.wait_idle(120), "backlog never drained after the restart"
        assert client.pids()["archive"] != old, "Ray did not restart the sink"
        total = member_entries(r, keys)
        assert total > 10_000
        assert LedgerArchive(archive_path).count() == (total, total)
        report = audit(r, keys, RuleBook({}), LedgerArchive(archive_path))
        assert report.ok, report.problems
        assert report.entries == report.archived == total
        # the accepted events and the tier changes landed beside the ledger, once each
        sent = [e for b in batches for e in b]
        arch = LedgerArchive(archive_path)
        assert arch.scalar("SELECT count(*) FROM events") == len(sent)
        assert arch.scalar("SELECT count(DISTINCT stream || entry_id || pos) FROM events") == len(
            sent
        )
        assert arch.scalar("SELECT count(DISTINCT id) FROM events") == len({e.id for e in sent})
        assert arch.scalar("SELECT count(*) FROM events WHERE text IS NOT NULL") == 0
        tiers = [f for _, f in r.xrange(keys.notices) if b"tier" in f]
        poll(lambda: arch.scalar("SELECT count(*) FROM tier_changes") == len(tiers),
             what="every tier change landed")  # fmt: skip
        assert len(tiers) > 0
        assert arch.scalar(
            "SELECT count(*) FROM (SELECT DISTINCT network, user_id, new_tier FROM tier_changes)"
        ) == len(tiers)
        # the sink snapshots periodically; a snapshot taken now covers everything
        poll(lambda: (snaps / "LATEST").exists(), what="a periodic snapshot")
        before = snapshot.latest(snaps).id
        poll(lambda: snapshot.latest(snaps).id != before, what="a snapshot after the drain")
        with snapshot.connect(snaps) as con:
            assert con.execute("SELECT count(*) FROM ledger").fetchone() == (total,)
            assert con.execute("SELECT count(*) FROM events").fetchone() == (
                len({e.id for e in sent}),
            )
    finally:
        client.stop()


def test_a_crash_between_the_duckdb_commit_and_the_ack_stores_nothing_twice(
    ray_cluster: None, redis_server, namespace: str, archive_path: Path
) -> None:
    """The sink read entries and committed them to DuckDB, then died before XACK: the next
    instance finds them pending, acknowledges them, and stores only what is new."""
    shards_only = make_cfg(redis_server.url, namespace)
    cfg = msgspec.structs.replace(shards_only, archive_path=str(archive_path))
    client = RallyClient(shards_only).start(scheduler=False)  # no sink yet
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    try:
        for m in range(cfg.member_shards):
            ensure_group(r, keys.ledgerlog(m), GROUP)
        batches = day_of_traffic(n_batches=20, per_batch=100)
        for b in batches[:10]:
            append(r, cfg, b)
        poll(lambda: client.backlog() == sum(pending_and_lag(r, keys, cfg.member_shards)))
        # what a sink did before dying: read (pending now), committed to DuckDB, no XACK
        streams = {keys.ledgerlog(m): ">" for m in range(cfg.member_shards)}
        got = r.xreadgroup(GROUP, CONSUMER, streams, count=100_000)
        log = [LogEntry(s.decode(), eid.decode(), f[b"l"]) for s, es in got for eid, f in es]
        done = LedgerArchive(archive_path)
        done.create()
        first = done.append(log).rows
        assert first == member_entries(r, keys) > 0
        for b in batches[10:]:
            append(r, cfg, b)
        sink = LedgerSinkActor.remote(cfg)
        try:
            assert client.wait_idle(120)
            total = member_entries(r, keys)
            assert total > first
            assert done.count() == (total, total)
            for m in range(cfg.member_shards):
                stream = keys.ledgerlog(m)
                last = r.xinfo_stream(stream)["last-generated-id"]
                assert r.hget(keys.offsets, archive_offset_field(stream)) == last
        finally:
            ray.get(sink.stop.remote())
            ray.kill(sink, no_restart=True)
    finally:
        client.stop()


def pending_and_lag(r: redis.Redis, keys: Keys, member_shards: int) -> list[int]:
    """The archive group's share of the backlog: nothing but it is left behind."""
    out = []
    for m in range(member_shards):
        for g in r.xinfo_groups(keys.ledgerlog(m)):
            if g["name"] == GROUP.encode():
                out.append(int(g["pending"]) + int(g["lag"] or 0))
    return out
