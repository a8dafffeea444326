"""The DuckDB ledger archive on its own: exactly-once appends, pages, the ledger of record."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.shards import ledger_encoder
from analytics.archive import (
    ArchiveBusy,
    LedgerArchive,
    LogEntry,
    is_earning,
    ledger_record,
)
from engine.ledger import Entry, member_account, treasury_account
from engine.streamid import stream_id

STREAM = "t:ledgerlog:0"


def entries(user: str, first: int, n: int, amount: int = 1) -> list[Entry]:
    return [
        Entry(f"{user}/{i}", 1_795_000_000.0 + i, "n", treasury_account("n"),
              member_account("n", user), amount, "chat", "c1")
        for i in range(first, first + n)
    ]  # fmt: skip


def log_entry(ms: int, batch: list[Entry], stream: str = STREAM) -> LogEntry:
    return LogEntry(stream, f"{ms}-0", ledger_encoder.encode(batch))


@pytest.fixture
def archive(tmp_path: Path) -> LedgerArchive:
    a = LedgerArchive(tmp_path / "analytics" / "ledger.duckdb")
    a.create()
    return a


def test_append_is_exactly_once_by_stream_offset(archive: LedgerArchive) -> None:
    log = [log_entry(1, entries("a", 0, 3)), log_entry(2, entries("b", 0, 2))]
    first = archive.append(log)
    assert (first.rows, first.offsets) == (5, {STREAM: "2-0"})
    again = archive.append([*log, log_entry(3, entries("a", 3, 1))])  # a replay, plus one new
    assert (again.rows, again.offsets) == (1, {STREAM: "3-0"})
    assert archive.count() == (6, 6)
    assert archive.offsets() == {STREAM: "3-0"}
    assert archive.append(log).rows == 0


def test_pages_newest_first_with_the_unarchived_tail(archive: LedgerArchive) -> None:
    archive.append([log_entry(ms, entries("a", 10 * ms, 10)) for ms in range(1, 4)])
    acct = member_account("n", "a")
    seen: list[dict[str, str]] = []

    def tail(offsets: dict[str, str]) -> list[Entry]:  # the log past the archive, oldest first
        seen.append(offsets)
        return entries("a", 40, 3)

    page, more = archive.member_page(acct, 0, 4, tail)
    assert [e.id for e in page] == ["a/42", "a/41", "a/40", "a/39"]
    assert more
    assert seen == [{STREAM: "3-0"}]
    page, more = archive.member_page(acct, 5, 3, tail)
    assert [e.id for e in page] == ["a/37", "a/36", "a/35"]
    assert more
    page, more = archive.member_page(acct, 30, 5, tail)
    assert [e.id for e in page] == ["a/12", "a/11", "a/10"]
    assert not more
    assert archive.member_page(acct, 1, 2, lambda _: []) == (
        entries("a", 37, 2)[::-1],
        True,
    )
    assert archive.member_page(member_account("n", "zz"), 0, 5, lambda _: []) == ([], False)


def test_pages_hold_entries_debiting_the_account_too(archive: LedgerArchive) -> None:
    acct = member_account("n", "a")
    spend = Entry("a/spend", 5.0, "n", acct, "store:n", 3, "store_redeem", "")
    archive.append([log_entry(1, [*entries("a", 0, 2), spend])])
    page, more = archive.member_page(acct, 0, 10, lambda _: [])
    assert [e.id for e in page] == ["a/spend", "a/1", "a/0"]
    assert not more


def test_pages_without_an_archive_file_come_from_the_log(tmp_path: Path) -> None:
    missing = LedgerArchive(tmp_path / "none.duckdb")
    page, more = missing.member_page("member:n:a", 1, 1, lambda o: entries("a", 0, 3))
    assert ([e.id for e in page], more) == (["a/1"], True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["n", "o"]),  # network
            st.sampled_from(["c1", "c2", ""]),  # channel
            st.sampled_from(["u1", "u2", "u:3"]),  # member (ids may hold ':')
            st.integers(0, 4),  # day
            st.sampled_from(["treasury", "store", "member"]),  # what the entry debits
            st.integers(1, 50),
        ),
        max_size=40,
    ),
    archived=st.integers(0, 40),
    day=st.integers(0, 4),
    days=st.sampled_from([1, 7, 30]),
)
def test_earned_is_the_sum_of_earnings_over_archive_and_tail(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str, str, int, str, int]],
    archived: int,
    day: int,
    days: int,
) -> None:
    """A period's board (LedgerArchive.earned, in SQL over the archive, plus the tail) is
    the plain sum of the entries `is_earning` keeps, wherever the archive/tail cut falls."""
    a = LedgerArchive(tmp_path_factory.mktemp("earned") / "ledger.duckdb")
    a.create()
    debits = {"treasury": treasury_account, "store": lambda n: f"store:{n}",
              "member": lambda n: member_account(n, "u9")}  # fmt: skip
    log = [
        Entry(f"e{i}", d * 86_400.0 + i, net, debits[src](net), member_account(net, user), amt,
              "chat", ch)
        for i, (net, ch, user, d, src, amt) in enumerate(rows)
    ]  # fmt: skip
    cut = min(archived, len(log))
    a.append([log_entry(i + 1, [e]) for i, e in enumerate(log[:cut])])
    since, until = (day - days + 1) * 86_400.0, (day + 1) * 86_400.0
    seen: list[dict[str, str]] = []

    def tail(offsets: dict[str, str]) -> list[Entry]:
        seen.append(offsets)
        return [e for e in log[cut:] if is_earning(e, "n", "c1", since, until)]

    want: dict[str, int] = {}
    for e in log:
        if is_earning(e, "n", "c1", since, until):
            user = e.credit[len(member_account("n", "")) :]
            want[user] = want.get(user, 0) + e.amount
    assert a.earned("n", "c1", since, until, tail) == want
    assert seen == [{STREAM: f"{cut}-0"} if cut else {}]


def test_record_adds_the_unarchived_log_and_finds_duplicates(archive: LedgerArchive) -> None:
    log = [log_entry(1, entries("a", 0, 3, amount=2)), log_entry(2, entries("b", 0, 2))]
    archive.append(log[:1])
    rec = ledger_record(archive, log)  # entry 1 archived, entry 2 only in the log
    assert (rec.rows, rec.unarchived, rec.duplicate_ids) == (5, 2, 0)
    assert rec.balance[member_account("n", "a")] == 6
    assert rec.balance[member_account("n", "b")] == 2
    assert rec.balance[treasury_account("n")] == -8
    assert rec.entries[member_account("n", "a")] == 3
    assert rec.archived_entries == {STREAM: 1}
    dup = ledger_record(archive, [*log, log_entry(3, entries("a", 1, 1))])
    assert dup.duplicate_ids == 1
    assert ledger_record(None, log).rows == 5


HOLD = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
    " sys.stdin.read()"
)


def test_a_reader_waits_while_another_process_holds_the_file(archive: LedgerArchive) -> None:
    archive.append([log_entry(1, entries("a", 0, 1))])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(archive.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(ArchiveBusy):
            LedgerArchive(archive.path, lock_timeout_s=0.0).count()
        with ThreadPoolExecutor(1) as pool:
            patient = pool.submit(archive.count)  # retries while the file is held
            assert holder.stdin is not None
            holder.stdin.close()  # let go
            assert patient.result() == (1, 1)
    finally:
        holder.kill()
        holder.wait()


WRITERS = 2
BATCHES = 40


def _write_batches(path: str, w: int, committed: Any) -> None:
    """A writer process: BATCHES appends to its own stream, each entry counted in
    `committed[w]` once its append returned."""
    archive = LedgerArchive(path)
    stream = f"w{w}:ledgerlog:0"
    for ms in range(1, BATCHES + 1):
        archive.append([log_entry(ms, entries(f"u{w}", ms, 1), stream)])
        committed[w] = ms


def test_every_commit_is_seen_and_kept_with_writers_and_readers_in_processes(
    archive: LedgerArchive,
) -> None:
    """Several writer processes share the file while this process reads it from several
    threads (as the gateway does): a read sees everything committed before it started,
    and the file keeps every commit. Regression: DuckDB's own lock alone let stale readers
    and other writers in, and commits were lost."""
    ctx = mp.get_context("spawn")
    committed = ctx.Array("q", [0] * WRITERS, lock=False)
    writers = [
        ctx.Process(target=_write_batches, args=(str(archive.path), w, committed))
        for w in range(WRITERS)
    ]
    stale: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            before = list(committed)
            seen = archive.offsets()
            for w, n in enumerate(before):
                got = stream_id(seen.get(f"w{w}:ledgerlog:0", "0-0"))[0]
                if got < n:
                    stale.append(f"w{w}: {n} committed before the read, {got} seen")

    for p in writers:
        p.start()
    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read) for _ in range(4)]
        for p in writers:
            p.join()
        done.set()
        for f in readers:
            f.result()
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert not stale, stale[:5]
    assert archive.count() == (WRITERS * BATCHES, WRITERS * BATCHES)
    for w in range(WRITERS):
        page, more = archive.member_page(member_account("n", f"u{w}"), 0, BATCHES, lambda _: [])
        assert [e.id for e in page] == [f"u{w}/{i}" for i in range(BATCHES, 0, -1)]
        assert not more
