"""Event webhooks end to end: members move up a tier through the real gateway, shards and
Redis; the payout actor reads the notices stream and POSTs `tier.upgraded` to a real
receiver that fails every first attempt (retried, then delivered once per id, signed) and
answers 410 for one member (dead with the reason; an admin retry dies again). Subscriptions
come from [events] and from the admin API; the ids are stable (subscription + notice id)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest

from benchmarks.receiver import Receiver
from engine import event_hooks
from tests.e2e.conftest import CONFIG, KEY, SECRET, Deployment, deploy, post
from tests.e2e.test_payouts import HOOK_SECRET, PAYOUTS
from tests.e2e.test_raffles import call


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(HOOK_SECRET, fail_pct=100, hang_pct=0, slow_pct=0,
                   gone=frozenset({"gone"})).start()  # fmt: skip
    yield rec
    rec.stop()


@pytest.fixture
def dep(ray_cluster, redis_server, namespace, tmp_path, receiver) -> Iterator[Deployment]:
    config = tmp_path / "rally.toml"
    text = CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                         key=KEY, secret=SECRET)  # fmt: skip
    events = f"""
[events]
retention_s = 600
[[events.subscriptions]]
id = "tiers"
network = "tv"
url = "{receiver.url}"
events = ["tier.upgraded"]
"""
    config.write_text(text + PAYOUTS + events)
    with deploy(config, redis_server.url) as d:
        yield d


def wait_for(check, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_tier_upgrades_are_delivered_signed_retried_and_deduped(
    dep: Deployment, receiver: Receiver
) -> None:
    # the admin API: list, add, refuse bad input and changing a configured subscription
    code, body = call(dep.url, "GET", "/v1/webhooks?network=tv")
    assert code == 200, body
    assert [s["id"] for s in body["subscriptions"]] == ["tiers"]
    bad = call(dep.url, "POST", "/v1/webhooks?network=tv", {"id": "x", "url": "ftp://no"})
    assert (bad[0], bad[1]["field"]) == (400, "url")
    bad = call(dep.url, "POST", "/v1/webhooks?network=tv",
               {"id": "x", "url": receiver.url, "events": ["nope"]})  # fmt: skip
    assert (bad[0], bad[1]["field"]) == (400, "events")
    assert call(dep.url, "DELETE", "/v1/webhooks/tiers?network=tv")[0] == 409
    code, added = call(dep.url, "POST", "/v1/webhooks?network=tv",
                       {"id": "all", "url": receiver.url + "?all=1"})  # fmt: skip
    assert code == 200, added
    assert added["events"] == list(event_hooks.EVENT_TYPES)
    assert call(dep.url, "GET", "/v1/webhooks", signed=False)[0] == 401

    users = ["a", "gone", "low"]
    events = [{"kind": "sub" if u != "low" else "follow", "id": f"s-{u}", "network": "tv",
               "channel": "c1", "user_id": u, "ts": time.time()} for u in users]  # fmt: skip
    assert post(dep.url, events)[0] == 202
    assert dep.client.wait_idle(60), "credited (the watermark flushed: tiers move)"

    def delivered() -> list[str]:
        with receiver.lock:
            return [i for i, b in receiver.bodies.items() if b["data"].get("user_id") == "a"
                    and i in receiver.paid and b["type"] == "tier.upgraded"]  # fmt: skip

    got = wait_for(lambda: len(delivered()) == 2 and delivered(), 60)
    assert got, f"not delivered: {receiver.bodies}"
    for did in got:
        body = receiver.bodies[did]
        assert body["type"] == "tier.upgraded"
        assert (body["data"]["old_tier"], body["data"]["new_tier"]) == (0, 1)
        assert receiver.deliveries[did] == 2, "the first attempt failed (500), the retry landed"

        def record(did: str = did) -> dict:
            return call(dep.url, "GET", f"/v1/webhooks/deliveries/{did}?network=tv")[1]

        # the receiver counts a delivery as it answers 200; the sender records it on reading
        # that answer, a moment later
        notice_id = wait_for(lambda: (r := record())["status"] == "delivered" and r, 30)
        assert notice_id, f"not recorded as delivered: {record()}"
        sub = notice_id["subscription"]
        assert did == event_hooks.delivery_id(sub, notice_id["notice_id"]), "stable id"
    assert receiver.bad_signatures == 0
    assert not any(b["data"].get("user_id") == "low" and b["type"] == "tier.upgraded"
                   for b in receiver.bodies.values())  # fmt: skip
    rewards = {(b["data"]["user_id"], b["data"]["rule"]) for b in receiver.bodies.values()
               if b["type"] == "reward.earned"}  # fmt: skip
    assert {("low", "welcome"), ("low", "follow"), ("a", "sub")} <= rewards, (
        "rewards other than watch and chat points reach the subscription to all events"
    )

    # 410 Gone: dead at once with the reason; an admin retry is sent again and dies again
    def dead() -> list[dict]:
        got = call(dep.url, "GET", "/v1/webhooks/deliveries?network=tv&status=dead")[1]
        return [d for d in got["deliveries"] if d["event"] == "tier.upgraded"]

    gone = wait_for(lambda: len(dead()) == 2 and dead(), 60)
    assert gone, dead()
    assert {d["reason"] for d in gone} == {"HTTP 410"}
    assert {d["body"]["data"]["user_id"] for d in gone} == {"gone"}
    did = gone[0]["id"]
    sent = receiver.deliveries[did]
    code, body = call(dep.url, "POST", f"/v1/webhooks/deliveries/{did}/retry?network=tv")
    assert (code, body["status"]) == (200, "pending"), body
    assert wait_for(lambda: receiver.deliveries[did] == sent + 1, 30)
    assert call(dep.url, "POST", f"/v1/webhooks/deliveries/{got[0]}/retry?network=tv")[0] == 409

    with urllib.request.urlopen(dep.url + "/metrics", timeout=30) as resp:
        metrics = resp.read().decode()
    assert "rally_event_webhooks_total" in metrics
    assert "rally_payouts_queued" in metrics

    assert call(dep.url, "DELETE", "/v1/webhooks/all?network=tv")[0] == 200
    subs = call(dep.url, "GET", "/v1/webhooks?network=tv")[1]["subscriptions"]
    assert [s["id"] for s in subs] == ["tiers"]
