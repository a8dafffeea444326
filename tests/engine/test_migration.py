"""Opening balances: parsing the sources, rejecting bad rows, applying once."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.member import MemberState
from engine.migration import (
    MigrationError,
    Rejected,
    Row,
    opening_transfer,
    parse,
    phantombot_rows,
    resolve,
    retier,
)
from engine.rules import TierRules
from engine.spend import LIMIT_REACHED, OK, Transfer, apply_transfer, digest, validate

user_ids = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=30
).filter(lambda s: s.strip() == s and s.isprintable())
amounts = st.integers(min_value=0, max_value=10**9)


def _csv(rows: list[tuple[str, int, int]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["user_id", "balance", "lifetime"])
    w.writerows(rows)
    return buf.getvalue()


@given(st.lists(st.tuples(user_ids, amounts, amounts), max_size=30))
def test_csv_rows_read_back_as_written(rows: list[tuple[str, int, int]]) -> None:
    parsed = parse("csv", _csv(rows))
    assert [(r.user_id, r.balance, r.lifetime) for r in parsed if isinstance(r, Row)] == rows


@given(st.lists(st.tuples(user_ids, amounts, amounts), max_size=30))
def test_resolve_keeps_first_row_per_member_and_counts_everything(
    rows: list[tuple[str, int, int]],
) -> None:
    p = resolve(parse("csv", _csv(rows)), None)
    assert len(p.rows) + len(p.rejected) + p.skipped == len(rows)
    assert len({r.user_id for r in p.rows}) == len(p.rows)
    firsts = {}
    for u, b, lt in rows:
        firsts.setdefault(u, (b, lt))
    for r in p.rows:
        assert (r.balance, r.lifetime) == firsts[r.user_id]
    assert all(x.reason.startswith("duplicate") for x in p.rejected)


def test_bad_rows_are_rejected_with_their_reason() -> None:
    text = "user_id,balance\nalice,10\n,5\nbob,-3\ncarol,ten\ndave,1.5\nalice,7\nerin,0\n"
    p = resolve(parse("csv", text), None)
    assert [r.user_id for r in p.rows] == ["alice"]
    reasons = {x.line: x.reason for x in p.rejected}
    assert reasons[2] == "empty user id"
    assert "balance must be 0" in reasons[3]
    assert "not a whole number" in reasons[4]
    assert "not a whole number" in reasons[5]
    assert reasons[6].startswith("duplicate")
    assert p.skipped == 1


@pytest.mark.parametrize(
    ("source", "text", "fragment"),
    [
        ("csv", "", "empty file"),
        ("csv", "name,points\nx,1\n", "no user column"),
        ("csv", "user_id,lifetime\nx,1\n", "no balance column"),
        ("csv", "user_id,balance\nx,1,2\n", "more fields"),
        ("streamelements", '{"users": 3}', "expected"),
        ("streamelements", "{not json", "not valid JSON"),
        ("phantombot", "user,amount\n", "no user column"),
    ],
)
def test_malformed_files_raise(source: str, text: str, fragment: str) -> None:
    with pytest.raises(MigrationError, match=fragment):
        parse(source, text)  # type: ignore[arg-type]


def test_streamelements_json_and_csv_key_by_lowercased_login() -> None:
    doc = {"users": [{"username": "Alice", "points": 120, "pointsAlltime": 900},
                     {"username": "bob", "points": 5}]}  # fmt: skip
    rows = parse("streamelements", json.dumps(doc))
    assert rows == [Row(1, "alice", 120, 900, "Alice"), Row(2, "bob", 5, -1, "bob")]
    rows = parse("streamelements", "Username,Points,AllTime\nAlice,120,900\n")
    assert [(r.user_id, r.balance, r.lifetime) for r in rows if isinstance(r, Row)] == [
        ("alice", 120, 900)
    ]


def test_phantombot_rows_and_names_map() -> None:
    rows = phantombot_rows([("Alice", "120"), ("bob", 7), ("ghost", 3)])
    p = resolve(rows, {"alice": "1001", "bob": "1002"})
    assert [(r.user_id, r.balance, r.name) for r in p.rows] == [
        ("1001", 120, "alice"), ("1002", 7, "bob")
    ]  # fmt: skip
    assert p.rejected == [Rejected(3, "ghost", "name not in the names map")]


TIERS = TierRules()


@given(amounts, st.integers(min_value=-1, max_value=10**9))
def test_an_opening_balance_applies_once_with_its_lifetime(balance: int, lifetime: int) -> None:
    row = Row(1, "u1", balance, lifetime)
    if balance == 0 and lifetime <= 0:
        return
    t = validate(opening_transfer("acme", row, 100.0))
    state = MemberState()
    result, entry = apply_transfer(state, t)
    assert result.code == OK
    assert retier(state, "acme", "u1", TIERS, 100.0) is None or state.tier > 0
    assert state.balance == balance
    assert state.lifetime == max(balance, lifetime)
    assert state.tier == TIERS.tier_for(state.lifetime)
    assert (entry is None) == (balance == 0)
    if entry is not None:
        assert entry.debit == "migration:acme"
        assert entry.credit == "member:acme:u1"
        assert entry.rule == "opening_balance"
        assert entry.amount == balance
    before = msgspec.msgpack.encode(state)
    again, entry2 = apply_transfer(state, opening_transfer("acme", Row(2, "u1", 99, 99), 200.0))
    assert again.code == LIMIT_REACHED
    assert entry2 is None
    assert msgspec.msgpack.encode(state) == before


def test_digest_of_a_transfer_without_lifetime_is_unchanged() -> None:
    t = Transfer("k", "acme", "u1", 10, "debit", "store:acme", "store", ts=5.0)
    fields = msgspec.structs.astuple(msgspec.structs.replace(t, ts=0.0))[:-3]  # nor to, to_user
    old = hashlib.blake2b(msgspec.msgpack.encode(fields), digest_size=16).digest()
    assert digest(t) == old
    assert digest(msgspec.structs.replace(t, lifetime=1, direction="credit")) != digest(t)


def test_lifetime_only_on_credits() -> None:
    t = Transfer("k", "acme", "u1", 10, "debit", "migration:acme", "x", lifetime=5)
    with pytest.raises(ValueError, match="lifetime"):
        validate(t)
