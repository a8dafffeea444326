"""Spends: idempotent transfers between a member and another account, with guards.

A `Transfer` is a command on one member: move `amount` points from the member to `account`
(direction "debit": a raffle ticket, a store redemption) or from `account` to the member
("credit": a refund, a prize, a voucher), or, on the member's behalf, from `account` to
another account `to` ("move": a payout's reserved points become paid when it settles; the
member's balance is not touched). An `amount` of 0 with guards is a guard-only
transfer (an item a voucher pays for): its guards are checked and taken, no point moves and
no ledger entry is posted. Its `key` is the idempotency key: the ledger entry
id derives from it, and the member shard records every outcome under it, so the same key
applied twice has one effect and the same key with another payload is a `conflict`.

Guards are per-member counters held in the member's state and checked and taken together
with the debit (tickets bought in a raffle <= max, redemptions of an item <= limit, "not
before" cooldowns), so no limit needs a lock across actors. Time is an argument (`ts` of
the transfer, stamped when it was submitted); this module does no I/O.

Transfers never take a balance below zero, and change `lifetime` (tiers follow what a
member earned) only by their `lifetime` field: points earned elsewhere that an opening
balance imported from another bot brings along (engine/migration.py).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from engine.ledger import Entry, member_account
from engine.member import MemberState, Use

Direction = Literal["debit", "credit", "move"]
OK = "ok"
INSUFFICIENT_POINTS = "insufficient_points"
LIMIT_REACHED = "limit_reached"
COOLDOWN = "cooldown"
CONFLICT = "conflict"
CODES = (OK, INSUFFICIENT_POINTS, LIMIT_REACHED, COOLDOWN, CONFLICT)
"""Every outcome of a transfer: stable codes that the gateway maps to HTTP statuses."""
ACCOUNT_KINDS = ("raffle", "store", "voucher", "payout", "migration", "bonus", "gift")
"""Kinds of account a transfer may move points to or from: `{kind}:{network}[:{id}]`.
The treasury is not a transfer target. `gift:{network}` carries member-to-member gifts
(`Transfer.to_user`): it holds a gift between its two legs, and nets to zero after both."""
MAX_AMOUNT = 10**12
MAX_GUARDS = 8
MAX_TEXT = 200


class SpendError(ValueError):
    """A transfer that can never apply (malformed): refused before it is submitted."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Guard(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A per-member counter `key` checked and taken with the transfer.

    Refused with `limit_reached` when `limit` > 0 and the uses so far plus `add` pass it;
    with `cooldown` when the last use was less than `cooldown_s` ago. A negative `add`
    gives uses back (a refund) and is never refused. The counter is forgotten `keep_s`
    after its last use (0: kept as long as the member), which bounds the state.
    """

    key: str
    limit: int = 0
    add: int = 1
    cooldown_s: float = 0.0
    keep_s: float = 0.0


class Transfer(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Move `amount` points between member `user_id` of `network` and `account`."""

    key: str
    network: str
    user_id: str
    amount: int
    direction: Direction
    account: str
    rule: str
    ref: str = ""
    """What the transfer is for (a raffle id, an item id, a code id)."""
    channel: str = ""
    guards: tuple[Guard, ...] = ()
    ts: float = 0.0
    """When it was submitted: the ledger entry's time and the clock of the guards. Not part
    of the payload a retry must repeat (see `digest`)."""
    lifetime: int = 0
    """Lifetime points an accepted credit adds (an imported opening balance); the caller
    moves the member's tier (engine/migration.py `retier`)."""
    to: str = ""
    """The account a "move" credits (`account` is debited); "" for the other directions."""
    to_user: str = ""
    """A gift: the member that an accepted debit (to `gift:{network}`) is passed on to. The
    member shard that accepts it appends the credit leg (`gift_leg`) to the recipient's
    shard in the same commit, so the gift arrives exactly once even if anything dies."""


