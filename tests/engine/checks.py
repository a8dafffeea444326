"""Checks shared by the property tests and the state machine: run a stream of items
through a Reference, snapshot what members hold, and the ledger invariants."""

from __future__ import annotations

from collections import defaultdict

from engine.ledger import Entry, balance_of, member_account, treasury_account
from engine.member import state_encoder
from engine.reference import Reference
from tests.engine.strategies import BOOK, IGNORED, NETWORKS, Item


def run(its: list[Item], ref: Reference | None = None) -> Reference:
    ref = ref if ref is not None else Reference(BOOK)
    for it in its:
        if isinstance(it, float):
            ref.clock(it)
        else:
            ref.ingest([it], now=it.ts)
    return ref


def snapshot(
    ref: Reference,
) -> tuple[dict[tuple[str, str], bytes], dict[tuple[str, str], list[Entry]]]:
    """Everything a member holds, by value."""
    members = {k: state_encoder.encode(s) for k, s in ref.members.items()}
    return members, {k: list(v) for k, v in ref.ledger.items()}


def check_ledger(ref: Reference) -> None:
    """The ledger invariants every state of the pipeline keeps."""
    by_network: dict[str, list[Entry]] = defaultdict(list)
    for (network, user), state in ref.members.items():
        entries = ref.ledger.get((network, user), [])
        account = member_account(network, user)
        assert all(e.credit == account and e.network == network for e in entries)
        assert all(e.amount > 0 for e in entries)
        assert state.balance == balance_of(account, entries)
        assert state.lifetime == state.balance  # nothing is spent yet
        assert state.entries == len(entries)
        assert state.tier == BOOK.network(network).tiers.tier_for(state.lifetime)
        ids = [e.id for e in entries]
        assert len(ids) == len(set(ids)), "entry ids are unique per member"
        by_network[network] += entries
    assert set(ref.ledger) <= set(ref.members)
    for network in NETWORKS:
        entries = by_network[network]
        members = sum(s.balance for (n, _), s in ref.members.items() if n == network)
        assert members == -balance_of(treasury_account(network), entries)
        ids = [e.id for e in entries]
        assert len(ids) == len(set(ids)), "entry ids are unique within a network"
    for entries in ref.ledger.values():
        for e in entries:
            user = e.credit.split(":", 2)[2]
            assert (e.network, e.channel, user) not in IGNORED


def check_tier_changes(ref: Reference) -> None:
    tier: dict[tuple[str, str], int] = defaultdict(int)
    for change in ref.tier_changes:
        key = (change.network, change.user_id)
        assert change.old_tier == tier[key]
        assert change.new_tier != change.old_tier
        tier[key] = change.new_tier
    assert {k: s.tier for k, s in ref.members.items() if s.tier} == {
        k: t for k, t in tier.items() if t
    }
