"""A raffle's chain beacon read from an EVM: the first block whose timestamp is after close.

`block_after` reads a chain (a JSON-RPC node, or the embedded EVM) and finds that block by
binary search over block timestamps (engine.raffle.first_block_after); `mine_after` is its
embedded-EVM form, which mines an empty block when none is after close yet (eth-tester
mines only with transactions otherwise). Both run wherever the chain is: the gateway or the
CLI for a node, the payout actor for the embedded EVM (actors/chain_beacon.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from web3 import Web3

from chain.client import ChainError
from engine.raffle import Beacon, chain_beacon_of, chain_ref, first_block_after

MAX_CLOCK_WAIT_S = 2.0
"""The longest the embedded chain waits for its clock to pass a raffle's close."""


def block_after(w3: Web3, after: int, confirmations: int = 1) -> Beacon | None:
    """The beacon of the first block after genesis with timestamp > `after`, once it has
    `confirmations` (1: mined); None if the newest block is not after close yet (or lacks
    confirmations). Never genesis: its hash follows from its parameters and timestamp, so
    an embedded EVM started after close would have a predictable one."""
    latest = int(w3.eth.block_number)
    seen: dict[int, int] = {}

    def timestamp_of(n: int) -> int:
        if n not in seen:
            seen[n] = int(w3.eth.get_block(n)["timestamp"])
        return seen[n]

    number = first_block_after(after, 1, latest, timestamp_of)
    if number is None or latest < number + max(1, confirmations) - 1:
        return None
    block = w3.eth.get_block(number)
    return chain_beacon_of(int(w3.eth.chain_id), number, Web3.to_hex(block["hash"]))


def mine_after(
    w3: Web3,
    after: int,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Beacon:
    """On the embedded EVM: `block_after`, mining one empty block (timestamped now, once
    the clock has passed `after`) when no block is after close yet."""
    found = block_after(w3, after)
    if found is not None:
        return found
    tester: Any = getattr(w3.provider, "ethereum_tester", None)
    if tester is None:
        raise ChainError("only the embedded EVM mines on demand")
    wait = after + 1 - clock()
    if wait > MAX_CLOCK_WAIT_S:
        raise ChainError(f"the raffle closed {wait:.0f} s ahead of the chain's clock")
    if wait > 0:
        sleep(wait)
    pending = int(tester.get_block_by_number("pending")["timestamp"])
    if pending > after:
        tester.mine_blocks(1)
    else:  # the pending block was stamped when the last one was mined, before close:
        # stamp it now (eth-tester 0.14 mines it one second before time_travel's target)
        tester.time_travel(max(int(clock()), after + 1) + 1)
    found = block_after(w3, after)
    if found is None:  # pragma: no cover - another eth-tester's stamping: one more block
        tester.mine_blocks(1)
        found = block_after(w3, after)
    if found is None:  # pragma: no cover
        raise ChainError(f"no block after {after} even after mining one")
    return found


def check_on_chain(w3: Web3, beacon: Beacon, closed_at: int) -> list[tuple[str, bool, str]]:
    """Check a published chain beacon against a node of its chain: (name, ok, detail) of
    each check: the chain id, the block's hash, that the block is after close and that
    its parent is not (it is the first block after close)."""
    ref = chain_ref(beacon.ref)
    if ref is None:
        return [("chain_ref", False, f"the ref {beacon.ref!r} names no chain and block")]
    chain_id, number = ref
    got_id = int(w3.eth.chain_id)
    out = [("chain_id", got_id == chain_id, f"the node is chain {got_id}, the ref {chain_id}")]
    if got_id != chain_id:
        return out
    if number > int(w3.eth.block_number):
        return [*out, ("block_hash", False, f"the node has no block {number}")]
    block = w3.eth.get_block(number)
    got = Web3.to_hex(block["hash"])
    stamp = int(block["timestamp"])
    out.append(("block_hash", got == beacon.value, f"block {number}'s hash is {got}"))
    out.append(("block_after_close", stamp > closed_at,
                f"block {number} is stamped {stamp}, not after close ({closed_at})"))  # fmt: skip
    if number > 1:  # block 1's parent is genesis, never a beacon
        before = int(w3.eth.get_block(number - 1)["timestamp"])
        out.append(("first_block_after_close", before <= closed_at,
                    f"block {number - 1} is stamped {before}, already after close"))  # fmt: skip
    return out
