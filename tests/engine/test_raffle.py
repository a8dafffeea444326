"""Raffles: lifecycle and limits, the Merkle tree, the commit-reveal draw and its fairness,
and verification from the published record (any changed byte fails it)."""

from __future__ import annotations

import hashlib
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.raffle import (
    Beacon,
    Holding,
    Leaf,
    Purchase,
    Raffle,
    RaffleError,
    Randomness,
    Terms,
    add_tickets,
    cancel,
    chain_beacon_of,
    chain_ref,
    close,
    commitment_of,
    create,
    draw,
    draw_key_of,
    enter_viewers,
    first_block_after,
    leaves_of,
    merkle_proof,
    merkle_root,
    open_raffle,
    publish,
    published_decoder,
    published_encoder,
    quote,
    select_winners,
    verify,
    verify_proof,
)

SEED = "5eed" * 16
BEACON = Beacon("admin", "drand-round-1234-abcdef", "1234")


def _open(**kw: object) -> Raffle:
    terms = Terms(id="r1", network="n", **kw)  # type: ignore[arg-type]
    r = create(terms, 100.0)
    open_raffle(r, commitment_of(SEED), 101.0)
    return r


def _buy(r: Raffle, user: str, n: int, tier: int = 0, sub: bool = False) -> Purchase:
    p = quote(r, user, n, tier=tier, subscriber=sub, now=102.0)
    add_tickets(r, user, p)
    return p


def _drawn(users: dict[str, int], winners: int = 1) -> Raffle:
    r = _open(price_points=10, max_tickets_per_member=100, winners=winners)
    for u, n in users.items():
        _buy(r, u, n)
    close(r, 200.0)
    draw(r, SEED, BEACON, 201.0)
    return r


# -- lifecycle and limits ------------------------------------------------------------------
def test_lifecycle_and_prices() -> None:
    r = _open(price_points=10, max_tickets_per_member=5, free_first_ticket=True)
    assert r.status == "open"
    assert len(r.terms_hash) == 64
    assert _buy(r, "a", 3).cost_points == 20  # the first ticket is free
    assert _buy(r, "a", 2).cost_points == 20
    with pytest.raises(RaffleError) as err:
        quote(r, "a", 1, tier=0, subscriber=False, now=103.0)
    assert (err.value.code, err.value.field) == ("ticket_limit", "tickets")
    close(r, 110.0)
    assert (r.status, r.count, r.tickets) == ("closed", 1, 5)
    with pytest.raises(RaffleError) as err:
        quote(r, "b", 1, tier=0, subscriber=False, now=111.0)
    assert err.value.code == "raffle_closed"
    with pytest.raises(RaffleError) as err:
        draw(r, "00" * 32, BEACON, 112.0)
    assert err.value.code == "seed_mismatch"
    assert draw(r, SEED, BEACON, 112.0)[0].user_id == "a"
    with pytest.raises(RaffleError) as err:
        cancel(r, 113.0)
    assert err.value.code == "raffle_drawn"


def test_min_tier_cooldown_close_time_and_kinds() -> None:
    r = _open(min_tier=2, winner_cooldown_s=3600, close_at=150)
    for kw, code in [
        ({"tier": 1}, "tier_too_low"),
        ({"tier": 2, "last_won_at": 90.0}, "winner_cooldown"),
    ]:
        with pytest.raises(RaffleError) as err:
            quote(r, "a", 1, subscriber=False, now=102.0, **kw)  # type: ignore[arg-type]
        assert err.value.code == code
    quote(r, "a", 1, tier=2, subscriber=False, now=102.0, last_won_at=-5000.0)
    with pytest.raises(RaffleError) as err:
        quote(r, "a", 1, tier=3, subscriber=False, now=150.0)
    assert err.value.code == "raffle_closed"
    kw_raffle = _open(kind="keyword", keyword="!join", channel="c", price_points=5)
    assert _buy(kw_raffle, "a", 1).cost_points == 5
    with pytest.raises(RaffleError) as err:
        quote(kw_raffle, "a", 1, tier=0, subscriber=False, now=102.0)
    assert err.value.code == "ticket_limit"
    give = _open(kind="giveaway", channel="c", min_tier=1)
    with pytest.raises(RaffleError) as err:
        quote(give, "a", 1, tier=1, subscriber=False, now=102.0)
    assert err.value.code == "not_purchasable"
    assert enter_viewers(give, [("a", 1, False), ("b", 0, False), ("a", 1, False)]) == 1
    with pytest.raises(ValueError, match="keyword"):
        Terms(id="x", network="n", kind="keyword", channel="c")


