"""Where a chain raffle's beacon comes from (terms `"beacon": "chain"`): the hash of the
first block whose timestamp is after the raffle's close (chain/beacon.py).

- `[chain] rpc` set: the gateway (or the CLI) reads the node itself; if the newest block is
  not after close yet it answers `beacon_not_ready` (retry after the next block).
- rpc "" (the embedded EVM, which lives in the payout actor's process): the requester
  pushes a request on a Redis list and waits for the payout actor's answer; the actor
  finds the block, mining an empty one if none is after close yet.
- neither (rpc "" and the payout actor disabled): `chain_unavailable`.

Redis (under the namespace):
chain:beaconq       list; JSON requests {"id", "after", "deadline"} for the payout actor.
chain:beaconr:{id}  list; the JSON answer to request id ({"value", "ref"} or {"code",
                    "message"}), expiring after REPLY_TTL_S.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from actors.keys import Keys
from engine.raffle import Beacon, chain_beacon_ok

log = logging.getLogger(__name__)

REPLY_TTL_S = 60
SERVE_MAX = 16
"""Requests the payout actor answers per tick."""


class BeaconError(Exception):
    """No chain beacon now: `code` (chain_unavailable, beacon_not_ready), an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def queue_key(keys: Keys) -> str:
    return keys.k("chain", "beaconq")


def reply_key(keys: Keys, request_id: str) -> str:
    return keys.k("chain", "beaconr", request_id)


def not_configured() -> BeaconError:
    return BeaconError(
        "chain_unavailable",
        "no chain is configured to read a block hash from ([chain] rpc, or the embedded EVM "
        "of the payout actor: [payouts] enabled)",
    )


def not_ready(after: int) -> BeaconError:
    return BeaconError(
        "beacon_not_ready",
        f"no block after the raffle's close ({after}) on the chain yet: retry after the next block",
    )


# -- a node ---------------------------------------------------------------------------------
_nodes: dict[str, Any] = {}


def read_node(rpc: str, after: int, confirmations: int = 1) -> Beacon:
    """The beacon read from the node at `rpc` (blocking: run it in a thread)."""
    from eth_account import Account
    from web3.exceptions import Web3Exception

    from chain.beacon import block_after
    from chain.client import ChainError, rpc_web3

    try:
        w3 = _nodes.get(rpc)
        if w3 is None:
            w3 = _nodes[rpc] = rpc_web3(rpc, Account.create().key.hex())[0]
        found = block_after(w3, after, confirmations)
    except (OSError, Web3Exception, ChainError) as err:
        _nodes.pop(rpc, None)
        raise BeaconError("chain_unavailable", f"the chain could not be read: {err}"[:300],
                          503) from err  # fmt: skip
    if found is None:
        raise not_ready(after)
    return found


# -- the embedded EVM, through the payout actor ---------------------------------------------
def _request(after: int, timeout_s: float) -> tuple[str, str]:
    rid = uuid.uuid4().hex
    body = json.dumps({"id": rid, "after": after, "deadline": time.time() + timeout_s})
    return rid, body


def _answer(raw: bytes | str | None, timeout_s: float) -> Beacon:
    if raw is None:
        raise BeaconError("chain_unavailable", "the payout actor (which runs the embedded "
                          f"EVM) did not answer in {timeout_s:g} s", 503)  # fmt: skip
    got = json.loads(raw)
    if "code" in got:
        raise BeaconError(got["code"], got["message"], int(got.get("status", 409)))
    beacon = Beacon("chain", got["value"], got["ref"])
    if not chain_beacon_ok(beacon):  # pragma: no cover - the actor answers the form
        raise BeaconError("chain_unavailable", f"a malformed chain answer: {got}", 503)
    return beacon


def ask_actor(r: redis.Redis, keys: Keys, after: int, timeout_s: float = 30.0) -> Beacon:
    """Ask the payout actor for the beacon of the first block after `after` (blocking)."""
    rid, body = _request(after, timeout_s)
    r.rpush(queue_key(keys), body)
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = r.blpop([reply_key(keys, rid)], timeout=max(1, min(5, int(left))))
        if got is not None:
            return _answer(got[1], timeout_s)
    return _answer(None, timeout_s)


async def ask_actor_async(
    client: aioredis.Redis, keys: Keys, after: int, timeout_s: float = 30.0
) -> Beacon:
    """ask_actor on the gateway's asyncio Redis client."""
    rid, body = _request(after, timeout_s)
    await client.rpush(queue_key(keys), body)
    deadline = time.monotonic() + timeout_s
    while deadline - time.monotonic() > 0:
        got = await client.blpop([reply_key(keys, rid)], timeout=1)
        if got is not None:
            return _answer(got[1], timeout_s)
    return _answer(None, timeout_s)


def serve(r: redis.Redis, keys: Keys, beacon_of: Callable[[int], Beacon]) -> int:
    """The payout actor's side: answer the waiting requests with `beacon_of(after)` (its
    ChainError as chain_unavailable); returns how many were taken."""
    from chain.client import ChainError

    raws = cast("list[bytes]", r.lpop(queue_key(keys), SERVE_MAX) or [])
    for raw in raws:
        try:
            req = json.loads(raw)
            rid, after, deadline = str(req["id"]), int(req["after"]), float(req["deadline"])
        except (ValueError, KeyError, TypeError):
            continue
        if deadline < time.time():
            continue  # nobody waits for it any more
        answer: dict[str, Any]
        try:
            beacon = beacon_of(after)
            answer = {"value": beacon.value, "ref": beacon.ref}
        except Exception as err:  # a ChainError, or the EVM's own: the requester is told
            if not isinstance(err, ChainError):
                log.exception("chain_beacon_failed after=%s", after)
            answer = {"code": "chain_unavailable", "message": f"chain: {err}"[:300],
                      "status": 503}  # fmt: skip
        key = reply_key(keys, rid)
        with r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(answer))
            pipe.expire(key, REPLY_TTL_S)
            pipe.execute()
    return len(raws)


# -- either ------------------------------------------------------------------------------------
def resolve(
    r: redis.Redis,
    keys: Keys,
    after: int,
    *,
    rpc: str,
    embedded: bool,
    confirmations: int = 1,
    timeout_s: float = 30.0,
) -> Beacon:
    """The chain beacon of a raffle closed at `after` (blocking; the CLI's path)."""
    if rpc:
        return read_node(rpc, after, confirmations)
    if embedded:
        return ask_actor(r, keys, after, timeout_s)
    raise not_configured()
