"""`rally audit`: the ledger invariants, checked against the ledger of record.

The ledger of record is the DuckDB archive plus the ledger log entries (`ledgerlog:{m}`)
it does not hold yet; the per-member lists in Redis keep only the newest entries, so the
audit never reads them. For every member: balance = sum of their entries, the entry count
matches, the tier follows the lifetime points. Across the record: entry ids are unique,
amounts positive, and nothing is missing between the archive and the log (every stream
entry ever appended is in one of them). For every network: the treasury balance equals
minus the points in circulation (credits - debits) and in the other accounts (raffle pools,
the store, vouchers: each equal to its own ledger balance), so all postings sum to zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis

from actors.keys import Keys
from analytics.archive import LedgerArchive, LogEntry, Record, ledger_record
from engine.ledger import member_account, treasury_account
from engine.member import state_decoder
from engine.rules import RuleBook
from engine.store import redemption_decoder
from engine.streamid import stream_id
from engine.voucher import batch_decoder
from gateway.store import StoreKeys

SCAN_COUNT = 1_000
XRANGE_COUNT = 1_000


@dataclass
class AuditReport:
    members: int = 0
    entries: int = 0
    archived: int = 0
    """Of `entries`, how many were read from the archive."""
    circulation: dict[str, int] = field(default_factory=dict)
    treasury: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    """Other accounts (raffle pools, the store, vouchers) and their balances in Redis."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str, limit: int = 1_000) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)


@dataclass
class LogRead:
    """The ledger log streams as read from Redis: their entries and, per stream, the last
    id read and how many entries were ever appended up to it (None if Redis cannot say)."""

    entries: list[LogEntry] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)
    added: dict[str, int | None] = field(default_factory=dict)


def audit(
    r: redis.Redis, keys: Keys, book: RuleBook, archive: LedgerArchive | None = None
) -> AuditReport:
    """Check the ledger of record (the archive, if given, plus the ledger logs in Redis)
    against the member states and treasuries Redis holds."""
    rep = AuditReport()
    log = read_ledger_logs(r, keys)
    record = ledger_record(archive, log.entries)
    rep.entries = record.rows
    rep.archived = record.rows - record.unarchived
    _check_record(record, log, rep)
    seen: set[str] = set()
    cursor = 0
    while True:
        cursor, chunk = r.hscan(keys.mstate, cursor, count=SCAN_COUNT)
        for raw_key, raw_state in chunk.items():
            nu = raw_key.decode()
            seen.add(nu)
            _check_member(book, nu, raw_state, record, rep)
        if cursor == 0:
            break
    for account in record.balance:
        if account.startswith("member:") and account[7:] not in seen:
            rep.problem(f"{account} has ledger entries but no member state")
    raw_treasury = r.hgetall(keys.treasury)
    rep.treasury = {k.decode(): int(v) for k, v in raw_treasury.items()}
    held = _check_accounts(r, keys, record, rep)
    _check_vouchers(r, keys, rep)
    for network in set(rep.treasury) | set(rep.circulation) | set(held):
        t, c = rep.treasury.get(network, 0), rep.circulation.get(network, 0)
        o = held.get(network, 0)
        if t + c + o != 0:
            rep.problem(f"network {network}: treasury {t} + circulation {c} + accounts {o} != 0")
        in_ledger = record.balance.get(treasury_account(network), 0)
        if in_ledger != t:
            rep.problem(f"network {network}: treasury {t} but its ledger account says {in_ledger}")
    return rep


def _check_accounts(r: redis.Redis, keys: Keys, record: Record, rep: AuditReport) -> dict[str, int]:
    """Every other account (raffle pools, the store, vouchers: `accounts` in Redis) equals
    its ledger balance. Returns what they hold per network."""
    raw = r.hgetall(keys.accounts)
    rep.accounts = {k.decode(): int(v) for k, v in raw.items()}
    for account in record.balance:
        kind = account.partition(":")[0]
        if kind not in ("member", "treasury") and account not in rep.accounts:
            rep.accounts[account] = 0  # the ledger moved points there; Redis never heard of it
    held: dict[str, int] = {}
    for account, balance in sorted(rep.accounts.items()):
        in_ledger = record.balance.get(account, 0)
        if in_ledger != balance:
            rep.problem(f"account {account}: balance {balance} but its ledger says {in_ledger}")
        network = account.split(":")[1] if account.count(":") else ""
        held[network] = held.get(network, 0) + balance
    return held


