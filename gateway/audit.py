"""`rally audit`: the ledger invariants, checked against what Redis holds.

For every member: balance = sum of their ledger entries, the entry count matches, entry
ids are unique, the tier follows the lifetime points. For every network: the treasury
balance equals minus the points in circulation (credits - debits), so all postings sum
to zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from actors.keys import Keys
from engine.ledger import balance_of, entry_decoder, member_account
from engine.member import state_decoder
from engine.rules import RuleBook

SCAN_COUNT = 1_000


@dataclass
class AuditReport:
    members: int = 0
    entries: int = 0
    circulation: dict[str, int] = field(default_factory=dict)
    treasury: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str, limit: int = 1_000) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)


def audit(r: redis.Redis, keys: Keys, book: RuleBook) -> AuditReport:
    rep = AuditReport()
    cursor = 0
    while True:
        cursor, chunk = r.hscan(keys.mstate, cursor, count=SCAN_COUNT)
        if chunk:
            _check_members(r, keys, book, chunk, rep)
        if cursor == 0:
            break
    raw_treasury = r.hgetall(keys.treasury)
    rep.treasury = {k.decode(): int(v) for k, v in raw_treasury.items()}
    for network in set(rep.treasury) | set(rep.circulation):
        t, c = rep.treasury.get(network, 0), rep.circulation.get(network, 0)
        if t + c != 0:
            rep.problem(f"network {network}: treasury {t} + circulation {c} != 0")
    return rep


def _check_members(
    r: redis.Redis, keys: Keys, book: RuleBook, chunk: dict[bytes, bytes], rep: AuditReport
) -> None:
    names = [k.decode() for k in chunk]
    with r.pipeline(transaction=False) as pipe:
        for nu in names:
            pipe.lrange(keys.ledger(nu), 0, -1)
        ledgers = pipe.execute()
    for nu, raw_entries in zip(names, ledgers, strict=True):
        state = state_decoder.decode(chunk[nu.encode()])
        network, _, user = nu.partition(":")
        entries = [entry_decoder.decode(b) for b in raw_entries]
        rep.members += 1
        rep.entries += len(entries)
        account = member_account(network, user)
        ledger_balance = balance_of(account, entries)
        if ledger_balance != state.balance:
            rep.problem(f"member {nu}: balance {state.balance} != ledger {ledger_balance}")
        if len(entries) != state.entries:
            rep.problem(f"member {nu}: {state.entries} entries recorded, {len(entries)} in ledger")
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            rep.problem(f"member {nu}: duplicate ledger entry ids")
        if any(e.amount <= 0 for e in entries):
            rep.problem(f"member {nu}: an entry with a non-positive amount")
        tier = book.network(network).tiers.tier_for(state.lifetime)
        if tier != state.tier:
            rep.problem(
                f"member {nu}: tier {state.tier} but lifetime {state.lifetime} means {tier}"
            )
        rep.circulation[network] = rep.circulation.get(network, 0) + ledger_balance
