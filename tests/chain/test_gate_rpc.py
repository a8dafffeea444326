"""Gating on chain with `[chain] rpc` (gateway/gating.py ChainGate): the gateway reads the
node itself, so a member's on-chain tier follows their linked wallets' balances at once,
tokens moved away included; on anvil, a real node started by the test."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from eth_account import Account

from actors.chain_sink import link_wallet
from actors.keys import Keys
from chain.client import DECIMALS, TokenClient, rpc_web3
from engine.gating import shortfall
from engine.rules import GatingRules, NetworkRules, RuleBook
from gateway.gating import ChainGate
from tests.chain.conftest import ANVIL_KEY, anvil_url  # noqa: F401 - the fixture

HOLDER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
"""anvil's second funded account: a member's wallet that can move its tokens."""
TOKEN = 10**DECIMALS


def test_the_gate_reads_balances_from_the_node(anvil_url, redis_server, namespace) -> None:  # noqa: F811
    w3, signer = rpc_web3(anvil_url, ANVIL_KEY)
    tok = TokenClient.deploy(w3, signer)
    holder = Account.from_key(HOLDER_KEY)
    spare = Account.create().address
    tok.mint_batch(b"\x01" * 32, [holder.address, spare], [600 * TOKEN, 1_500 * TOKEN])
    keys = Keys(namespace)
    r = redis.Redis.from_url(redis_server.url)
    r.set(keys.k("chain", "token", w3.eth.chain_id), tok.address)  # as the payout actor does
    link_wallet(r, keys, "n", "m", holder.address)
    book = RuleBook({"n": NetworkRules(gating=GatingRules(source="chain")), "e": NetworkRules()})

    async def standing(network: str) -> tuple[int, int, str | None]:
        client = aioredis.Redis.from_url(redis_server.url)
        gate = ChainGate(client, keys, book, rpc=anvil_url, redis_url=redis_server.url)
        try:
            tiers, rank, amount = await gate.standing(network, "m", 3, 12_000)
        finally:
            await client.aclose()
        short = shortfall(tiers, "Gold", rank, amount)
        return rank, amount, short.points_needed if short else None

    assert asyncio.run(standing("e")) == (3, 12_000, None), "engine-gated: the engine's tier"
    assert asyncio.run(standing("n")) == (1, 600, 1_400), "Silver on chain: 1,400 tokens to Gold"
    link_wallet(r, keys, "n", "m", spare)
    assert asyncio.run(standing("n")) == (2, 2_100, None), "wallets' balances are summed"

    # the holder sends 200 tokens away on chain: the next read sees it
    fn = tok.contract.functions.transfer(Account.create().address, 200 * TOKEN)
    tx = fn.build_transaction({"from": holder.address, "nonce": w3.eth.get_transaction_count(
        holder.address), "chainId": w3.eth.chain_id})  # fmt: skip
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(holder.sign_transaction(tx).raw_transaction)
    )
    assert asyncio.run(standing("n")) == (1, 1_900, 100)
