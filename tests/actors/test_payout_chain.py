"""Chain payouts through the payout actor on a real node (anvil): members' linked wallets,
batched mints, a kill -9 of the payout actor mid-way: every payout minted exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest
import redis
from eth_account import Account

from actors.chain_sink import link_wallet
from actors.client import RallyClient
from actors.config import PayoutConfig
from actors.keys import Keys
from actors.payout import PayoutStore
from chain.client import TokenClient, rpc_web3
from engine import payout as eng
from engine.payout import PayoutRules, Request
from tests.actors.conftest import make_cfg
from tests.actors.test_payout import wait_for
from tests.actors.test_spend import seed
from tests.chain.conftest import ANVIL_KEY, anvil_url  # noqa: F401 - the fixture

RULES = PayoutRules(units_per_point_num=10**16, min_points=1, daily_limit_points=10_000,
                    max_attempts=8, backoff_base_s=0.05, backoff_max_s=0.5, lease_s=3.0,
                    batch_size=400)  # fmt: skip
N = 800


@pytest.fixture
def on_anvil(ray_cluster: None, redis_server, namespace: str, anvil_url: str) -> Iterator[tuple]:  # noqa: F811
    pc = PayoutConfig(rules=msgspec.to_builtins(RULES), chain_rpc=anvil_url,
                      chain_private_key=ANVIL_KEY, chain_batch=100, jitter_seed=3)  # fmt: skip
    cfg = make_cfg(redis_server.url, namespace, payouts=pc)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg, anvil_url
    client.stop()


def test_chain_payouts_mint_once_through_kill9(on_anvil, redis_server) -> None:
    client, cfg, url = on_anvil
    r = redis.Redis.from_url(redis_server.url)
    keys = Keys(cfg.namespace)
    before = seed(client, cfg, r)
    users = sorted(before)
    wallets = {u: Account.create().address for u in users}
    for u in users[:-1]:
        link_wallet(r, keys, "n", u, wallets[u])
    store = PayoutStore(r, keys, RULES)
    reqs = [Request(network="n", user_id=users[i % len(users)], points=1 + i % 3, key=f"tok-{i}",
                    sink="chain") for i in range(N)]  # fmt: skip
    out = store.create(reqs, time.time())
    assert {c for c, _ in out} == {eng.OK}
    assert wait_for(lambda: store.counts().get("settled", 0) >= N // 3, 60), store.counts()
    client.kill9("payouts")
    unlinked = users[-1]
    expected_dead = sum(1 for q in reqs if q.user_id == unlinked)

    def finished() -> bool:
        c = store.counts()
        return c.get("settled", 0) == N - expected_dead and c.get("dead", 0) == expected_dead

    assert wait_for(finished, 120, 0.25), store.counts()
    assert {p.reason for p in store.list("dead")} == {"no linked wallet"}

    w3, signer = rpc_web3(url, ANVIL_KEY)
    address = r.get(keys.k("chain", "token", w3.eth.chain_id)).decode()
    tok = TokenClient(w3, signer, address)
    for u in users[:40]:
        want = sum(q.points for q in reqs if q.user_id == u) * 10**16
        assert tok.balance_of(wallets[u]) == (0 if u == unlinked else want), u
    assert tok.balance_of(wallets[unlinked]) == 0