def test_cooldown_at_close_refunds_and_cancel_refunds_all() -> None:
    r = _open(price_points=10, max_tickets_per_member=9, winner_cooldown_s=100)
    _buy(r, "a", 2)
    _buy(r, "b", 3)
    refunds = close(r, 200.0, {"a": 150.0, "b": 50.0})
    assert [(x.user_id, x.points) for x in refunds] == [("a", 20)]
    assert r.excluded == ["a"]
    assert r.count == 1
    r2 = _open(price_points=10, max_tickets_per_member=9, free_first_ticket=True)
    _buy(r2, "a", 2)
    _buy(r2, "b", 1)
    assert [(x.user_id, x.points) for x in cancel(r2, 300.0)] == [("a", 10)]


def test_luck_by_tier_and_subscriber_capped() -> None:
    r = _open(luck_tier_pct=[100, 150, 300], luck_subscriber_pct=200, luck_cap_pct=400,
              max_tickets_per_member=10)  # fmt: skip
    assert _buy(r, "t0", 1).luck_pct == 100
    assert _buy(r, "t1s", 1, tier=1, sub=True).luck_pct == 300
    assert _buy(r, "t2s", 1, tier=2, sub=True).luck_pct == 400  # 600 capped
    assert _buy(r, "t9", 1, tier=9).luck_pct == 100  # a tier not listed
    _buy(r, "t0", 1, tier=2)  # luck rises with the member, never falls
    assert r.holdings["t0"].luck_pct == 300
    leaves = {leaf.user_id: leaf for leaf in leaves_of(r.holdings)}
    assert leaves["t0"].weight == 600
    assert leaves["t2s"].weight == 400


# -- Merkle --------------------------------------------------------------------------------
@given(st.integers(min_value=1, max_value=70))
def test_every_leaf_has_a_proof(n: int) -> None:
    leaves = leaves_of({f"u{i}": Holding(i % 3 + 1, 0, 100) for i in range(n)})
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        path = merkle_proof(leaves, i)
        assert verify_proof(leaf, path, root)
        assert not verify_proof(msgspec.structs.replace(leaf, tickets=leaf.tickets + 1), path, root)
        if path:
            bad = [(("0" * 64), path[0][1]), *path[1:]]
            assert not verify_proof(leaf, bad, root)


