"""The draw scenario: freeze a raffle's entries (leaves + Merkle root) and draw its winners.

--draw-tickets tickets (default 1,000,000) held by --draw-members members (default 100,000),
ticket counts spread 1..2x the mean and luck from four tiers (100-200 %), as a raffle
actor holds them when it closes. Timed, best of --draw-repeats: `close` (sort the members,
number the tickets, hash the leaves and the tree: the Merkle root), `draw` (reveal the
seed, derive the draw key, select the winners: one, then ten), `verify` of the whole
published record (what `rally raffle verify` recomputes), and one member's Merkle proof.
The engine is pure: this measures the work itself, in the benchmark's process.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks.bench import Bench
from engine.raffle import (
    Beacon,
    Holding,
    Raffle,
    Terms,
    close,
    commitment_of,
    create,
    draw,
    leaves_of,
    merkle_proof,
    open_raffle,
    publish,
    verify,
)

SEED = "d7" * 32
BEACON = Beacon("admin", "bench-beacon-0001", "bench")


def holdings(members: int, tickets: int, seed: int) -> dict[str, Holding]:
    """`tickets` tickets over `members` members, exactly."""
    rng = random.Random(seed)
    mean = tickets / members
    counts = [max(1, round(mean * (0.5 + rng.random()))) for _ in range(members)]
    diff = tickets - sum(counts)
    i = 0
    while diff:
        step = 1 if diff > 0 else -1
        if counts[i % members] + step >= 1:
            counts[i % members] += step
            diff -= step
        i += 1
    return {
        f"member{i:07d}": Holding(n, n * 10, (100, 125, 150, 200)[i % 4])
        for i, n in enumerate(counts)
    }


def _raffle(winners: int, held: dict[str, Holding]) -> Raffle:
    terms = Terms(id="bench", network="bench", winners=winners, max_tickets_per_member=10**6)
    r = create(terms, 0.0)
    open_raffle(r, commitment_of(SEED), 1.0)
    r.holdings = dict(held)
    return r


def _once(held: dict[str, Holding], winners: int) -> dict[str, float]:
    r = _raffle(winners, held)
    t0 = time.perf_counter()
    close(r, 2.0)
    t1 = time.perf_counter()
    draw(r, SEED, BEACON, 3.0)
    t2 = time.perf_counter()
    p = publish(r)
    t3 = time.perf_counter()
    ok = verify(p).ok
    t4 = time.perf_counter()
    leaves = leaves_of(r.holdings)
    t5 = time.perf_counter()
    merkle_proof(leaves, len(leaves) // 2)
    t6 = time.perf_counter()
    assert ok, "the benchmark's own draw does not verify"
    return {
        "close_s": t1 - t0,
        "draw_s": t2 - t1,
        "close_and_draw_s": t2 - t0,
        "verify_s": t4 - t3,
        "proof_s": t6 - t5,
    }


def draw_scenario(b: Bench) -> dict[str, Any]:
    o = b.opts
    b.show(["draw", f"{o.draw_tickets:,} tickets / {o.draw_members:,} members", *[""] * 8])
    held = holdings(o.draw_members, o.draw_tickets, o.seed)
    summary: dict[str, Any] = {"tickets": o.draw_tickets, "members": o.draw_members}
    lines: list[str] = []
    for winners in (1, 10):
        runs = [_once(held, winners) for _ in range(o.draw_repeats)]
        best = {k: round(min(run[k] for run in runs), 3) for k in runs[0]}
        summary[f"winners_{winners}"] = best
        lines.append(
            f"{o.draw_tickets:,} tickets, {o.draw_members:,} members, {winners} winner(s): "
            f"close (leaves + Merkle root) {best['close_s']:.3f} s + draw {best['draw_s']:.3f} s "
            f"= {best['close_and_draw_s']:.3f} s; verify {best['verify_s']:.3f} s; one "
            f"Merkle proof {best['proof_s'] * 1000:.0f} ms (best of {o.draw_repeats})"
        )
    b.console.print("\n".join(lines))
    return {"status": "ok", "runs": [], "summary": summary, "lines": lines}
