"""Raffles anyone can verify: terms, lifecycle, entries, Merkle tree, commit-reveal draw.

Pure: no I/O, no clock (times are arguments), no randomness (the seed is an argument).

Lifecycle: draft -> open -> closed -> drawn; draft, open or closed -> cancelled.

The draw, exactly (version 1; enough to re-implement it in any language):

1. Terms. The raffle's terms (`Terms`) are published at open as canonical JSON: keys
   sorted, no spaces, ASCII only (Python: `json.dumps(t, sort_keys=True,
   separators=(",", ":"), ensure_ascii=True)`). `terms_hash` = hex SHA-256 of those bytes.
2. Commitment. At open the operator picks a secret 32-byte seed and publishes
   `commitment` = hex SHA-256(seed bytes). The seed is published after the draw.
3. Entries. At close the entries freeze. Each member holding tickets is one leaf
   (user_id, first, tickets, weight): leaves sorted by user_id (byte order of its UTF-8),
   `first` = the number of tickets held by the members before it (ticket numbers run
   0..T-1), `weight` = tickets x luck_pct (100 = plain luck). Leaf hash = SHA-256(0x00 ||
   "{user_id}|{first}|{tickets}|{weight}" as UTF-8); node hash = SHA-256(0x01 || left ||
   right). Each level pairs nodes left to right; an odd last node moves up unchanged. The
   root of no leaves is SHA-256 of the empty string. `root` and `count` (leaves) are
   published at close.
4. Beacon. After close, a public value nobody knew before close is fixed: a drand-style
   beacon value supplied by an admin, or a block hash when a chain is configured: the
   hash of the first block after genesis whose timestamp is strictly after closed_at, as
   "0x" + 64 lowercase hex, with ref "chain {chain id} block {number}", number >= 1
   (anyone with a node of that chain can check the hash and, for number >= 2, that block
   number - 1 is not after closed_at).
5. Draw key. `draw_key` = SHA-256 of these UTF-8 lines joined by "\\n" (no final one):
   "rallypoint-raffle-v1", raffle id, terms_hash, opened_at, commitment, closed_at,
   count, root, beacon source, beacon value, beacon ref, seed (integers in decimal,
   hashes and the seed in lowercase hex). It binds every published field.
6. Random numbers. Block j (j = 0, 1, 2, ...; one counter for the whole draw) =
   SHA-256(draw_key bytes || j as 8 bytes big-endian), read as a 256-bit big-endian
   integer x. A number uniform in [0, W): take the next block; if x >= 2^256 - (2^256 mod
   W) reject it and take the next; else the number is x mod W. No modulo bias.
7. Winners. For each of the min(winners, count) places in turn: W = the total weight of
   the leaves that have not won yet; r = a number uniform in [0, W); walking the leaves in
   order and skipping those that already won, the winner is the first leaf whose running
   total of weights exceeds r. It leaves the draw (nobody wins twice). The winning ticket
   is first + (r - running total before it) * tickets // weight.

`verify(published)` recomputes all of it from the published record alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

VERSION = 1
DOMAIN = "rallypoint-raffle-v1"
MAX_WINNERS = 1_000
MAX_TICKETS_PER_MEMBER = 1_000_000
MAX_LUCK_PCT = 10_000
TWO_256 = 1 << 256
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()

Kind = Literal["ticket", "keyword", "giveaway"]
Status = Literal["draft", "open", "closed", "drawn", "cancelled"]
RaffleId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
BEACON = re.compile(r"[A-Za-z0-9_.:\-]{8,256}")
HEX64 = re.compile(r"[0-9a-f]{64}")
BLOCK_HASH = re.compile(r"0x[0-9a-f]{64}")
CHAIN_REF = re.compile(r"chain ([1-9][0-9]{0,19}) block ([1-9][0-9]{0,19})")
"""A chain beacon's ref; never block 0: a genesis block's hash follows from its parameters
(an embedded EVM started after close would have a predictable one)."""


class RaffleError(Exception):
    """A raffle operation refused, with a stable code and the field at fault."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class Terms(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a raffle promises, fixed at creation and published (hashed) at open."""

    id: RaffleId
    network: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    kind: Kind = "ticket"
    title: Annotated[str, Meta(max_length=200)] = ""
    channel: Annotated[str, Meta(max_length=128, pattern=r"^[A-Za-z0-9_.:\-]*$")] = ""
    """The channel whose chat (keyword) or viewers (giveaway) enter; any for tickets."""
    price_points: Annotated[int, Meta(ge=0, le=1_000_000_000)] = 0
    """Per ticket (ticket raffle) or per entry (keyword raffle); 0 = free."""
    max_tickets_per_member: Annotated[int, Meta(ge=1, le=MAX_TICKETS_PER_MEMBER)] = 1
    free_first_ticket: bool = False
    keyword: Annotated[str, Meta(max_length=64, pattern=r"^\S*$")] = ""
    luck_tier_pct: Annotated[
        list[Annotated[int, Meta(ge=1, le=MAX_LUCK_PCT)]], Meta(max_length=32)
    ] = []
    """Luck per tier index (100 = x1; a tier not listed has 100)."""
    luck_subscriber_pct: Annotated[int, Meta(ge=1, le=MAX_LUCK_PCT)] = 100
    luck_cap_pct: Annotated[int, Meta(ge=100, le=MAX_LUCK_PCT)] = MAX_LUCK_PCT
    winners: Annotated[int, Meta(ge=1, le=MAX_WINNERS)] = 1
    min_tier: Annotated[int, Meta(ge=0, le=32)] = 0
    winner_cooldown_s: Annotated[int, Meta(ge=0, le=10 * 365 * 86_400)] = 0
    """A member who won a raffle of this network less than this long before close is
    left out of the draw (and refunded)."""
    prize_points: Annotated[int, Meta(ge=0, le=1_000_000_000)] = 0
    """Points credited to each winner (from the network treasury)."""
    close_at: Annotated[int, Meta(ge=0)] = 0
    """Unix seconds of the automatic close; 0 = closed by an admin."""
    beacon: Literal["admin", "chain"] = "admin"

    def __post_init__(self) -> None:
        # messages name their field as msgspec's own errors do ("- at `$.field`")
        if self.kind == "keyword" and not self.keyword:
            raise ValueError("a keyword raffle needs a keyword - at `$.keyword`")
        if self.kind in ("keyword", "giveaway") and not self.channel:
            raise ValueError(f"a {self.kind} raffle needs a channel - at `$.channel`")
        if self.kind == "giveaway" and self.price_points:
            raise ValueError("a giveaway is free: price_points must be 0 - at `$.price_points`")


