"""The tier that gates store items and raffle tickets, from where the network says
([networks.N.gating] source): the engine's tier by lifetime points, or the tier the summed
RallyToken balance of the member's linked wallets reaches against the token's on-chain
thresholds (engine/gating.py chain_tiers).

How the gateway reads the chain:
- `[chain] rpc` set: from the node itself (balanceOf of each linked wallet and
  tierThresholds, web3 in a worker thread), so tokens moved on chain count at once. The
  token is `[chain] token_address`, or the one the payout actor deployed (remembered in Redis
  per chain id).
- the embedded EVM (in the payout actor's process, out of the gateway's reach): the balances
  the chain sink publishes in Redis after each mint for networks gated on chain
  (actors/chain_sink.py: chain:balances, chain:tiers). On the embedded chain only those
  mints move tokens, so what it publishes is the chain's state as of the last mint.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from actors.chain_sink import balances_key, tiers_key, wallets_key
from actors.keys import Keys
from actors.redisconn import connect
from engine.gating import chain_tiers
from engine.rules import RuleBook, TierRules
from gateway.errors import GatewayError

DEFAULT_DECIMALS = 18


class ChainUnreadable(GatewayError):
    """The node could not be read for a member's on-chain tier."""

    status = 503
    code = "chain_unavailable"


class ChainGate:
    """Members' standing for gating, by the network's gating source."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        book: RuleBook,
        *,
        rpc: str = "",
        token_address: str = "",
        redis_url: str = "",
    ) -> None:
        self.redis = client
        self.redis_url = redis_url
        self.keys = keys
        self.book = book
        self.rpc = rpc
        self.token_address = token_address
        self._contract: Any = None

    async def standing(
        self, network: str, user_id: str, rank: int, lifetime: int
    ) -> tuple[TierRules, int, int]:
        """(tier rules, rank, amount) to gate with: the engine's tiers, the member's tier and
        lifetime points; or, gated on chain, the tiers in whole tokens, the member's on-chain
        tier and their whole tokens (so engine.gating.shortfall says the tokens missing)."""
        rules = self.book.network(network)
        if rules.gating.source != "chain":
            return rules.tiers, rank, lifetime
        raw = await self.redis.hget(wallets_key(self.keys, network), user_id)
        wallets: list[str] = json.loads(raw) if raw else []
        if self.rpc:
            balance, thresholds = await asyncio.to_thread(self._read_node, wallets)
        else:
            balance, thresholds = await self._read_published(wallets)
        tiers = chain_tiers(rules.tiers.names, thresholds, DEFAULT_DECIMALS)
        tokens = balance // 10**DEFAULT_DECIMALS
        return tiers, tiers.tier_for(tokens), tokens

    async def _read_published(self, wallets: list[str]) -> tuple[int, list[int]]:
        from chain.client import DEFAULT_THRESHOLDS

        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(tiers_key(self.keys))
            pipe.hmget(balances_key(self.keys), [w.lower() for w in wallets] or ["-"])
            published, balances = await pipe.execute()
        thresholds = (
            [int(t) for t in json.loads(published)]
            if published
            else [t * 10**DEFAULT_DECIMALS for t in DEFAULT_THRESHOLDS]
        )
        return sum(int(b) for b in balances if b is not None), thresholds

    def _read_node(self, wallets: list[str]) -> tuple[int, list[int]]:
        from eth_utils import to_checksum_address
        from web3.exceptions import Web3Exception

        from chain.client import ChainError

        try:
            contract = self._token()
            balance = sum(
                int(contract.functions.balanceOf(to_checksum_address(w)).call()) for w in wallets
            )
            thresholds = [int(t) for t in contract.functions.tierThresholds().call()]
        except (OSError, Web3Exception, ChainError) as err:
            raise ChainUnreadable(f"the chain could not be read: {err}"[:300]) from err
        return balance, thresholds

    def _token(self) -> Any:
        """The token contract on the node (built once; the address looked up until found)."""
        if self._contract is not None:
            return self._contract
        from eth_account import Account

        from chain.client import Artifact, ChainError, rpc_web3

        w3, _ = rpc_web3(self.rpc, Account.create().key.hex())
        address = self.token_address
        if not address:
            with connect(self.redis_url) as r:
                got = r.get(self.keys.k("chain", "token", w3.eth.chain_id))
            if got is None:
                raise ChainError("the token is not deployed yet")
            address = got.decode()
        self._contract = w3.eth.contract(address=w3.to_checksum_address(address),
                                         abi=Artifact.load().abi)  # fmt: skip
        return self._contract


CHAIN_GATE = web.AppKey("chain_gate", ChainGate)
