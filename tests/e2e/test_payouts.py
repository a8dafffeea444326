"""Payouts as a network and its admins drive them: signed POST /v1/payouts to a real webhook
receiver, read back over HTTP, bad input named, a 410 receiver's payouts dead with the
reason, then `rally payouts list / retry / void` (the void refunds the member); wallets
linked with Sign-In with Ethereum and a chain payout minted to one (one deployment)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from actors.keys import Keys
from benchmarks.receiver import Receiver
from engine import webhook
from engine.member import state_decoder
from tests.e2e.conftest import CONFIG, KEY, SECRET, Deployment, deploy, post, rally_cli
from tests.e2e.test_raffles import call

HOOK_SECRET = webhook.new_secret(b"e2e-webhook-secret-0123")
PAYOUTS = f"""
[payouts]
min_points = 10
daily_limit_points = 120
max_attempts = 3
backoff_base_s = 0.05
backoff_max_s = 0.2
lease_s = 5.0
webhook_timeout_s = 1.0
webhook_secret = "{HOOK_SECRET}"
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(HOOK_SECRET, gone=frozenset({"gone"})).start()
    yield rec
    rec.stop()


@pytest.fixture
def dep(ray_cluster, redis_server, namespace, tmp_path) -> Iterator[Deployment]:
    config = tmp_path / "rally.toml"
    text = CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                         key=KEY, secret=SECRET)  # fmt: skip
    config.write_text(text + PAYOUTS)
    with deploy(config, redis_server.url) as d:
        yield d


def balance(d: Deployment, user: str) -> int:
    r = redis.Redis.from_url(d.gateway.redis_url)
    raw = r.hget(Keys(d.settings.namespace).mstate, f"tv:{user}")
    return int(state_decoder.decode(raw).balance) if raw else 0


def wait_status(d: Deployment, pid: str, status: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = call(d.url, "GET", f"/v1/payouts/{pid}?network=tv")
        assert code == 200, body
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_payouts_over_http_and_cli(dep: Deployment, receiver: Receiver) -> None:
    users = ["a", "b", "gone"]
    events = [{"kind": "follow", "id": f"f-{u}", "network": "tv", "channel": "c1", "user_id": u,
               "ts": time.time()} for u in users]  # fmt: skip
    assert post(dep.url, events)[0] == 202
    assert dep.client.wait_idle(60)
    start = {u: balance(dep, u) for u in users}
    assert min(start.values()) >= 100

    items = [{"user_id": u, "points": 50, "key": f"cb-{u}", "destination": receiver.url}
             for u in users]  # fmt: skip
    items.append({"user_id": "a", "points": 100, "key": "cb-a-2", "destination": receiver.url})
    items.append({"user_id": "b", "points": 5, "key": "cb-b-small", "destination": receiver.url})
    code, body = call(dep.url, "POST", "/v1/payouts?network=tv", {"payouts": items})
    assert code == 200, body
    codes = [x["code"] for x in body["results"]]
    assert codes == ["ok", "ok", "ok", "daily_limit", "below_minimum"]
    ids = {u: x["id"] for u, x in zip(users, body["results"], strict=False)}
    again = call(dep.url, "POST", "/v1/payouts?network=tv", {"payouts": items[:1]})[1]
    assert again["results"][0]["id"] == ids["a"], "the same key is the same payout"

    assert wait_status(dep, ids["a"], "settled")["status"] == "settled"
    assert wait_status(dep, ids["b"], "settled")["status"] == "settled"
    dead = wait_status(dep, ids["gone"], "dead")
    assert (dead["status"], dead["reason"]) == ("dead", "HTTP 410")
    assert set(receiver.paid) == {ids["a"], ids["b"]}
    assert balance(dep, "a") == start["a"] - 50

    # bad input names the field; unsigned is refused
    bad = call(dep.url, "POST", "/v1/payouts?network=tv",
               {"payouts": [{"user_id": "a", "points": -1, "key": "x", "destination": receiver.url}]})  # fmt: skip
    assert bad[0] == 400
    assert bad[1]["field"] == "payouts.points"
    assert call(dep.url, "GET", "/v1/payouts?network=tv", signed=False)[0] == 401
    assert (
        call(dep.url, "POST", f"/v1/payouts/{ids['a']}/void?network=tv")[1]["error"]
        == "bad_transition"
    )

    # the CLI: list the dead, retry it (dead again: 410), void it (points back)
    cfg = str(dep.config)
    out = rally_cli("payouts", "list", "--status", "dead", "--config", cfg)
    assert out.returncode == 0, out.stderr
    assert ids["gone"] in out.stdout
    assert "HTTP 410" in out.stdout
    out = rally_cli("payouts", "retry", ids["gone"], "--config", cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert wait_status(dep, ids["gone"], "dead")["attempts"] == 1, "retried: dead again (410)"
    out = rally_cli("payouts", "void", "--all-dead", "--config", cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 30
    while balance(dep, "gone") != start["gone"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert balance(dep, "gone") == start["gone"]
    assert rally_cli("payouts", "retry", "--config", cfg).returncode == 2
    listed = json.loads(rally_cli("payouts", "list", "--json", "--config", cfg).stdout)
    assert listed["counts"]["settled"] == 2
    assert listed["counts"]["voided"] == 1

    check_wallet_linking_then_a_chain_payout(dep)


def check_wallet_linking_then_a_chain_payout(dep: Deployment) -> None:
    """SIWE: link a wallet; a replay and another chain id are refused; a chain payout to it."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    acct = Account.create()
    events = [{"kind": "follow", "id": "f-w", "network": "tv", "channel": "c1", "user_id": "w",
               "ts": time.time()}]  # fmt: skip
    assert post(dep.url, events)[0] == 202
    assert dep.client.wait_idle(60)

    code, issued = call(dep.url, "POST", "/v1/members/w/wallets/nonce?network=tv")
    assert code == 200, issued
    text = issued["message"].replace("0x{address}", acct.address)
    sig = acct.sign_message(encode_defunct(text=text)).signature.hex()
    code, body = call(
        dep.url, "POST", "/v1/members/w/wallets?network=tv", {"message": text, "signature": sig}
    )
    assert code == 200, body
    assert body["wallets"] == [acct.address]
    replay = call(
        dep.url, "POST", "/v1/members/w/wallets?network=tv", {"message": text, "signature": sig}
    )
    assert (replay[0], replay[1]["error"]) == (409, "nonce_used")

    _, issued = call(dep.url, "POST", "/v1/members/w/wallets/nonce?network=tv")
    wrong = (
        issued["message"]
        .replace("0x{address}", acct.address)
        .replace("Chain ID: 31337", "Chain ID: 1")
    )
    sig = acct.sign_message(encode_defunct(text=wrong)).signature.hex()
    code, body = call(
        dep.url, "POST", "/v1/members/w/wallets?network=tv", {"message": wrong, "signature": sig}
    )
    assert (code, body["error"], body["field"]) == (400, "chain_id", "message")
    assert call(dep.url, "GET", "/v1/members/w/wallets?network=tv")[1]["wallets"] == [acct.address]

    # a chain payout to the linked wallet, minted on the embedded EVM of the payout actor
    code, body = call(dep.url, "POST", "/v1/payouts?network=tv",
                      {"payouts": [{"user_id": "w", "points": 20, "key": "tok-w", "sink": "chain"}]})  # fmt: skip
    assert code == 200, body
    assert body["results"][0]["code"] == "ok"
    assert wait_status(dep, body["results"][0]["id"], "settled", 60)["status"] == "settled"