def test_merkle_is_documented_construction() -> None:
    def h(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    leaves = [Leaf("a", 0, 2, 200), Leaf("b", 2, 1, 100), Leaf("c", 3, 1, 150)]
    la, lb, lc = (
        h(b"\x00" + f"{x.user_id}|{x.first}|{x.tickets}|{x.weight}".encode()) for x in leaves
    )
    assert merkle_root(leaves) == h(b"\x01" + h(b"\x01" + la + lb) + lc).hex()
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()


# -- the draw ------------------------------------------------------------------------------
def test_randomness_is_counter_mode_with_rejection() -> None:
    key = "ab" * 32
    rng = Randomness(key)
    x0 = int.from_bytes(hashlib.sha256(bytes.fromhex(key) + (0).to_bytes(8, "big")).digest())
    assert rng.below(1000) == x0 % 1000
    assert rng.counter == 1
    # a bound just over 2^255 rejects about half the blocks: the counter moves on
    big = (1 << 255) + 1
    rng = Randomness(key)
    values = [rng.below(big) for _ in range(50)]
    assert all(0 <= v < big for v in values)
    assert rng.counter > 50


def test_several_winners_are_distinct_and_one_matches_the_fast_path() -> None:
    leaves = leaves_of({f"u{i}": Holding(i % 5 + 1, 0, 100 + i % 3) for i in range(300)})
    key = "cd" * 32
    many = select_winners(key, leaves, 50)
    assert len({w.user_id for w in many}) == 50
    assert select_winners(key, leaves, 1) == many[:1]
    assert len(select_winners(key, leaves[:3], 10)) == 3
    for w in many:
        leaf = next(x for x in leaves if x.user_id == w.user_id)
        assert leaf.first <= w.ticket < leaf.first + leaf.tickets


def _chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


CHI2_99_9 = {7: 24.32, 3: 16.27}
"""Chi-square critical values at p = 0.001 by degrees of freedom."""


def test_each_ticket_wins_with_its_fair_probability() -> None:
    """8 tickets (4 members holding 1, 2, 2 and 3): each ticket wins 1/8 of 16,000 draws."""
    leaves = leaves_of({"a": Holding(1), "b": Holding(2), "c": Holding(2), "d": Holding(3)})
    leaves = [msgspec.structs.replace(x, weight=x.tickets * 100) for x in leaves]
    draws = 16_000
    wins = [0] * 8
    for i in range(draws):
        key = hashlib.sha256(f"fixed-seed-{i}".encode()).hexdigest()
        wins[select_winners(key, leaves, 1)[0].ticket] += 1
    assert _chi_square(wins, [draws / 8] * 8) < CHI2_99_9[7], wins


def test_luck_multipliers_weigh_exactly_as_configured() -> None:
    """Luck 100, 150, 200 and 400 (one ticket each): wins in the ratio 2 : 3 : 4 : 8."""
    r = _open(luck_tier_pct=[100, 150, 200, 400])
    for tier, user in enumerate("abcd"):
        _buy(r, user, 1, tier=tier)
    leaves = leaves_of(r.holdings)
    assert [x.weight for x in leaves] == [100, 150, 200, 400]
    draws = 17_000
    wins = dict.fromkeys("abcd", 0)
    for i in range(draws):
        key = hashlib.sha256(f"luck-{i}".encode()).hexdigest()
        wins[select_winners(key, leaves, 1)[0].user_id] += 1
    expected = [draws * w / 850 for w in (100, 150, 200, 400)]
    assert _chi_square(list(wins.values()), expected) < CHI2_99_9[3], wins


def test_second_place_is_fair_too() -> None:
    """Without replacement: P(b second) = P(a first) * w_b/(W - w_a) + P(c first) * ..."""
    w = {"a": 1, "b": 2, "c": 3}
    leaves = leaves_of({u: Holding(n) for u, n in w.items()})
    total = sum(w.values())
    p2 = {u: sum(w[f] / total * w[u] / (total - w[f]) for f in w if f != u) for u in w}
    draws = 12_000
    seconds = dict.fromkeys(w, 0)
    for i in range(draws):
        key = hashlib.sha256(f"second-{i}".encode()).hexdigest()
        seconds[select_winners(key, leaves, 2)[1].user_id] += 1
    stat = _chi_square(list(seconds.values()), [draws * p2[u] for u in w])
    assert stat < 13.82, seconds  # 2 degrees of freedom, p = 0.001


# -- verification --------------------------------------------------------------------------
def test_verify_recomputes_the_winners() -> None:
    r = _drawn({"alice": 3, "bob": 1, "carol": 5, "dave": 2}, winners=2)
    p = publish(r)
    v = verify(p)
    assert v.ok, [c for c in v.checks if not c.ok]
    assert v.winners == r.winners
    assert len(v.winners) == 2
    key = draw_key_of("r1", r.terms_hash, 101, r.commitment, 200, 4, r.root, BEACON, SEED)
    assert key == r.draw_key == p.draw_key


def test_changing_any_published_byte_fails_verification() -> None:
    r = _drawn({"alice": 3, "bob": 1, "carol": 5}, winners=2)
    doc = published_encoder.encode(publish(r))
    assert verify(published_decoder.decode(doc)).ok
    for i in range(len(doc)):
        for repl in {ord("0"), ord("1"), ord("x")} - {doc[i]}:
            tampered = doc[:i] + bytes([repl]) + doc[i + 1 :]
            try:
                p = published_decoder.decode(tampered)
            except (msgspec.DecodeError, ValueError):
                continue  # not even a record: verification fails
            assert not verify(p).ok, (i, tampered[max(0, i - 30) : i + 30])


def test_a_raffle_not_drawn_does_not_verify() -> None:
    r = _open()
    _buy(r, "a", 1)
    close(r, 150.0)
    v = verify(publish(r))
    assert not v.ok
    assert not next(c for c in v.checks if c.name == "status").ok


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
        st.tuples(st.integers(1, 20), st.integers(100, 400)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 10),
    st.binary(min_size=32, max_size=32),
)
def test_draw_properties(held: dict[str, tuple[int, int]], k: int, seed: bytes) -> None:
    """Any entries and seed: distinct winners among the entrants, min(k, n) of them, each
    holding the ticket it won; the record verifies; the draw is a function of its inputs."""
    r = _open(max_tickets_per_member=20, winners=k)
    r.commitment = commitment_of(seed.hex())
    for user, (n, luck) in held.items():
        add_tickets(r, user, Purchase(n, 0, luck))
    close(r, 150.0)
    winners = draw(r, seed.hex(), BEACON, 160.0)
    assert len(winners) == min(k, len(held)) == len({w.user_id for w in winners})
    leaves = {x.user_id: x for x in leaves_of(r.holdings)}
    for w in winners:
        assert leaves[w.user_id].first <= w.ticket < leaves[w.user_id].first + held[w.user_id][0]
    p = publish(r)
    assert verify(p).ok
    assert verify(published_decoder.decode(published_encoder.encode(p))).winners == winners