class Result(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """The outcome of a transfer, recorded under its key and sent to whoever waits."""

    key: str
    code: str
    balance: int = 0
    """The member's balance after the transfer (or when it was refused)."""
    entry_id: str = ""
    retry_at: float = 0.0
    """For `cooldown`: when the guard allows the next use."""
    guard: str = ""
    """For `limit_reached` and `cooldown`: the key of the guard that refused."""

    @property
    def ok(self) -> bool:
        return self.code == OK


class Record(msgspec.Struct, frozen=True, array_like=True):
    """What the member shard keeps under a transfer's key: its payload digest and result."""

    digest: bytes
    result: Result


_encoder = msgspec.msgpack.Encoder()
transfer_decoder = msgspec.msgpack.Decoder(Transfer)
result_decoder = msgspec.msgpack.Decoder(Result)
record_decoder = msgspec.msgpack.Decoder(Record)
replies_encoder = msgspec.msgpack.Encoder()
replies_decoder = msgspec.msgpack.Decoder(list[tuple[str, Result]])
"""A reply stream entry (field `rs`): (record key, result) of each transfer a commit answered."""


def encode(obj: Transfer | Result | Record) -> bytes:
    return _encoder.encode(obj)


LATER_FIELDS = ("lifetime", "to", "to_user")
"""Transfer's last fields, in order, added after records of it were first kept."""


def digest(t: Transfer) -> bytes:
    """The payload a retry must repeat: everything but the submission time."""
    fields = msgspec.structs.astuple(msgspec.structs.replace(t, ts=0.0))
    n = len(fields)
    for name in reversed(LATER_FIELDS):  # a transfer that leaves the fields added after it
        if getattr(t, name):  # was recorded at their defaults digests as it did then
            break
        n -= 1
    fields = fields[:n]
    return hashlib.blake2b(_encoder.encode(fields), digest_size=16).digest()


def entry_id(t: Transfer) -> str:
    """The ledger entry id of a transfer: a function of the member and the key."""
    return f"{t.network}:{t.user_id}/x/{t.key}"


def _text(value: str, field: str, limit: int = MAX_TEXT) -> None:
    if not value or len(value) > limit or not value.isprintable():
        raise SpendError(f"{field} must be 1-{limit} printable characters", field)


def validate(t: Transfer) -> Transfer:
    """`t` if it can apply; raises SpendError naming the field otherwise."""
    _text(t.key, "key")
    _text(t.network, "network")
    _text(t.user_id, "user_id")
    _text(t.rule, "rule", 64)
    if type(t.amount) is not int or not 0 <= t.amount <= MAX_AMOUNT:
        raise SpendError(f"amount must be an integer from 1 to {MAX_AMOUNT}", "amount")
    if t.amount == 0 and not t.guards:
        raise SpendError("amount 0 is for a guard-only transfer: give guards", "amount")
    if t.direction not in ("debit", "credit", "move"):
        raise SpendError("direction must be debit, credit or move", "direction")
    if (t.direction == "move") != bool(t.to):
        raise SpendError("a move (and only a move) names the account `to` credit", "to")
    if t.direction == "move" and (
        t.guards or t.to == t.account or not _account_ok(t.to, t.network)
    ):
        raise SpendError(f"to must be another {{kind}}:{t.network}[:id] account, no guards", "to")
    if type(t.lifetime) is not int or not 0 <= t.lifetime <= MAX_AMOUNT:
        raise SpendError(f"lifetime must be an integer from 0 to {MAX_AMOUNT}", "lifetime")
    if t.lifetime and t.direction != "credit":
        raise SpendError("only a credit adds lifetime points", "lifetime")
    if not _account_ok(t.account, t.network):
        raise SpendError(
            f"account must be {{{'|'.join(ACCOUNT_KINDS)}}}:{t.network}[:id]", "account"
        )
    if t.to_user or t.account.startswith("gift:"):
        if t.direction != "debit" or t.account != f"gift:{t.network}":
            raise SpendError(f"a gift is a debit to gift:{t.network}", "account")
        _text(t.to_user, "to_user")
        if t.to_user == t.user_id:
            raise SpendError("a member cannot give points to itself", "to_user")
    if len(t.guards) > MAX_GUARDS:
        raise SpendError(f"at most {MAX_GUARDS} guards", "guards")
    for g in t.guards:
        _text(g.key, "guards.key")
        if g.limit < 0 or g.cooldown_s < 0 or g.keep_s < 0:
            raise SpendError("guard limit, cooldown_s and keep_s must be >= 0", "guards")
    return t


def _account_ok(account: str, network: str) -> bool:
    kind, _, rest = account.partition(":")
    return kind in ACCOUNT_KINDS and rest.partition(":")[0] == network


def _check(state: MemberState, t: Transfer) -> Result | None:
    """The refusal of `t` by its guards or balance, if any."""
    for g in t.guards:
        if g.add <= 0:
            continue
        use = state.uses.get(g.key)
        if use is not None and use.until and t.ts >= use.until:
            use = None
        n = 0 if use is None else use.n
        if g.limit and n + g.add > g.limit:
            return Result(t.key, LIMIT_REACHED, state.balance, guard=g.key)
        if use is not None and g.cooldown_s and t.ts < use.last_ts + g.cooldown_s:
            return Result(
                t.key, COOLDOWN, state.balance, retry_at=use.last_ts + g.cooldown_s, guard=g.key
            )
    if t.direction == "debit" and state.balance < t.amount:
        return Result(t.key, INSUFFICIENT_POINTS, state.balance)
    return None


def _take(state: MemberState, t: Transfer) -> None:
    for g in t.guards:
        use = state.uses.get(g.key)
        if use is None or (use.until and t.ts >= use.until):
            use = Use()
        use.n = max(0, use.n + g.add)
        if g.add > 0:
            use.last_ts = t.ts
        use.until = t.ts + g.keep_s if g.keep_s else 0.0
        if use.n == 0 and use.last_ts < 0:
            state.uses.pop(g.key, None)
        else:
            state.uses[g.key] = use


def forget_expired(state: MemberState, now: float) -> bool:
    """Drop counters past their `until`; True if any went."""
    gone = [k for k, u in state.uses.items() if u.until and now >= u.until]
    for k in gone:
        del state.uses[k]
    return bool(gone)


def apply_transfer(state: MemberState, t: Transfer) -> tuple[Result, Entry | None]:
    """Apply `t` to `state` (mutated only when it is accepted): the result, and the ledger
    entry it posts (None when refused). The caller deduplicates by key (see `replay`)."""
    refused = _check(state, t)
    if refused is not None:
        return refused, None
    _take(state, t)
    state.lifetime += t.lifetime
    if t.amount == 0:  # guard-only (a free store item): no points move, no entry
        return Result(t.key, OK, state.balance), None
    eid = entry_id(t)
    if t.direction == "move":  # between two other accounts: the member's ledger is untouched
        entry = Entry(eid, t.ts, t.network, t.account, t.to, t.amount, t.rule, t.channel)
        return Result(t.key, OK, state.balance, entry_id=eid), entry
    member = member_account(t.network, t.user_id)
    if t.direction == "debit":
        state.balance -= t.amount
        debit, credit = member, t.account
    else:
        state.balance += t.amount
        debit, credit = t.account, member
    assert state.balance >= 0, "a transfer took a balance below zero"
    state.entries += 1
    entry = Entry(eid, t.ts, t.network, debit, credit, t.amount, t.rule, t.channel)
    return Result(t.key, OK, state.balance, entry_id=eid), entry


def gift_leg(t: Transfer) -> Transfer:
    """The credit leg of an accepted gift `t`: from `gift:{network}` to `t.to_user`, keyed by
    the giver and `t`'s key (a replay of it is a replay), dated as `t`. Never refused: it
    has no guards and credits."""
    assert t.to_user, "only a gift has a credit leg"
    assert t.direction == "debit", "a gift is a debit"
    return Transfer(
        key=f"gift.{t.user_id}.{t.key}"[:MAX_TEXT], network=t.network, user_id=t.to_user,
        amount=t.amount, direction="credit", account=t.account, rule=t.rule, ref=t.user_id,
        channel=t.channel, ts=t.ts,
    )  # fmt: skip


def replay(record: Record, t: Transfer) -> Result:
    """The answer to `t` when its key was applied before: the recorded result, or
    `conflict` when the payload differs."""
    if record.digest != digest(t):
        return Result(t.key, CONFLICT, record.result.balance)
    return record.result


def account_deltas(t: Transfer) -> list[tuple[str, int]]:
    """What an accepted `t` adds to the balances of its accounts other than the member."""
    if t.direction == "move":
        return [(t.account, -t.amount), (t.to, t.amount)]
    return [(t.account, t.amount if t.direction == "debit" else -t.amount)]
