"""The double-entry ledger: immutable entries moving points between accounts."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Moves `amount` (> 0) points from account `debit` to account `credit`.

    The id derives from the source credit id and the rule, so a replay yields the same ids.
    """

    id: str
    ts: float
    network: str
    debit: str
    credit: str
    amount: int
    rule: str
    channel: str


def treasury_account(network: str) -> str:
    return f"treasury:{network}"


TREASURY_PREFIX = treasury_account("")
"""Every treasury account starts so: entries debiting one are points earned (the
leaderboards' and the feed's earnings)."""


def member_account(network: str, user_id: str) -> str:
    return f"member:{network}:{user_id}"


def balance_of(account: str, entries: Iterable[Entry]) -> int:
    """What the ledger says `account` holds."""
    total = 0
    for e in entries:
        if e.credit == account:
            total += e.amount
        if e.debit == account:
            total -= e.amount
    return total


def balances(entries: Iterable[Entry]) -> dict[str, int]:
    """Every account's balance from the entries; double entry makes them sum to zero."""
    out: dict[str, int] = {}
    for e in entries:
        out[e.credit] = out.get(e.credit, 0) + e.amount
        out[e.debit] = out.get(e.debit, 0) - e.amount
    return out


entry_encoder = msgspec.msgpack.Encoder()
entry_decoder = msgspec.msgpack.Decoder(Entry)
