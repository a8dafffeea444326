"""Issue 11's last gaps, driven over HTTP: a network gated on chain ([networks.N.gating]
source = "chain") lets a member whose linked wallet holds enough RallyToken (minted by a chain
payout on the embedded EVM in the payout actor) buy a Silver raffle's tickets that their engine
tier would not, and refuses a member whose engine tier would pass; a channel's
custom_min_tier makes a Bronze member's custom action earn nothing (counted, noticed with
its reason); rewards (welcome, streak, follow) reach the notices stream as reward_earned."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from actors.keys import Keys
from actors.notices import decode_notices
from tests.e2e.conftest import CONFIG, KEY, SECRET, Deployment, deploy, post
from tests.e2e.test_payouts import wait_status
from tests.e2e.test_raffles import call

EXTRA = """
[payouts]
min_points = 1
daily_limit_points = 1000
units_per_point_num = 10000000000000000000   # 10 tokens a point
max_attempts = 3
backoff_base_s = 0.05
lease_s = 5.0
webhook_timeout_s = 1.0

[networks.tv.gating]
source = "chain"

[networks.tv.channels.c2]
custom_min_tier = "Silver"
"""


@pytest.fixture
def dep(ray_cluster, redis_server, namespace, tmp_path) -> Iterator[Deployment]:
    config = tmp_path / "rally.toml"
    text = CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                         key=KEY, secret=SECRET)  # fmt: skip
    config.write_text(text + EXTRA)
    with deploy(config, redis_server.url) as d:
        yield d


def link(d: Deployment, user: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    acct = Account.create()
    code, issued = call(d.url, "POST", f"/v1/members/{user}/wallets/nonce?network=tv")
    assert code == 200, issued
    text = issued["message"].replace("0x{address}", acct.address)
    sig = acct.sign_message(encode_defunct(text=text)).signature.hex()
    code, body = call(d.url, "POST", f"/v1/members/{user}/wallets?network=tv",
                      {"message": text, "signature": sig})  # fmt: skip
    assert code == 200, body
    return str(acct.address)


def buy(d: Deployment, user: str) -> tuple[int, dict]:
    return call(d.url, "POST", "/v1/raffles/silveronly/tickets?network=tv",
                {"tickets": 1, "user_id": user}, headers={"Idempotency-Key": f"k-{user}"})  # fmt: skip


def test_gates_on_chain_custom_gating_and_reward_notices(dep: Deployment) -> None:
    d, now = dep, time.time()
    events = [
        {"kind": "follow", "id": "f-rich", "network": "tv", "channel": "c1", "user_id": "rich", "ts": now},
        {"kind": "follow", "id": "f-loyal", "network": "tv", "channel": "c1", "user_id": "loyal", "ts": now},
        {"kind": "custom", "id": "x-loyal", "network": "tv", "channel": "c1", "user_id": "loyal",
         "ts": now, "action": "quiz", "points": 3000},
        {"kind": "custom", "id": "x-rich", "network": "tv", "channel": "c2", "user_id": "rich",
         "ts": now, "action": "quiz", "points": 40},
    ]  # fmt: skip
    assert post(d.url, events)[0] == 202
    assert d.client.wait_idle(90)
    r = redis.Redis.from_url(d.gateway.redis_url)
    keys = Keys(d.settings.namespace)

    # custom gating: rich (Bronze) earned nothing for the c2 quiz; loyal's c1 quiz counted
    code, rich = call(d.url, "GET", "/v1/members/rich?network=tv")
    assert code == 200, rich
    code, loyal = call(d.url, "GET", "/v1/members/loyal?network=tv")
    # welcome 100, streak 1, follow 50
    assert (rich["balance"], rich["tier"]) == (151, "Bronze"), rich
    assert (loyal["balance"], loyal["tier"]) == (3_151, "Gold"), loyal
    assert int(r.hget(keys.stats, "custom_gated")) == 1
    notices = [n for i, f in r.xrange(keys.notices) for n in decode_notices(i, f)]
    refused = [n.body for n in notices if n and n.kind == "credit_refused"]
    assert [(b["user_id"], b["reason"], b["tier_required"], b["credit_id"]) for b in refused] == [
        ("rich", "tier_too_low", "Silver", "x-rich")]  # fmt: skip
    rewards = {
        (n.body["user_id"], n.body["rule"]) for n in notices if n and n.kind == "reward_earned"
    }
    assert {
        ("rich", "welcome"),
        ("rich", "streak"),
        ("rich", "follow"),
        ("loyal", "custom"),
    } <= rewards

    # a Silver raffle, gated on chain: neither holds tokens yet
    terms = {"id": "silveronly", "network": "tv", "min_tier": 1}
    assert call(d.url, "POST", "/v1/raffles?network=tv", terms)[0] == 201
    assert call(d.url, "POST", "/v1/raffles/silveronly/open?network=tv")[0] == 200
    status, body = buy(d, "loyal")
    assert (status, body["error"], body["tier_required"], body["points_needed"]) == (
        403, "tier_too_low", "Silver", 500), "Gold by points, but no token: 500 to go"  # fmt: skip

    # rich links a wallet and is paid 50 points as 500 tokens on the embedded EVM: Silver
    link(d, "rich")
    status, body = buy(d, "rich")
    assert (status, body["error"], body["points_needed"]) == (403, "tier_too_low", 500)
    # one payout of 5e20 base units: beyond msgpack's 64-bit integers, kept as a string
    pays = [{"user_id": "rich", "points": 50, "key": "tok-50", "sink": "chain"}]
    code, body = call(d.url, "POST", "/v1/payouts?network=tv", {"payouts": pays})
    assert code == 200, body
    assert {x["code"] for x in body["results"]} == {"ok"}, body
    for x in body["results"]:
        assert wait_status(d, x["id"], "settled", 90)["status"] == "settled"
    status, body = buy(d, "rich")
    assert status == 201, body
    status, body = buy(d, "loyal")
    assert status == 403, body
