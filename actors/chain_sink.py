"""The chain sink: payouts minted as loyalty tokens to the member's wallet, in batches, once.

A batch's on-chain payoutId is keccak of its payout ids (chain.client.batch_id). Before a
batch is sent, its composition (ids, recipients, amounts) is written to Redis and each
payout is tied to it, in one transaction; a payout sent again (a retry, or a restarted
actor) is sent in the very same batch, so the contract's `minted[payoutId]` makes the mint
happen once: a batch found minted (or refused as PayoutAlreadyMinted) settles its payouts.

Redis (under the namespace):
pochain:{pid}     string; the batch id (hex) a chain payout was put in.
pobatch:{bid}     string; JSON {"ids": [...], "to": [...], "amounts": [...]} of a batch.
chain:token:{chain id}  string; the token's address when deployed at start.
chain:tiers       string; JSON list of the token's tier thresholds (token units), at start.
chain:balances    hash; lowercase address -> token units, on the embedded EVM only: the
                  balances of the recipients of each mint for networks gated on chain
                  ([networks.N.gating] source = "chain"), read from the chain after the mint
                  (the gateway cannot reach the EVM inside this process; gateway/gating.py).
                  Emptied when a payout actor starts (its embedded chain starts empty).
wallets:{net}     members' linked wallets (actors/wallets.py).

Known limit: voiding one dead payout of a batch and retrying the others mints the voided
one's tokens too (the batch is sent whole); void or retry a dead chain batch as a whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import redis

from actors.config import PayoutConfig
from actors.keys import Keys
from actors.wallets import link_wallet, linked_wallets, wallets_key
from engine.payout import Payout

log = logging.getLogger(__name__)
__all__ = ["ChainSink", "balances_key", "link_wallet", "linked_wallets", "tiers_key", "wallets_key"]


def balances_key(keys: Keys) -> str:
    """The embedded chain's token balances, by lowercase address (published for gating)."""
    return keys.k("chain", "balances")


def tiers_key(keys: Keys) -> str:
    """The token's tier thresholds in token units (JSON list), published at start."""
    return keys.k("chain", "tiers")


RAISE_BALANCES = """
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  local new = ARGV[i + 1]
  if #new > #old or (#new == #old and new > old) then
    redis.call('HSET', KEYS[1], ARGV[i], new)
  end
end
return 0
"""
"""KEYS: chain:balances; ARGV: address, balance (decimal digits), ... Kept only if larger:
balances on the embedded chain only grow (mints), so a slower reader never writes back an
older value (compared as digit strings: 10**18-scale numbers exceed Lua's doubles)."""


class ChainSink:
    """Mints chain payouts through chain.client.TokenClient (built in the actor's process)."""

    def __init__(
        self, r: redis.Redis, keys: Keys, pc: PayoutConfig, gated: frozenset[str] = frozenset()
    ) -> None:
        from chain.client import TokenClient, embedded_web3, rpc_web3

        self.r = r
        self.keys = keys
        self.publish = not pc.chain_rpc and bool(gated)
        """Publish recipients' balances (embedded EVM, some network gated on chain)."""
        self.gated = gated
        self._raise = r.register_script(RAISE_BALANCES)
        self.max_batch = pc.chain_batch
        if pc.chain_rpc:
            w3, signer = rpc_web3(pc.chain_rpc, pc.chain_private_key)
        else:
            w3, signer = embedded_web3()
        address = pc.token_address
        if not address:
            remembered = keys.k("chain", "token", w3.eth.chain_id)
            got = r.get(remembered) if pc.chain_rpc else None
            if got is not None and w3.eth.get_code(got.decode()):
                address = got.decode()
            else:
                address = TokenClient.deploy(w3, signer).address
                if pc.chain_rpc:
                    r.set(remembered, address)
        self.token = TokenClient(w3, signer, address, confirmations=pc.confirmations,
                                 estimate=bool(pc.chain_rpc))  # fmt: skip
        self.gas_used = 0
        self.batches = 0
        r.set(tiers_key(keys), json.dumps([str(t) for t in self.token.thresholds()]))

    def _batch_of(self, pid: str) -> str:
        return self.keys.k("pochain", pid)

    def _batch(self, bid: str) -> str:
        return self.keys.k("pobatch", bid)

    def _assign(self, ps: Sequence[Payout]) -> tuple[dict[str, list[Payout]], dict[str, str]]:
        """Batches of the claimed payouts (existing ones kept; new ones formed and stored)
        and the failure reason of payouts that cannot go yet (no wallet)."""
        from chain.client import batch_id

        have = self.r.mget([self._batch_of(p.id) for p in ps]) if ps else []
        groups: dict[str, list[Payout]] = {}
        fresh: list[tuple[Payout, str]] = []
        failed: dict[str, str] = {}
        for p, bid in zip(ps, have, strict=True):
            if bid is not None:
                groups.setdefault(bid.decode(), []).append(p)
                continue
            to = p.destination or next(
                iter(linked_wallets(self.r, self.keys, p.network, p.user_id)), ""
            )
            if not to:
                failed[p.id] = "no linked wallet"
            else:
                fresh.append((p, to))
        for i in range(0, len(fresh), self.max_batch):
            chunk = fresh[i : i + self.max_batch]
            ids = [p.id for p, _ in chunk]
            bid = batch_id(ids).hex()
            record = json.dumps({"ids": ids, "to": [to for _, to in chunk],
                                 "amounts": [p.amount for p, _ in chunk]})  # fmt: skip
            with self.r.pipeline(transaction=True) as pipe:
                pipe.set(self._batch(bid), record, nx=True)
                for pid in ids:
                    pipe.set(self._batch_of(pid), bid)
                pipe.execute()
            groups[bid] = [p for p, _ in chunk]
        return groups, failed

    def send(self, ps: Sequence[Payout]) -> dict[str, tuple[bool, str]]:
        """Mint the payouts: payout id -> (ok, reason)."""
        from chain.client import AlreadyMinted, ChainError

        groups, failed = self._assign(ps)
        out: dict[str, tuple[bool, str]] = {pid: (False, why) for pid, why in failed.items()}
        for bid, members in groups.items():
            raw = self.r.get(self._batch(bid))
            assert raw is not None, "a payout's batch is stored before it is sent"
            batch: dict[str, Any] = json.loads(raw)
            result: tuple[bool, str]
            try:
                if self.token.minted(bytes.fromhex(bid)):
                    result = (True, "")
                else:
                    minted = self.token.mint_batch(
                        bytes.fromhex(bid), batch["to"], batch["amounts"]
                    )
                    self.gas_used += minted.gas_used
                    self.batches += 1
                    result = (True, "")
            except AlreadyMinted:
                result = (True, "")
            except ChainError as err:
                result = (False, f"chain: {err}"[:300])
            for p in members:
                out[p.id] = result
            if result[0] and self.publish:
                self._publish(batch, members)
        return out

    def _publish(self, batch: dict[str, Any], members: Sequence[Payout]) -> None:
        """The balances of a minted batch's recipients on gated networks, from the chain."""
        from chain.client import ChainError

        gated = {p.id for p in members if p.network in self.gated}
        to = sorted({a.lower() for pid, a in zip(batch["ids"], batch["to"], strict=True)
                     if pid in gated})  # fmt: skip
        try:
            args = [x for a in to for x in (a, str(self.token.balance_of(a)))]
        except ChainError as err:  # the mint stands; the next one publishes again
            log.warning("chain_balances_unread err=%s", err)
            return
        if args:
            self._raise(keys=[balances_key(self.keys)], args=args)