class Holding(msgspec.Struct, array_like=True):
    """One member's tickets in one raffle."""

    tickets: int = 0
    paid_points: int = 0
    luck_pct: int = 100


class Leaf(msgspec.Struct, frozen=True, array_like=True):
    user_id: str
    first: int
    tickets: int
    weight: int


class Beacon(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: Literal["admin", "chain"]
    value: str
    ref: Annotated[str, Meta(max_length=128, pattern=r"^[^\n]*$")] = ""
    """Where it comes from: a drand round, a block number."""


class Winner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    ticket: int


class Raffle(msgspec.Struct, kw_only=True):
    """A raffle's whole state (the actor persists it; holdings one field per member)."""

    terms: Terms
    status: Status = "draft"
    created_at: int = 0
    opened_at: int = 0
    closed_at: int = 0
    drawn_at: int = 0
    terms_hash: str = ""
    commitment: str = ""
    holdings: dict[str, Holding] = {}
    root: str = ""
    count: int = 0
    tickets: int = 0
    """Tickets held: running while open, frozen at close."""
    entrants: int = 0
    """Members holding tickets: running while open, frozen at close."""
    weight: int = 0
    excluded: list[str] = []
    """Members left out at close (winner cooldown), refunded."""
    beacon: Beacon | None = None
    seed: str = ""
    draw_key: str = ""
    winners: list[Winner] = []


class Published(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What anyone sees: enough to verify the draw (`verify`)."""

    version: int = VERSION
    raffle: str
    status: Status
    terms: Terms
    terms_hash: str
    opened_at: int
    commitment: str
    closed_at: int = 0
    count: int = 0
    tickets: int = 0
    weight: int = 0
    root: str = ""
    leaves: list[Leaf] = []
    beacon: Beacon | None = None
    seed: str = ""
    draw_key: str = ""
    winners: list[Winner] = []


class Purchase(msgspec.Struct, frozen=True):
    """Tickets a member may take now, what they cost, and their luck."""

    tickets: int
    cost_points: int
    luck_pct: int


class Refund(msgspec.Struct, frozen=True):
    user_id: str
    points: int


# -- hashing ------------------------------------------------------------------------------
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commitment_of(seed_hex: str) -> str:
    """hex SHA-256 of the seed's bytes."""
    return sha256_hex(bytes.fromhex(seed_hex))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def terms_hash(terms: Terms) -> str:
    return sha256_hex(canonical_json(msgspec.to_builtins(terms)))


def leaf_hash(leaf: Leaf) -> bytes:
    text = f"{leaf.user_id}|{leaf.first}|{leaf.tickets}|{leaf.weight}"
    return hashlib.sha256(b"\x00" + text.encode()).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _up(level: list[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    n = len(level)
    out = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
    if n % 2:
        out.append(level[-1])
    return out


def merkle_root(leaves: Sequence[Leaf]) -> str:
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        level = _up(level)
    return level[0].hex()


def merkle_proof(leaves: Sequence[Leaf], index: int) -> list[tuple[str, str]]:
    """The path from leaf `index` to the root: (sibling hash hex, "L" or "R": which side
    the sibling is on), bottom up; levels where the node moves up alone are skipped."""
    level = [leaf_hash(leaf) for leaf in leaves]
    path: list[tuple[str, str]] = []
    i = index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            path.append((level[sibling].hex(), "L" if sibling < i else "R"))
        level = _up(level)
        i //= 2
    return path


def verify_proof(leaf: Leaf, path: Sequence[tuple[str, str]], root: str) -> bool:
    node = leaf_hash(leaf)
    for sibling_hex, side in path:
        try:
            sibling = bytes.fromhex(sibling_hex)
        except ValueError:
            return False
        node = _parent(sibling, node) if side == "L" else _parent(node, sibling)
    return node.hex() == root


# -- leaves and the draw ------------------------------------------------------------------
def leaves_of(holdings: dict[str, Holding]) -> list[Leaf]:
    """The frozen entries: one leaf per member with tickets, sorted by user id."""
    out: list[Leaf] = []
    first = 0
    for user_id in sorted(holdings, key=str.encode):
        h = holdings[user_id]
        if h.tickets <= 0:
            continue
        out.append(Leaf(user_id, first, h.tickets, h.tickets * h.luck_pct))
        first += h.tickets
    return out


def draw_key_of(
    raffle_id: str,
    t_hash: str,
    opened_at: int,
    commitment: str,
    closed_at: int,
    count: int,
    root: str,
    beacon: Beacon,
    seed_hex: str,
) -> str:
    """Step 5: the hash of everything the draw depends on."""
    lines = [DOMAIN, raffle_id, t_hash, str(opened_at), commitment, str(closed_at), str(count),
             root, beacon.source, beacon.value, beacon.ref, seed_hex]  # fmt: skip
    return sha256_hex("\n".join(lines).encode())


class Randomness:
    """Uniform integers from SHA-256 in counter mode, with rejection sampling (step 6)."""

    def __init__(self, draw_key_hex: str) -> None:
        self.key = bytes.fromhex(draw_key_hex)
        self.counter = 0

    def block(self) -> int:
        data = self.key + self.counter.to_bytes(8, "big")
        self.counter += 1
        return int.from_bytes(hashlib.sha256(data).digest(), "big")

    def below(self, n: int) -> int:
        assert n > 0
        limit = TWO_256 - TWO_256 % n
        while True:
            x = self.block()
            if x < limit:
                return x % n


class _Fenwick:
    """Prefix sums of weights with removal, and the first index whose prefix passes r."""

    def __init__(self, weights: Sequence[int]) -> None:
        n = len(weights)
        tree = [0, *weights]
        for i in range(1, n + 1):
            j = i + (i & -i)
            if j <= n:
                tree[j] += tree[i]
        self.tree = tree
        self.n = n
        self.top = 1 << n.bit_length() if n else 0

    def add(self, i: int, delta: int) -> None:
        i += 1
        tree = self.tree
        while i <= self.n:
            tree[i] += delta
            i += i & -i

    def find(self, r: int) -> tuple[int, int]:
        """(index of the first element whose running total exceeds r, total before it)."""
        pos, before = 0, 0
        step = self.top
        tree = self.tree
        while step:
            nxt = pos + step
            if nxt <= self.n and before + tree[nxt] <= r:
                pos = nxt
                before += tree[nxt]
            step >>= 1
        return pos, before


def select_winners(draw_key_hex: str, leaves: Sequence[Leaf], winners: int) -> list[Winner]:
    """Step 7: min(winners, len(leaves)) distinct winners, weighted, in order of drawing."""
    weights = [leaf.weight for leaf in leaves]
    remaining = sum(weights)
    rng = Randomness(draw_key_hex)
    out: list[Winner] = []
    if winners == 1 and leaves:  # the common case: one bisect over the running totals
        totals = list(accumulate(weights))
        r = rng.below(remaining)
        i = bisect_right(totals, r)
        before = totals[i - 1] if i else 0
        leaf = leaves[i]
        return [Winner(leaf.user_id, leaf.first + (r - before) * leaf.tickets // leaf.weight)]
    tree = _Fenwick(weights)
    for _ in range(min(winners, len(leaves))):
        r = rng.below(remaining)
        i, before = tree.find(r)
        leaf = leaves[i]
        out.append(Winner(leaf.user_id, leaf.first + (r - before) * leaf.tickets // leaf.weight))
        tree.add(i, -leaf.weight)
        remaining -= leaf.weight
    return out


# -- lifecycle ------------------------------------------------------------------------------
def _require(raffle: Raffle, *statuses: Status) -> None:
    if raffle.status not in statuses:
        code = {
            "draft": "raffle_not_open",
            "open": "raffle_open",
            "closed": "raffle_closed",
            "drawn": "raffle_drawn",
            "cancelled": "raffle_cancelled",
        }[raffle.status]
        wanted = " or ".join(statuses)
        raise RaffleError(
            code, f"raffle {raffle.terms.id!r} is {raffle.status}, not {wanted}", "status"
        )


def require_closed(raffle: Raffle) -> None:
    """RaffleError (raffle_open, raffle_drawn, ...) unless the raffle is closed: drawable."""
    _require(raffle, "closed")


def create(terms: Terms, now: float) -> Raffle:
    return Raffle(terms=terms, created_at=int(now), holdings={})


def open_raffle(raffle: Raffle, commitment: str, now: float) -> None:
    """Publish the commitment (SHA-256 of the secret seed) and the terms hash."""
    _require(raffle, "draft")
    if not HEX64.fullmatch(commitment):
        raise RaffleError("bad_commitment", "commitment must be 64 lowercase hex", "commitment")
    raffle.status = "open"
    raffle.opened_at = int(now)
    raffle.commitment = commitment
    raffle.terms_hash = terms_hash(raffle.terms)


def luck_pct(terms: Terms, tier: int, subscriber: bool) -> int:
    """tier luck, times subscriber luck if a subscriber, capped: integer percent."""
    pct = terms.luck_tier_pct[tier] if 0 <= tier < len(terms.luck_tier_pct) else 100
    if subscriber:
        pct = pct * terms.luck_subscriber_pct // 100
    return max(1, min(pct, terms.luck_cap_pct))


def quote(
    raffle: Raffle,
    user_id: str,
    tickets: int,
    *,
    tier: int,
    subscriber: bool,
    now: float,
    last_won_at: float | None = None,
) -> Purchase:
    """What `tickets` more tickets cost `user_id` now, or the reason they may not.

    Ticket raffles: up to max_tickets_per_member in all, price_points each, the member's
    first ticket free with free_first_ticket. Keyword raffles: one entry, price_points.
    Giveaways take no purchases (everyone present enters at close)."""
    _require(raffle, "open")
    terms = raffle.terms
    if terms.close_at and now >= terms.close_at:
        raise RaffleError("raffle_closed", "the raffle's close time has passed", "status")
    if terms.kind == "giveaway":
        raise RaffleError("not_purchasable", "a giveaway enters every viewer present", "kind")
    if tickets < 1:
        raise RaffleError("bad_tickets", "tickets must be at least 1", "tickets")
    if tier < terms.min_tier:
        raise RaffleError(
            "tier_too_low", f"this raffle needs tier {terms.min_tier} or higher", "tier"
        )
    if (
        terms.winner_cooldown_s
        and last_won_at is not None
        and now - last_won_at < terms.winner_cooldown_s
    ):
        raise RaffleError("winner_cooldown", "a recent winner may not enter yet", "user_id")
    held = raffle.holdings.get(user_id)
    have = held.tickets if held is not None else 0
    most = 1 if terms.kind == "keyword" else terms.max_tickets_per_member
    if have + tickets > most:
        raise RaffleError(
            "ticket_limit", f"at most {most} tickets per member ({have} held)", "tickets"
        )
    paid = tickets - 1 if terms.free_first_ticket and have == 0 else tickets
    return Purchase(tickets, paid * terms.price_points, luck_pct(terms, tier, subscriber))


def add_tickets(raffle: Raffle, user_id: str, purchase: Purchase) -> Holding:
    """Record a purchase whose points are paid (luck: the best the member had)."""
    _require(raffle, "open")
    h = raffle.holdings.get(user_id)
    if h is None:
        h = raffle.holdings[user_id] = Holding(luck_pct=purchase.luck_pct)
        raffle.entrants += 1
    raffle.tickets += purchase.tickets
    h.tickets += purchase.tickets
    h.paid_points += purchase.cost_points
    h.luck_pct = max(h.luck_pct, purchase.luck_pct)
    return h


def enter_viewers(raffle: Raffle, viewers: Iterable[tuple[str, int, bool]]) -> int:
    """A giveaway's entries: one free ticket per viewer present (user_id, tier, subscriber)
    who meets the minimum tier; returns how many entered."""
    _require(raffle, "open")
    terms = raffle.terms
    n = 0
    for user_id, tier, subscriber in viewers:
        if tier < terms.min_tier or user_id in raffle.holdings:
            continue
        raffle.holdings[user_id] = Holding(1, 0, luck_pct(terms, tier, subscriber))
        raffle.entrants += 1
        raffle.tickets += 1
        n += 1
    return n


def close(raffle: Raffle, now: float, last_won: dict[str, float] | None = None) -> list[Refund]:
    """Freeze the entries: members on winner cooldown leave (refunded), the rest become the
    leaves whose root and count are published. Returns the refunds to make."""
    _require(raffle, "open")
    terms = raffle.terms
    refunds: list[Refund] = []
    excluded: list[str] = []
    if terms.winner_cooldown_s and last_won:
        for user_id in sorted(raffle.holdings):
            won = last_won.get(user_id)
            if won is not None and now - won < terms.winner_cooldown_s:
                excluded.append(user_id)
                h = raffle.holdings.pop(user_id)
                if h.paid_points:
                    refunds.append(Refund(user_id, h.paid_points))
    leaves = leaves_of(raffle.holdings)
    raffle.status = "closed"
    raffle.closed_at = int(now)
    raffle.excluded = excluded
    raffle.root = merkle_root(leaves)
    raffle.count = raffle.entrants = len(leaves)
    raffle.tickets = sum(leaf.tickets for leaf in leaves)
    raffle.weight = sum(leaf.weight for leaf in leaves)
    return refunds


def check_beacon(beacon: Beacon) -> None:
    if not BEACON.fullmatch(beacon.value):
        raise RaffleError(
            "bad_beacon", "beacon value must be 8-256 characters of A-Z a-z 0-9 _ . : -", "beacon"
        )
    if beacon.source == "chain" and not chain_beacon_ok(beacon):
        raise RaffleError(
            "bad_beacon",
            'a chain beacon is a block hash "0x" + 64 lowercase hex, ref "chain ID block N"',
            "beacon",
        )


# -- the chain beacon ------------------------------------------------------------------------
def first_block_after(
    after: int, lo: int, hi: int, timestamp_of: Callable[[int], int]
) -> int | None:
    """The lowest block number n in [lo, hi] whose timestamp is strictly after `after`
    (Unix seconds), or None when block `hi` is not after it yet. Block timestamps never
    decrease along a chain, so this is a binary search: about log2(hi - lo) lookups."""
    if hi < lo or timestamp_of(hi) <= after:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if timestamp_of(mid) > after:
            hi = mid
        else:
            lo = mid + 1
    return lo


def chain_beacon_of(chain_id: int, number: int, block_hash: str) -> Beacon:
    """The beacon of block `number` of chain `chain_id`: value its hash ("0x" + 64
    lowercase hex), ref "chain {chain_id} block {number}" (what a verifier looks up)."""
    value = block_hash.lower()
    if not value.startswith("0x"):
        value = "0x" + value
    return Beacon("chain", value, f"chain {chain_id} block {number}")


def chain_ref(ref: str) -> tuple[int, int] | None:
    """(chain id, block number) of a chain beacon's ref, or None if malformed."""
    m = CHAIN_REF.fullmatch(ref)
    return (int(m.group(1)), int(m.group(2))) if m else None


def chain_beacon_ok(beacon: Beacon) -> bool:
    """A chain beacon's form: a block hash and a ref naming the chain and block."""
    return BLOCK_HASH.fullmatch(beacon.value) is not None and chain_ref(beacon.ref) is not None


def draw(raffle: Raffle, seed_hex: str, beacon: Beacon, now: float) -> list[Winner]:
    """Reveal the seed, fix the beacon, select the winners (steps 5-7)."""
    _require(raffle, "closed")
    if not HEX64.fullmatch(seed_hex) or commitment_of(seed_hex) != raffle.commitment:
        raise RaffleError("seed_mismatch", "the seed does not match the commitment", "seed")
    if beacon.source != raffle.terms.beacon:
        raise RaffleError(
            "bad_beacon", f"this raffle draws with a {raffle.terms.beacon} beacon", "beacon"
        )
    check_beacon(beacon)
    leaves = leaves_of(raffle.holdings)
    assert len(leaves) == raffle.count, "entries changed after close"
    assert sum(leaf.weight for leaf in leaves) == raffle.weight, "entries changed after close"
    key = draw_key_of(
        raffle.terms.id, raffle.terms_hash, raffle.opened_at, raffle.commitment,
        raffle.closed_at, raffle.count, raffle.root, beacon, seed_hex,
    )  # fmt: skip
    raffle.winners = select_winners(key, leaves, raffle.terms.winners)
    raffle.status = "drawn"
    raffle.drawn_at = int(now)
    raffle.beacon = beacon
    raffle.seed = seed_hex
    raffle.draw_key = key
    return raffle.winners


def cancel(raffle: Raffle, now: float) -> list[Refund]:
    """Cancel before the draw: everyone gets back every point they paid."""
    _require(raffle, "draft", "open", "closed")
    raffle.status = "cancelled"
    raffle.closed_at = raffle.closed_at or int(now)
    return [Refund(u, h.paid_points) for u, h in sorted(raffle.holdings.items()) if h.paid_points]


def publish(raffle: Raffle, *, with_leaves: bool = True) -> Published:
    """The public record: terms and commitment once open; entries once closed; seed,
    beacon and winners once drawn."""
    closed = raffle.status in ("closed", "drawn") or (
        raffle.status == "cancelled" and bool(raffle.root)
    )
    return Published(
        raffle=raffle.terms.id,
        status=raffle.status,
        terms=raffle.terms,
        terms_hash=raffle.terms_hash,
        opened_at=raffle.opened_at,
        commitment=raffle.commitment,
        closed_at=raffle.closed_at if closed else 0,
        count=raffle.count,
        tickets=raffle.tickets,
        weight=raffle.weight,
        root=raffle.root,
        leaves=leaves_of(raffle.holdings) if closed and with_leaves else [],
        beacon=raffle.beacon,
        seed=raffle.seed,
        draw_key=raffle.draw_key,
        winners=list(raffle.winners),
    )


# -- verification ---------------------------------------------------------------------------
class Check(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str = ""


class Verification(msgspec.Struct, frozen=True):
    ok: bool
    checks: list[Check]
    winners: list[Winner]
    """The winners recomputed from the published data."""


def verify(p: Published) -> Verification:
    """Recompute the draw from the published record alone (a drawn raffle)."""
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str = "") -> bool:
        checks.append(Check(name, ok, "" if ok else detail))
        return ok

    check("version", p.version == VERSION, f"version {p.version}, this verifier knows {VERSION}")
    check("status", p.status == "drawn", f"status {p.status}: only a drawn raffle verifies")
    check("raffle_id", p.raffle == p.terms.id, "raffle id differs from the terms' id")
    check("terms_hash", terms_hash(p.terms) == p.terms_hash, "the terms do not hash to terms_hash")
    seed_ok = HEX64.fullmatch(p.seed) is not None
    check(
        "commitment",
        seed_ok and commitment_of(p.seed) == p.commitment,
        "SHA-256(seed) differs from the commitment",
    )
    leaves = p.leaves
    ordered = all(
        leaves[i].user_id.encode() < leaves[i + 1].user_id.encode() for i in range(len(leaves) - 1)
    )
    check("leaves_sorted", ordered, "leaves not sorted by user id (or a user twice)")
    first, sane = 0, True
    for leaf in leaves:
        sane &= leaf.first == first and leaf.tickets >= 1 and leaf.weight >= 1
        first += leaf.tickets
    check("leaves_numbered", sane, "ticket numbers are not consecutive, or a leaf is empty")
    check("count", p.count == len(leaves), f"count {p.count}, {len(leaves)} leaves")
    check("tickets", p.tickets == first, f"tickets {p.tickets}, leaves hold {first}")
    weight = sum(leaf.weight for leaf in leaves)
    check("weight", p.weight == weight, f"weight {p.weight}, leaves weigh {weight}")
    check("root", merkle_root(leaves) == p.root, "the leaves do not hash to the root")
    beacon_ok = p.beacon is not None and BEACON.fullmatch(p.beacon.value) is not None
    if beacon_ok and p.beacon is not None and p.beacon.source == "chain":
        beacon_ok = chain_beacon_ok(p.beacon)
    check("beacon", beacon_ok and p.beacon is not None and p.beacon.source == p.terms.beacon,
          "no beacon, a malformed one (a chain beacon: a block hash, ref 'chain ID block N'), "
          "or not from the source the terms name")  # fmt: skip
    winners: list[Winner] = []
    if beacon_ok and p.beacon is not None and seed_ok:
        key = draw_key_of(
            p.raffle, p.terms_hash, p.opened_at, p.commitment, p.closed_at, p.count, p.root,
            p.beacon, p.seed,
        )  # fmt: skip
        check("draw_key", key == p.draw_key, "the draw key does not follow from the record")
        if sane and leaves:
            winners = select_winners(key, leaves, p.terms.winners)
    check("winners", winners == p.winners, "the published winners differ from the recomputed")
    return Verification(all(c.ok for c in checks), checks, winners)


published_encoder = msgspec.json.Encoder()
published_decoder = msgspec.json.Decoder(Published)
terms_decoder = msgspec.json.Decoder(Terms)
raffle_encoder = msgspec.msgpack.Encoder()
raffle_decoder = msgspec.msgpack.Decoder(Raffle)
holding_decoder = msgspec.msgpack.Decoder(Holding)
