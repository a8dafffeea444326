"""Gating on chain with the embedded EVM (actors/chain_sink.py -> gateway/gating.py): the
chain sink, after a mint for a network gated on chain, publishes the recipients' balances
read from its in-process chain; the gateway's ChainGate sums a member's linked wallets'
balances from there. A network gated by the engine publishes nothing. No Ray: the sink runs
in the test's process, as it does in the payout actor's."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from eth_account import Account

from actors.chain_sink import ChainSink, balances_key, link_wallet
from actors.config import PayoutConfig
from actors.keys import Keys
from engine.payout import Payout
from engine.rules import GatingRules, NetworkRules, RuleBook
from gateway.gating import ChainGate

TOKEN = 10**18


def payout(pid: str, network: str, user: str, tokens: int, to: str = "") -> Payout:
    return Payout(id=pid, network=network, user_id=user, points=tokens, units=tokens * TOKEN,
                  sink="chain", destination=to, key=pid, digest=b"", created_at=0.0)  # fmt: skip


def test_the_sink_publishes_minted_balances_the_gate_sums(redis_server, namespace) -> None:
    keys = Keys(namespace)
    r = redis.Redis.from_url(redis_server.url)
    sink = ChainSink(r, keys, PayoutConfig(), gated=frozenset({"n"}))
    a, b, other = (Account.create().address for _ in range(3))
    link_wallet(r, keys, "n", "m", a)
    link_wallet(r, keys, "n", "m", b)
    link_wallet(r, keys, "e", "x", other)
    out = sink.send([payout("p1", "n", "m", 8), payout("p2", "e", "x", 9)])
    assert out == {"p1": (True, ""), "p2": (True, "")}
    assert r.hgetall(balances_key(keys)) == {a.lower().encode(): str(8 * TOKEN).encode()}, (
        "only the gated network's recipients are published")  # fmt: skip
    pays = [payout(f"q{i}", "n", "m", 17) for i in range(30)]  # 510 tokens, 17 to a payout
    # another member's payout to one of m's wallets (a wallet is linked to one member only)
    assert set(sink.send([*pays[:20], payout("pb", "n", "m2", 1, to=b)]).values()) == {(True, "")}
    assert set(sink.send(pays[20:]).values()) == {(True, "")}
    book = RuleBook({"n": NetworkRules(gating=GatingRules(source="chain"))})

    async def standing() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            _, rank, tokens = await ChainGate(client, keys, book).standing("n", "m", 0, 0)
        finally:
            await client.aclose()
        return rank, tokens

    assert asyncio.run(standing()) == (1, 8 + 510 + 1), "Silver: 519 tokens over two wallets"
    assert sink.token.balance_of(a) == 518 * TOKEN
