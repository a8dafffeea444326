"""engine/spend.py: transfers, guards, idempotency by key; hypothesis properties: a balance
never goes negative, the same key twice has one effect, balance = sum of the ledger."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ledger import Entry, balance_of, balances, member_account
from engine.member import MemberState, state_decoder, state_encoder
from engine.spend import (
    CONFLICT,
    COOLDOWN,
    INSUFFICIENT_POINTS,
    LIMIT_REACHED,
    OK,
    Guard,
    Record,
    Result,
    SpendError,
    Transfer,
    apply_transfer,
    digest,
    encode,
    entry_id,
    forget_expired,
    gift_leg,
    record_decoder,
    replay,
    transfer_decoder,
    validate,
)

NET = "acme"
ME = member_account(NET, "u1")


def debit(key: str, amount: int, ts: float = 100.0, **kw: object) -> Transfer:
    kw.setdefault("account", f"store:{NET}")
    kw.setdefault("rule", "store_redeem")
    return Transfer(key, NET, "u1", amount, "debit", ts=ts, **kw)  # type: ignore[arg-type]


def credit(key: str, amount: int, ts: float = 100.0, **kw: object) -> Transfer:
    kw.setdefault("account", f"store:{NET}")
    kw.setdefault("rule", "refund")
    return Transfer(key, NET, "u1", amount, "credit", ts=ts, **kw)  # type: ignore[arg-type]


def test_a_debit_moves_points_from_the_member_to_the_account() -> None:
    state = MemberState(balance=100, lifetime=100)
    result, entry = apply_transfer(state, debit("k1", 30, ref="item9", channel="c1"))
    assert result == Result("k1", OK, 70, entry_id=f"{NET}:u1/x/k1")
    assert entry == Entry(
        f"{NET}:u1/x/k1", 100.0, NET, ME, f"store:{NET}", 30, "store_redeem", "c1"
    )
    assert (state.balance, state.lifetime, state.entries) == (70, 100, 1)


def test_a_credit_moves_points_to_the_member_and_leaves_lifetime_alone() -> None:
    state = MemberState(balance=5, lifetime=5)
    result, entry = apply_transfer(state, credit("r1", 30))
    assert result.code == OK
    assert result.balance == 35
    assert entry is not None
    assert (entry.debit, entry.credit) == (f"store:{NET}", ME)
    assert state.lifetime == 5


def test_a_short_balance_is_refused_and_changes_nothing() -> None:
    state = MemberState(balance=29)
    before = state_encoder.encode(state)
    result, entry = apply_transfer(state, debit("k1", 30, guards=(Guard("item9", limit=1),)))
    assert (result.code, result.balance, entry) == (INSUFFICIENT_POINTS, 29, None)
    assert state_encoder.encode(state) == before


def test_a_limit_counts_uses_and_refuses_past_it() -> None:
    state = MemberState(balance=1_000)
    g = Guard("raffle:r1", limit=3, add=2)
    assert apply_transfer(state, debit("a", 10, guards=(g,)))[0].code == OK
    refused, _ = apply_transfer(state, debit("b", 10, guards=(g,)))
    assert (refused.code, refused.guard) == (LIMIT_REACHED, "raffle:r1")
    assert apply_transfer(state, debit("c", 10, guards=(Guard("raffle:r1", 3, 1),)))[0].ok
    assert state.uses["raffle:r1"].n == 3
    assert state.balance == 980


def test_a_limit_smaller_than_one_use_refuses_the_first() -> None:
    state = MemberState(balance=1_000)
    result, _ = apply_transfer(state, debit("a", 10, guards=(Guard("g", limit=1, add=2),)))
    assert result.code == LIMIT_REACHED


def test_a_guard_only_transfer_takes_its_guards_and_moves_no_point() -> None:
    """Amount 0 with guards (an item a voucher pays for): limits apply, no entry is posted."""
    state = MemberState(balance=0, lifetime=0)
    g = Guard("store:mug", limit=1)
    result, entry = apply_transfer(state, validate(debit("k1", 0, guards=(g,))))
    assert (result, entry) == (Result("k1", OK, 0), None)
    assert (state.balance, state.entries, state.uses["store:mug"].n) == (0, 0, 1)
    result, entry = apply_transfer(state, debit("k2", 0, guards=(g,)))
    assert (result.code, entry) == (LIMIT_REACHED, None)
    back = Guard("store:mug", limit=1, add=-1)
    assert apply_transfer(state, validate(credit("k3", 0, guards=(back,))))[0].code == OK
    assert state.uses.get("store:mug") is None or state.uses["store:mug"].n == 0


def test_a_cooldown_refuses_until_it_has_passed() -> None:
    state = MemberState(balance=1_000)
    g = Guard("item9", cooldown_s=60)
    assert apply_transfer(state, debit("a", 1, ts=100, guards=(g,)))[0].ok
    refused, _ = apply_transfer(state, debit("b", 1, ts=159.5, guards=(g,)))
    assert (refused.code, refused.retry_at) == (COOLDOWN, 160.0)
    assert apply_transfer(state, debit("c", 1, ts=160, guards=(g,)))[0].ok


def test_a_negative_add_gives_uses_back_and_is_never_refused() -> None:
    state = MemberState(balance=100)
    g = Guard("item9", limit=1)
    assert apply_transfer(state, debit("a", 10, guards=(g,)))[0].ok
    assert apply_transfer(state, debit("b", 10, guards=(g,)))[0].code == LIMIT_REACHED
    back = Guard("item9", limit=1, add=-1)
    assert apply_transfer(state, credit("refund-a", 10, guards=(back,)))[0].ok
    assert apply_transfer(state, debit("c", 10, guards=(g,)))[0].ok


def test_counters_are_forgotten_after_keep_s() -> None:
    state = MemberState(balance=100)
    g = Guard("raffle:r1", limit=1, keep_s=50)
    assert apply_transfer(state, debit("a", 1, ts=100, guards=(g,)))[0].ok
    assert apply_transfer(state, debit("b", 1, ts=149, guards=(g,)))[0].code == LIMIT_REACHED
    assert apply_transfer(state, debit("c", 1, ts=150, guards=(g,)))[0].ok
    assert not forget_expired(state, 199)
    assert forget_expired(state, 200)
    assert state.uses == {}


def test_a_replay_returns_the_recorded_result_and_a_changed_payload_conflicts() -> None:
    state = MemberState(balance=100)
    t = debit("k1", 30)
    result, _ = apply_transfer(state, t)
    record = record_decoder.decode(encode(Record(digest(t), result)))
    assert replay(record, msgspec.structs.replace(t, ts=999.0)) == result  # time is not payload
    assert replay(record, debit("k1", 31)).code == CONFLICT
    assert replay(record, debit("k1", 30, ref="other")).code == CONFLICT


def test_transfers_and_states_survive_the_wire() -> None:
    t = debit("k1", 30, guards=(Guard("g", 2, 1, 5.0, 60.0),), ref="item9")
    assert transfer_decoder.decode(encode(t)) == t
    state = MemberState(balance=100)
    apply_transfer(state, t)
    assert state_decoder.decode(state_encoder.encode(state)) == state


def test_an_old_member_state_without_uses_still_decodes() -> None:
    old = msgspec.msgpack.encode(["n", 5, 5, 0, 0, -1, -1e18, -1, 0, 0])
    assert state_decoder.decode(old).uses == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"key": ""}, "key"),
        ({"account": "member:acme:u2"}, "account"),
        ({"account": "treasury:acme"}, "account"),
        ({"account": "store:other"}, "account"),
        ({"rule": ""}, "rule"),
        ({"guards": (Guard("g", limit=-1),)}, "guards"),
    ],
)
def test_malformed_transfers_are_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(SpendError) as err:
        validate(msgspec.structs.replace(debit("k", 1), **change))
    assert err.value.field == field


# -- properties -------------------------------------------------------------------------------
class Ledger:
    """A member and the entries of what was applied, deduplicated by key as the shard does."""

    def __init__(self, balance: int) -> None:
        self.state = MemberState(balance=balance, lifetime=balance)
        self.entries = [Entry("seed", 0.0, NET, f"treasury:{NET}", ME, balance, "seed", "")]
        self.records: dict[str, Record] = {}

    def submit(self, t: Transfer) -> Result:
        known = self.records.get(t.key)
        if known is not None:
            return replay(known, t)
        result, entry = apply_transfer(self.state, t)
        self.records[t.key] = Record(digest(t), result)
        if entry is not None:
            self.entries.append(entry)
        return result


transfers = st.builds(
    lambda key, amount, is_debit, limit, cooldown, ts: Transfer(
        f"k{key}",
        NET,
        "u1",
        amount,
        "debit" if is_debit else "credit",
        f"raffle:{NET}:r1",
        "raffle_ticket",
        guards=(Guard("r1", limit=limit, cooldown_s=cooldown),),
        ts=ts,
    ),
    st.integers(0, 30),
    st.integers(1, 80),
    st.booleans(),
    st.integers(0, 5),
    st.sampled_from([0.0, 0.0, 10.0]),
    st.floats(0, 1_000, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.lists(transfers, max_size=60))
def test_balances_never_go_negative_and_equal_the_ledger(start: int, ts: list[Transfer]) -> None:
    book = Ledger(start)
    for t in ts:
        result = book.submit(t)
        assert book.state.balance >= 0
        assert result.code in (OK, INSUFFICIENT_POINTS, LIMIT_REACHED, COOLDOWN, CONFLICT)
    assert balance_of(ME, book.entries) == book.state.balance
    assert sum(balances(book.entries).values()) == 0
    assert book.state.entries == len(book.entries) - 1
    assert len({e.id for e in book.entries}) == len(book.entries)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.lists(transfers, max_size=40), st.data())
def test_the_same_key_twice_has_one_effect(
    start: int, ts: list[Transfer], data: st.DataObject
) -> None:
    once = Ledger(start)
    results = {}
    for t in ts:
        results.setdefault(t.key, once.submit(t))
    noisy = list(ts)
    for _ in range(data.draw(st.integers(0, 20))):
        if not ts:
            break
        i = data.draw(st.integers(0, len(ts) - 1))
        at = data.draw(st.integers(noisy.index(ts[i]) + 1, len(noisy)))
        noisy.insert(at, ts[i])
    twice = Ledger(start)
    for t in noisy:
        got = twice.submit(t)
        if t == next(x for x in ts if x.key == t.key):
            assert got == results[t.key]
    assert twice.entries == once.entries
    assert twice.state == once.state


def test_entry_ids_derive_from_member_and_key() -> None:
    assert entry_id(debit("k", 1)) == f"{NET}:u1/x/k"
    other = Transfer("k", NET, "u2", 1, "debit", f"store:{NET}", "store_redeem")
    assert entry_id(other) != entry_id(debit("k", 1))


def test_a_move_goes_between_two_accounts_and_leaves_the_member_alone() -> None:
    from engine import payout as po
    from engine.spend import account_deltas, apply_transfer, validate

    p = po.Payout(id="po_1", network="n", user_id="u", points=40, units=40, sink="webhook",
                  destination="http://x", key="k", digest=b"", created_at=0.0)  # fmt: skip
    t = po.payment(p)
    assert validate(t) is t
    state = MemberState(balance=7, entries=3)
    result, entry = apply_transfer(state, t)
    assert result.code == "ok"
    assert (state.balance, state.entries) == (7, 3), "the member's balance and entries stay"
    assert entry is not None
    assert (entry.debit, entry.credit, entry.amount) == ("payout:n", "payout:n:paid", 40)
    assert account_deltas(t) == [("payout:n", -40), ("payout:n:paid", 40)]
    assert account_deltas(po.reservation(p)) == [("payout:n", 40)]
    for bad in (
        msgspec.structs.replace(t, to=""),
        msgspec.structs.replace(t, to="payout:n"),
        msgspec.structs.replace(t, to="payout:m:paid"),
        msgspec.structs.replace(po.reservation(p), to="payout:n:paid"),
    ):
        with pytest.raises(SpendError) as err:
            validate(bad)
        assert err.value.field == "to"


def gift(key: str, amount: int, to: str = "u2", **kw: object) -> Transfer:
    return debit(key, amount, account=f"gift:{NET}", rule="gift", to_user=to, **kw)


def test_a_gift_debits_the_giver_and_its_leg_credits_the_recipient() -> None:
    giver, taker = MemberState(balance=100), MemberState(balance=5)
    t = validate(gift("m1", 40))
    result, out = apply_transfer(giver, t)
    leg = gift_leg(t)
    result2, into = apply_transfer(taker, leg)
    assert result.ok
    assert result2.ok
    assert (giver.balance, taker.balance) == (60, 45)
    assert out is not None
    assert into is not None
    ledger = [out, into]
    assert balance_of(f"gift:{NET}", ledger) == 0  # the holding account nets to zero
    assert balance_of(member_account(NET, "u2"), ledger) == 40
    assert balance_of(ME, ledger) == -40
    assert leg.user_id == "u2"
    assert leg.key != t.key
    assert gift_leg(t) == leg  # a replay of the debit yields the same leg, keyed the same


def test_a_gift_beyond_the_balance_is_refused_and_has_no_leg() -> None:
    giver = MemberState(balance=10)
    result, out = apply_transfer(giver, validate(gift("m1", 40)))
    assert result.code == INSUFFICIENT_POINTS
    assert out is None
    assert giver.balance == 10


@pytest.mark.parametrize(
    ("t", "field"),
    [
        (debit("k", 5, account=f"gift:{NET}", rule="gift"), "to_user"),
        (gift("k", 5, to="u1"), "to_user"),
        (debit("k", 5, to_user="u2"), "account"),
        (credit("k", 5, account=f"gift:{NET}", rule="gift", to_user="u2"), "account"),
        (gift("k", 5, to="bad\nid"), "to_user"),
    ],
)
def test_malformed_gifts_are_refused_naming_the_field(t: Transfer, field: str) -> None:
    with pytest.raises(SpendError) as err:
        validate(t)
    assert err.value.field == field


def test_digests_of_transfers_without_a_recipient_are_unchanged() -> None:
    """Records written before `to_user` existed still match a retry of the same transfer."""
    t = debit("k", 5)
    fields = msgspec.structs.astuple(msgspec.structs.replace(t, ts=0.0))[:-3]
    old = hashlib.blake2b(msgspec.msgpack.encode(fields), digest_size=16).digest()
    assert digest(t) == old
    t = credit("k", 5, account=f"migration:{NET}", lifetime=5)
    fields = msgspec.structs.astuple(msgspec.structs.replace(t, ts=0.0))[:-2]
    assert digest(t) == hashlib.blake2b(msgspec.msgpack.encode(fields), digest_size=16).digest()
    assert digest(gift("k", 5)) != digest(gift("k", 5, to="u3"))


_earning = st.tuples(
    st.sampled_from(["custom", "chat", "follow", "sub", "cheer", "watch"]),
    st.integers(1, 3_000),
    st.floats(0, 3 * 86_400, allow_nan=False),
)
_spending = st.tuples(
    st.integers(0, 60),  # applied before the credit of this index (past the end: after all)
    st.integers(1, 2_000),
    st.sampled_from(["debit", "credit"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_earning, max_size=40), st.lists(_spending, max_size=30))
def test_spends_never_change_what_credits_earn(
    earnings: list[tuple[str, int, float]], spendings: list[tuple[int, int, str]]
) -> None:
    """Issue 9 with the determinism issue: credits earn the same points, tiers, streaks and
    entries whether or not (and wherever) spends, refunds and prizes are interleaved; the
    balance differs by exactly the transfers applied."""
    from engine.member import Applied, Credit, apply_credit
    from engine.rules import NetworkRules

    rules = NetworkRules()
    credits = [
        Credit(f"c{i}", NET, "ch", "u1", "", 1_800_000_000 + ts, rule, points)
        for i, (rule, points, ts) in enumerate(sorted(earnings, key=lambda e: e[2]))
    ]

    def run(with_spends: bool) -> tuple[MemberState, list[Entry], int]:
        state, out, moved = MemberState(), Applied(), 0
        for i in range(len(credits) + 1):
            for k, (at, amount, direction) in enumerate(spendings if with_spends else []):
                if min(at, len(credits)) == i:
                    t = Transfer(f"s{k}", NET, "u1", amount, direction,  # type: ignore[arg-type]
                                 f"store:{NET}", "store_redeem", ts=1_800_000_000.0 + i)  # fmt: skip
                    result, _ = apply_transfer(state, t)
                    if result.code == OK:
                        moved += amount if direction == "credit" else -amount
                    assert state.balance >= 0
            if i < len(credits):
                apply_credit(state, credits[i], rules, rules.earn, out)
        return state, out.entries, moved

    plain, plain_entries, _ = run(False)
    mixed, mixed_entries, moved = run(True)
    assert mixed_entries == plain_entries
    assert (mixed.lifetime, mixed.tier, mixed.streak, mixed.last_day) == (
        plain.lifetime, plain.tier, plain.streak, plain.last_day,
    )  # fmt: skip
    assert mixed.balance == plain.balance + moved
