"""Payouts: points leave the loyalty ledger as cashback or tokens, exactly once.

A payout is a request (member, points, sink, destination, idempotency key) that moves
through one state machine:

    requested -> reserved -> sending -> settled
        |            |  ^        |
        v            v  |        v
      voided      voided  (retry: back to reserved with a backoff) -> dead -> reserved (admin retry)
                                                                      dead -> voided (admin void)

- `requested`: recorded, admitted (minimum, daily limit); its points not yet reserved.
- `reserved`: the points moved member -> `payout:{network}` (a spend, engine/spend.py);
  queued to be sent at `next_at`.
- `sending`: handed to the sink (webhook, chain); its outcome is not known yet. If the
  sender dies, the payout is sent again once `next_at` (the lease) passes: the sink
  dedupes by payout id (webhook-id, the token's payoutId), so it is paid once.
- `settled`: the sink acknowledged it; its points moved pending -> paid
  (`payout:{network}` -> `payout:{network}:paid`, a keyed move) before it was marked. Final.
- `voided`: refused at reservation (insufficient points) or voided by an admin; a voided
  payout whose points were reserved is refunded (payout:{network} -> member) once.
- `dead`: failed `max_attempts` times (or the sink said never again, HTTP 410), with the
  reason; an admin retries or voids it.

Pure: time and randomness (the jitter draw in [0, 1)) are arguments; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from engine.spend import Transfer

Status = Literal["requested", "reserved", "sending", "settled", "voided", "dead"]
STATUSES: tuple[Status, ...] = ("requested", "reserved", "sending", "settled", "voided", "dead")
FINAL: frozenset[str] = frozenset({"settled", "voided"})
SINKS = ("webhook", "chain")
MAX_POINTS = 10**12
MAX_TEXT = 200
DAY_S = 86_400

TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"reserved", "voided"}),
    "reserved": frozenset({"sending", "voided"}),
    "sending": frozenset({"sending", "settled", "reserved", "dead"}),
    "dead": frozenset({"reserved", "voided"}),
    "settled": frozenset(),
    "voided": frozenset(),
}
"""Every allowed move; anything else is a PayoutError (`bad_transition`)."""

# outcome codes of a request (stable: the gateway maps them to HTTP statuses)
OK = "ok"
BELOW_MINIMUM = "below_minimum"
DAILY_LIMIT = "daily_limit"
CONFLICT = "conflict"
BAD_TRANSITION = "bad_transition"


class PayoutError(ValueError):
    """A payout request or move that cannot apply: `code` says why, `field` names the input."""

    def __init__(self, message: str, field: str = "", code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class PayoutRules(msgspec.Struct, frozen=True, kw_only=True):
    """Payout rules of a deployment ([payouts] in the configuration)."""

    units_per_point_num: int = 1
    units_per_point_den: int = 1
    """Conversion: a payout of `p` points pays p * num // den units (cents, token wei)."""
    min_points: int = 100
    daily_limit_points: int = 100_000
    """Most points one member may request per UTC day (0: no limit)."""
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    lease_s: float = 30.0
    """A payout `sending` for this long without an outcome is sent again (its sender died)."""
    batch_size: int = 100


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A payout asked for by a network: what a retry of the same `key` must repeat."""

    network: str
    user_id: str
    points: int
    sink: str = "webhook"
    destination: str = ""
    """Where to pay: a webhook URL (cashback) or "" for the member's linked wallet."""
    key: str


class Payout(msgspec.Struct, frozen=True, kw_only=True):
    """A payout's whole state (stored under its id)."""

    id: str
    network: str
    user_id: str
    points: int
    units: int | str
    """What it pays in the sink's units: an int, or its decimal string beyond 64 bits
    (msgpack's integers end there; a token's base units pass it at ~18.4 tokens). `amount`."""
    sink: str
    destination: str
    key: str
    digest: bytes
    created_at: float
    status: Status = "requested"
    attempts: int = 0
    next_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""
    refund: bool = False
    """True once voided after its points were reserved: the refund is owed (and made once,
    keyed by the payout id)."""

    @property
    def amount(self) -> int:
        """`units` as an int."""
        return int(self.units)


payout_encoder = msgspec.msgpack.Encoder()
payout_decoder = msgspec.msgpack.Decoder(Payout)
request_decoder = msgspec.json.Decoder(Request)


def _text(value: str, field: str, limit: int = MAX_TEXT) -> None:
    if not value or len(value) > limit or not value.isprintable():
        raise PayoutError(f"{field} must be 1-{limit} printable characters", field)


def _is_address(text: str) -> bool:
    return (
        len(text) == 42
        and text[:2] == "0x"
        and all(c in "0123456789abcdefABCDEF" for c in text[2:])
    )


