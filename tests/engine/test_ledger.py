"""The ledger: account names, balances from entries, zero-sum postings, Entry encoding."""

from __future__ import annotations

from engine.ledger import (
    Entry,
    balance_of,
    balances,
    entry_decoder,
    entry_encoder,
    member_account,
    treasury_account,
)
from engine.routing import shard_of


def _entries() -> list[Entry]:
    t, a, b = treasury_account("n"), member_account("n", "a"), member_account("n", "b")
    return [
        Entry("1/x", 1.0, "n", t, a, 10, "x", "c"),
        Entry("2/x", 2.0, "n", t, b, 5, "x", "c"),
        Entry("3/spend", 3.0, "n", a, "store:n", 4, "spend", "c"),
        Entry("4/move", 4.0, "n", a, b, 1, "move", "c"),
    ]


def test_account_names() -> None:
    assert treasury_account("tw") == "treasury:tw"
    assert member_account("tw", "123") == "member:tw:123"


def test_balance_of_sums_credits_minus_debits() -> None:
    entries = _entries()
    assert balance_of(member_account("n", "a"), entries) == 10 - 4 - 1
    assert balance_of(member_account("n", "b"), entries) == 6
    assert balance_of(treasury_account("n"), entries) == -15
    assert balance_of("store:n", entries) == 4
    assert balance_of("nobody", entries) == 0
    accounts = {e.debit for e in entries} | {e.credit for e in entries}
    assert sum(balance_of(acc, entries) for acc in accounts) == 0
    assert sum(balances(entries).values()) == 0


def test_entry_round_trips_through_msgpack() -> None:
    for e in _entries():
        assert entry_decoder.decode(entry_encoder.encode(e)) == e


def test_shard_of_is_stable_and_in_range() -> None:
    assert shard_of("tw:123", 1) == 0
    assert shard_of("tw:123", 16) == 14  # crc32: the same in every process and run
    seen = {shard_of(f"tw:{i}", 8) for i in range(200)}
    assert seen == set(range(8))