def test_draw_needs_the_beacon_source_of_the_terms() -> None:
    r = _open(beacon="chain")
    _buy(r, "a", 1)
    close(r, 150.0)
    block = "0x" + "ab" * 32
    for beacon, code in [
        (BEACON, "bad_beacon"),
        (Beacon("chain", "short"), "bad_beacon"),
        (Beacon("chain", "0x" + "AB" * 32, "chain 1 block 7"), "bad_beacon"),  # not lowercase
        (Beacon("chain", "drand-round-123456", "chain 1 block 7"), "bad_beacon"),  # no hash
        (Beacon("chain", block, "block 7"), "bad_beacon"),  # the ref names no chain
    ]:
        with pytest.raises(RaffleError) as err:
            draw(r, SEED, beacon, 151.0)
        assert err.value.code == code
    draw(r, SEED, Beacon("chain", block, "chain 31337 block 7"), 152.0)
    assert verify(publish(r)).ok
    assert not math.isnan(r.drawn_at)


def test_first_block_after_is_a_binary_search_over_timestamps() -> None:
    stamps = [100, 100, 101, 105, 105, 105, 110, 111, 111, 200]
    looked: list[int] = []

    def ts(n: int) -> int:
        looked.append(n)
        return stamps[n]

    top = len(stamps) - 1
    for after in range(90, 210):
        want = next((n for n, t in enumerate(stamps) if t > after), None)
        looked.clear()
        assert first_block_after(after, 0, top, ts) == want, after
        assert len(looked) <= 1 + math.ceil(math.log2(len(stamps))) + 1
    assert first_block_after(100, 3, top, ts) == 3  # from a lower bound
    assert first_block_after(100, 5, 4, ts) is None  # an empty range
    # a long chain: a few dozen lookups, not a scan
    n = 10_000_000
    looked.clear()

    def far(k: int) -> int:
        looked.append(k)
        return 1_700_000_000 + 12 * k

    assert first_block_after(1_700_000_000 + 12 * 4_321_000 + 5, 0, n, far) == 4_321_001
    assert len(looked) <= 26
    assert first_block_after(1_700_000_000 + 12 * n, 0, n, far) is None  # not mined yet


def test_chain_beacon_form_and_verification() -> None:
    b = chain_beacon_of(31337, 12, "0x" + "AB" * 32)
    assert b == Beacon("chain", "0x" + "ab" * 32, "chain 31337 block 12")
    assert chain_beacon_of(1, 0, "cd" * 32).value == "0x" + "cd" * 32
    assert chain_ref(b.ref) == (31337, 12)
    bad_refs = ("block 12", "chain 0 block 1", "chain 1 block 01", "chain 1 block 1 ", "",
                "chain 1 block 0")  # fmt: skip
    for bad in bad_refs:
        assert chain_ref(bad) is None, bad
    r = _open(beacon="chain", max_tickets_per_member=5)
    _buy(r, "a", 2)
    _buy(r, "b", 1)
    close(r, 150.0)
    draw(r, SEED, b, 152.0)
    p = publish(r)
    assert verify(p).ok
    # any other value or ref of the beacon fails verification
    for changed in (
        Beacon("chain", "0x" + "ac" + "ab" * 31, b.ref),
        Beacon("chain", b.value, "chain 31337 block 13"),
        Beacon("chain", b.value, "block 12"),
        Beacon("admin", b.value, b.ref),
    ):
        q = published_decoder.decode(published_encoder.encode(p))
        q.beacon = changed
        result = verify(q)
        assert not result.ok, changed
        failed = {c.name for c in result.checks if not c.ok}
        assert failed & {"beacon", "draw_key"}, failed