def validate(req: Request) -> Request:
    """`req` if well formed; PayoutError naming the field otherwise."""
    _text(req.network, "network")
    _text(req.user_id, "user_id")
    _text(req.key, "key")
    if type(req.points) is not int or not 1 <= req.points <= MAX_POINTS:
        raise PayoutError(f"points must be an integer from 1 to {MAX_POINTS}", "points")
    if req.sink not in SINKS:
        raise PayoutError(f"sink must be one of {', '.join(SINKS)}", "sink")
    if req.sink == "webhook" and not req.destination.startswith(("http://", "https://")):
        raise PayoutError("a webhook payout needs an http(s) destination URL", "destination")
    if req.sink == "chain" and req.destination and not _is_address(req.destination):
        raise PayoutError(
            "a chain payout's destination is 0x + 40 hex (or \"\": the member's linked wallet)",
            "destination",
        )
    if len(req.destination) > 2_000:
        raise PayoutError("destination is at most 2000 characters", "destination")
    return req


def payout_id(network: str, key: str) -> str:
    """A payout's id: a function of its network and idempotency key (stable across retries)."""
    h = hashlib.blake2b(f"{network}\x00{key}".encode(), digest_size=12).hexdigest()
    return f"po_{h}"


def request_digest(req: Request) -> bytes:
    return hashlib.blake2b(msgspec.msgpack.encode(req), digest_size=16).digest()


def storable(units: int) -> int | str:
    """`units` as Payout keeps it: an int within msgpack's 64 bits, else its decimal string."""
    return units if units < 2**63 else str(units)


def units_of(rules: PayoutRules, points: int) -> int:
    """What `points` pay, in the sink's units."""
    return points * rules.units_per_point_num // rules.units_per_point_den