def _check_vouchers(r: redis.Redis, keys: Keys, rep: AuditReport) -> None:
    """Each voucher batch's account issued its points once per code claimed: at most once
    per code, never more codes than the batch has, at least the codes marked redeemed, and
    the redeemed counter agrees with the claims (actors/vouchers.py)."""
    for raw in sorted(r.scan_iter(match=keys.voucher_batches("*"), count=SCAN_COUNT)):
        network = raw.decode()[len(keys.voucher_batches("")) :]
        redeemed = r.hgetall(keys.voucher_redeemed(network))
        for bid, blob in r.hgetall(raw).items():
            batch = batch_decoder.decode(blob)
            account = f"voucher:{network}:{batch.id}"
            issued = -rep.accounts.get(account, 0)
            by_serial = r.hgetall(keys.voucher_claims(network, batch.id))
            claims = [json.loads(c) for c in by_serial.values()]
            done = sum(1 for c in claims if c["s"] == "done")
            counted = int(redeemed.get(bid, 0))
            if counted != done:
                rep.problem(f"{account}: {counted} redeemed counted but {done} claims done")
            if batch.item:
                _check_item_vouchers(r, keys, rep, batch.id, network, issued, by_serial)
                continue
            if not batch.points:
                continue
            codes, rest = divmod(issued, batch.points)
            if rest or not done <= codes <= min(batch.count, len(claims) or codes):
                rep.problem(
                    f"{account}: issued {issued} points ({batch.points} a code) for "
                    f"{len(claims)} codes claimed, {done} redeemed, of {batch.count}"
                )


def _check_item_vouchers(
    r: redis.Redis, keys: Keys, rep: AuditReport, batch: str, network: str, issued: int,
    claims: dict[bytes, bytes],
) -> None:  # fmt: skip
    """A batch worth an item moves no points; each code redeemed names a free redemption of
    that code (gateway/vouchers.py)."""
    account = f"voucher:{network}:{batch}"
    if issued:
        rep.problem(f"{account}: a batch worth an item issued {issued} points")
    sk = StoreKeys(keys, network)
    for serial, blob in claims.items():
        claim = json.loads(blob)
        if claim["s"] != "done":
            continue
        raw = r.get(sk.redemption(claim["e"]))
        red = None if raw is None else redemption_decoder.decode(raw)
        code_id = f"{batch}/{serial.decode()}"
        if red is None or red.voucher != code_id or red.cost != 0:
            rep.problem(f"{account}: code {code_id} redeemed without its free redemption")


def read_ledger_logs(r: redis.Redis, keys: Keys) -> LogRead:
    """Every entry of every ledger log stream, up to each stream's last id at the time."""
    out = LogRead()
    pattern = keys.ledgerlog("*")
    for raw in sorted(r.scan_iter(match=pattern, count=SCAN_COUNT, _type="stream")):
        stream = raw.decode()
        info = r.xinfo_stream(stream)
        last = info["last-generated-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        out.last[stream] = last
        added = info.get("entries-added")  # Redis 7
        out.added[stream] = None if added is None else int(added)
        start = "-"
        while True:
            got = r.xrange(stream, start, last, count=XRANGE_COUNT)
            for eid, fields in got:
                out.entries.append(LogEntry(stream, eid.decode(), fields[b"l"]))
            if len(got) < XRANGE_COUNT:
                break
            start = "(" + got[-1][0].decode()
    return out


def _check_record(record: Record, log: LogRead, rep: AuditReport) -> None:
    if record.duplicate_ids:
        rep.problem(f"{record.duplicate_ids} duplicate ledger entry ids")
    if record.non_positive:
        rep.problem(f"{record.non_positive} ledger entries with a non-positive amount")
    in_log: dict[str, int] = {}
    for x in log.entries:
        offset = record.offsets.get(x.stream)
        if offset is None or stream_id(x.entry_id) > stream_id(offset):
            in_log[x.stream] = in_log.get(x.stream, 0) + 1
    for stream, added in log.added.items():
        offset = record.offsets.get(stream)
        if added is None or (
            offset is not None and stream_id(offset) > stream_id(log.last[stream])
        ):
            continue  # the archive moved on since the log was read: nothing to compare
        held = record.archived_entries.get(stream, 0) + in_log.get(stream, 0)
        if held != added:
            rep.problem(
                f"{stream}: {added} entries appended, but archive + log hold {held} "
                "(entries were trimmed before they were archived)"
            )


def _check_member(
    book: RuleBook, nu: str, raw_state: bytes, record: Record, rep: AuditReport
) -> None:
    state = state_decoder.decode(raw_state)
    network, _, user = nu.partition(":")
    account = member_account(network, user)
    rep.members += 1
    balance = record.balance.get(account, 0)
    count = record.entries.get(account, 0)
    if balance != state.balance:
        rep.problem(f"member {nu}: balance {state.balance} != ledger {balance}")
    if state.balance < 0:
        rep.problem(f"member {nu}: negative balance {state.balance}")
    if count != state.entries:
        rep.problem(f"member {nu}: {state.entries} entries recorded, {count} in ledger")
    tier = book.network(network).tiers.tier_for(state.lifetime)
    if tier != state.tier:
        rep.problem(f"member {nu}: tier {state.tier} but lifetime {state.lifetime} means {tier}")
    rep.circulation[network] = rep.circulation.get(network, 0) + balance