def day_of(ts: float) -> int:
    return int(ts // DAY_S)


def admit(
    rules: PayoutRules, req: Request, now: float, requested_today: int, existing: Payout | None
) -> tuple[str, Payout | None]:
    """Decide a request: (OK, the new payout), (OK, existing) for a replay, or a refusal code
    (CONFLICT, BELOW_MINIMUM, DAILY_LIMIT) with None. `requested_today` counts the points the
    member requested already on `now`'s UTC day."""
    validate(req)
    digest = request_digest(req)
    if existing is not None:
        return (OK, existing) if existing.digest == digest else (CONFLICT, None)
    if req.points < rules.min_points:
        return BELOW_MINIMUM, None
    if rules.daily_limit_points and requested_today + req.points > rules.daily_limit_points:
        return DAILY_LIMIT, None
    p = Payout(
        id=payout_id(req.network, req.key),
        network=req.network,
        user_id=req.user_id,
        points=req.points,
        units=storable(units_of(rules, req.points)),
        sink=req.sink,
        destination=req.destination,
        key=req.key,
        digest=digest,
        created_at=now,
        updated_at=now,
    )
    return OK, p


def admit_many(
    rules: PayoutRules,
    reqs: Sequence[Request],
    now: float,
    requested_today: dict[tuple[str, str], int],
    existing: dict[str, Payout],
) -> list[tuple[str, Payout | None]]:
    """`admit` for a batch, in order: each admitted payout counts against the daily limit of
    the ones after it; a key repeated in the batch replays the first."""
    today = dict(requested_today)
    known = dict(existing)
    out: list[tuple[str, Payout | None]] = []
    for req in reqs:
        pid = payout_id(req.network, req.key)
        member = (req.network, req.user_id)
        before = known.get(pid)
        code, p = admit(rules, req, now, today.get(member, 0), before)
        if code == OK and p is not None and before is None:
            today[member] = today.get(member, 0) + p.points
            known[pid] = p
        out.append((code, p))
    return out


def move(p: Payout, to: Status, now: float, **changes: object) -> Payout:
    """`p` moved to status `to` (PayoutError `bad_transition` if the machine forbids it)."""
    if to not in TRANSITIONS[p.status]:
        raise PayoutError(
            f"payout {p.id} is {p.status}: cannot become {to}", "status", BAD_TRANSITION
        )
    return msgspec.structs.replace(p, status=to, updated_at=now, **changes)


def reserved(p: Payout, now: float) -> Payout:
    """Its points are reserved: due to be sent now."""
    if p.status != "requested":
        raise PayoutError(f"payout {p.id} is {p.status}: only a requested payout is reserved",
                          "status", BAD_TRANSITION)  # fmt: skip
    return move(p, "reserved", now, next_at=now, reason="")


def refused(p: Payout, now: float, reason: str) -> Payout:
    """Its reservation was refused (insufficient points): voided, nothing to refund."""
    return move(p, "voided", now, reason=reason, refund=False)


def sending(rules: PayoutRules, p: Payout, now: float) -> Payout:
    """Handed to the sink: one more attempt, leased until now + lease_s."""
    if p.status != "reserved":
        raise PayoutError(f"payout {p.id} is {p.status}: only a reserved payout is sent", "status",
                          BAD_TRANSITION)  # fmt: skip
    return move(p, "sending", now, attempts=p.attempts + 1, next_at=now + rules.lease_s)


def resent(rules: PayoutRules, p: Payout, now: float) -> Payout:
    """A payout whose lease passed without an outcome (its sender died): sent again, as one
    more attempt (the sink dedupes by payout id, so it is paid once)."""
    if p.status != "sending" or now < p.next_at:
        raise PayoutError(f"payout {p.id} is not a sending payout past its lease", "status",
                          BAD_TRANSITION)  # fmt: skip
    return move(p, "sending", now, attempts=p.attempts + 1, next_at=now + rules.lease_s)


def settled(p: Payout, now: float) -> Payout:
    return move(p, "settled", now, next_at=0.0, reason="")


def backoff_s(rules: PayoutRules, attempts: int, jitter: float) -> float:
    """Delay before the next attempt after `attempts` failures: exponential (base * 2^(n-1)),
    capped at backoff_max_s, with "equal jitter": half fixed, half drawn from `jitter` in
    [0, 1), so concurrent failures spread out yet never retry at once."""
    assert 0.0 <= jitter < 1.0, "jitter is a draw in [0, 1)"
    exp = min(rules.backoff_max_s, rules.backoff_base_s * 2.0 ** max(0, attempts - 1))
    return exp / 2 + exp / 2 * jitter


def failed(
    rules: PayoutRules, p: Payout, now: float, reason: str, jitter: float, *, final: bool = False
) -> Payout:
    """The sink failed: retried after a backoff, or dead with the reason after
    max_attempts failures (or at once when `final`: the receiver said 410 Gone)."""
    if p.status != "sending":
        raise PayoutError(f"payout {p.id} is {p.status}: only a sending payout fails", "status",
                          BAD_TRANSITION)  # fmt: skip
    if final or p.attempts >= rules.max_attempts:
        return move(p, "dead", now, next_at=0.0, reason=reason)
    return move(
        p, "reserved", now, next_at=now + backoff_s(rules, p.attempts, jitter), reason=reason
    )


def retried(p: Payout, now: float) -> Payout:
    """An admin retries a dead payout: attempts start again, due now."""
    if p.status != "dead":
        raise PayoutError(
            f"payout {p.id} is {p.status}: only a dead payout is retried", "status", BAD_TRANSITION
        )
    return move(p, "reserved", now, attempts=0, next_at=now, reason="")


def voided(p: Payout, now: float, reason: str = "voided by admin") -> Payout:
    """An admin voids a reserved or dead payout: its points are owed back to the member."""
    if p.status not in ("reserved", "dead", "requested"):
        raise PayoutError(
            f"payout {p.id} is {p.status}: cannot be voided", "status", BAD_TRANSITION
        )
    return move(p, "voided", now, next_at=0.0, reason=reason, refund=p.status != "requested")


def batches(payouts: Iterable[Payout], size: int) -> list[list[Payout]]:
    """Due payouts grouped by (sink, network, destination kind) in batches of at most
    `size`, oldest first: a chain batch becomes one mintBatch, a webhook batch one round of
    concurrent POSTs."""
    assert size > 0
    groups: dict[tuple[str, str], list[Payout]] = {}
    for p in sorted(payouts, key=lambda p: (p.next_at, p.id)):
        groups.setdefault((p.sink, p.network), []).append(p)
    out: list[list[Payout]] = []
    for _, group in sorted(groups.items()):
        out.extend(group[i : i + size] for i in range(0, len(group), size))
    return out


def reserve_key(p: Payout) -> str:
    """The spend key of a payout's reservation (member -> payout:{network})."""
    return f"payout:{p.id}"


def refund_key(p: Payout) -> str:
    """The spend key of a voided payout's refund (payout:{network} -> member)."""
    return f"payout-void:{p.id}"


def account(network: str) -> str:
    """The account that holds the points reserved for payouts not yet paid (pending)."""
    return f"payout:{network}"


def paid_account(network: str) -> str:
    """The account of the points paid out (settled payouts): the ledger's "paid"."""
    return f"payout:{network}:paid"


def paid_key(p: Payout) -> str:
    """The spend key of a settled payout's move payout:{network} -> payout:{network}:paid."""
    return f"payout-paid:{p.id}"


def reservation(p: Payout) -> Transfer:
    """The spend that reserves a payout's points: member -> payout:{network}, keyed by the
    payout id (a repeat answers "exists", never debits twice)."""
    return Transfer(reserve_key(p), p.network, p.user_id, p.points, "debit", account(p.network),
                    "payout", ref=p.id)  # fmt: skip


def refund(p: Payout) -> Transfer:
    """The spend that gives a voided payout's reserved points back: payout:{network} ->
    member, keyed by the payout id (made once)."""
    assert p.status == "voided", "only a voided payout is refunded"
    assert p.refund, "only a payout whose points were reserved is refunded"
    return Transfer(refund_key(p), p.network, p.user_id, p.points, "credit", account(p.network),
                    "payout_void", ref=p.id)  # fmt: skip


def payment(p: Payout) -> Transfer:
    """The move that records a payout as paid once its sink acknowledged it: its reserved
    points go from pending (payout:{network}) to paid (payout:{network}:paid), keyed by the
    payout id (made once, however often the settle is repeated)."""
    return Transfer(paid_key(p), p.network, p.user_id, p.points, "move", account(p.network),
                    "payout_paid", ref=p.id, to=paid_account(p.network))  # fmt: skip
