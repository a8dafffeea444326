"""Raffles as users drive them: admin lifecycle over signed HTTP, members buying tickets with
their tokens (many at once), the public record, its verification and Merkle proofs, and
`rally raffle verify` (exit 1 on a tampered record)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.keys import Keys
from engine.member import state_decoder
from engine.rules import RuleBook
from gateway.audit import audit
from gateway.auth import TokenSigner
from gateway.signing import request_message, sign
from tests.e2e.conftest import CONFIG, KEY, SECRET, Deployment, deploy, post, rally_cli

TOKEN_SECRET = "raffle-token-secret-0123456789abcdef"
BASE = 151
"""A member's balance after a follow: welcome 100 + follow 50 + the first day's streak 1."""


def raffle_config(tmp_path: Path, namespace: str, redis_url: str, extra: str = "") -> Path:
    """The e2e deployment's configuration with member tokens (and `extra` TOML appended)."""
    config = tmp_path / "rally.toml"
    text = CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_url,
                         key=KEY, secret=SECRET)  # fmt: skip
    text = text.replace("[clock]", f'[auth]\ntoken_secret = "{TOKEN_SECRET}"\n[clock]')
    config.write_text(text + extra)
    return config


@pytest.fixture
def dep(ray_cluster, redis_server, namespace, tmp_path) -> Iterator[Deployment]:
    with deploy(raffle_config(tmp_path, namespace, redis_server.url), redis_server.url) as d:
        yield d


def call(url: str, method: str, target: str, body: Any = None, *, headers: dict[str, str] | None = None,
         signed: bool = True) -> tuple[int, Any]:  # fmt: skip
    data = b"" if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    if signed:
        ts = str(int(time.time()))
        message = request_message(method, target, data)
        h |= {
            "X-Rally-Key": KEY,
            "X-Rally-Timestamp": ts,
            "X-Rally-Signature": sign(SECRET, ts, message),
        }
    h |= headers or {}
    req = urllib.request.Request(url + target, data=data or None, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def member(user: str, key: str) -> dict[str, str]:
    token, _ = TokenSigner(TOKEN_SECRET, 3600).issue("tv", user)
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


def fund(d: Deployment, users: list[str]) -> None:
    now = time.time()
    events = [{"kind": "follow", "id": f"f-{u}", "network": "tv", "channel": "c1", "user_id": u,
               "ts": now} for u in users]  # fmt: skip
    assert post(d.url, events)[0] == 202
    assert d.client.wait_idle(60)


def balance(d: Deployment, user: str) -> int:
    r = redis.Redis.from_url(d.gateway.redis_url)
    return state_decoder.decode(r.hget(Keys(d.settings.namespace).mstate, f"tv:{user}")).balance


def test_raffle_end_to_end(dep: Deployment, tmp_path) -> None:
    d, url = dep, dep.url
    fund(d, ["alice", "bob", "carol"])
    terms = {"id": "spring", "network": "tv", "title": "Spring", "price_points": 25,
             "max_tickets_per_member": 5, "winners": 2, "prize_points": 100}  # fmt: skip
    assert call(url, "POST", "/v1/raffles?network=tv", terms, signed=False)[0] == 401
    status, body = call(url, "POST", "/v1/raffles?network=tv", {**terms, "winners": 0})
    assert (status, body["error"], body["field"]) == (400, "invalid_body", "winners")
    status, body = call(url, "POST", "/v1/raffles?network=tv", terms)
    assert status == 201, body
    assert call(url, "POST", "/v1/raffles?network=tv", terms)[1]["error"] == "raffle_exists"
    status, body = call(url, "POST", "/v1/raffles/spring/open?network=tv")
    assert (status, body["status"]) == (200, "open")
    commitment = body["commitment"]

    buy = "/v1/raffles/spring/tickets?network=tv"
    status, body = call(
        url, "POST", buy, {"tickets": 2}, headers=member("alice", "a1"), signed=False
    )
    assert (status, body["tickets"], body["cost_points"], body["balance"]) == (
        201,
        2,
        50,
        BASE - 50,
    )
    again = call(url, "POST", buy, {"tickets": 2}, headers=member("alice", "a1"), signed=False)
    assert again == (status, body)  # a retry: the recorded answer, paid once
    status, body = call(
        url, "POST", buy, {"tickets": 3}, headers=member("alice", "a1"), signed=False
    )
    assert (status, body["error"], body["field"]) == (
        409,
        "idempotency_conflict",
        "Idempotency-Key",
    )
    status, body = call(url, "POST", buy, {"tickets": 1},
                        headers={"Authorization": member("bob", "x")["Authorization"]}, signed=False)  # fmt: skip
    assert (status, body["field"]) == (400, "Idempotency-Key")
    status, body = call(url, "POST", buy, {"tickets": 0}, headers=member("bob", "b0"), signed=False)
    assert (status, body["field"]) == (400, "tickets")
    status, body = call(url, "POST", buy, {"tickets": 1, "user_id": "carol"},
                        headers=member("bob", "b9"), signed=False)  # fmt: skip
    assert (status, body["field"]) == (403, "user_id")
    status, body = call(url, "POST", "/v1/raffles/nope/tickets?network=tv", {"tickets": 1},
                        headers=member("bob", "b8"), signed=False)  # fmt: skip
    assert (status, body["error"]) == (404, "raffle_not_found")
    # an api key buys for a member (and may say they subscribe)
    status, body = call(url, "POST", buy, {"tickets": 1, "user_id": "carol"},
                        headers={"Idempotency-Key": "c1"})  # fmt: skip
    assert status == 201, body

    # 20 concurrent purchases of one ticket by bob (5 allowed): exactly 3 more than the 2 he
    # buys first, the rest refused with ticket_limit, each paid once
    assert (
        call(url, "POST", buy, {"tickets": 2}, headers=member("bob", "b1"), signed=False)[0] == 201
    )
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: call(url, "POST", buy, {"tickets": 1},
                                               headers=member("bob", f"r{i}"), signed=False),
                                range(20)))  # fmt: skip
    codes = sorted(s for s, _ in results)
    assert codes == [201] * 3 + [409] * 17, results
    assert {b["error"] for s, b in results if s == 409} <= {"ticket_limit", "limit_reached"}
    assert balance(d, "bob") == BASE - 5 * 25
    status, body = call(
        url, "POST", buy, {"tickets": 1}, headers=member("erin", "e1"), signed=False
    )
    assert (status, body["error"], body["balance"]) == (409, "insufficient_points", 0)

    status, body = call(url, "GET", "/v1/members/bob/raffles?network=tv",
                        headers={"Authorization": member("bob", "-")["Authorization"]}, signed=False)  # fmt: skip
    assert (status, body["raffles"][0]["tickets"]) == (200, 5)
    status, _ = call(url, "GET", "/v1/members/alice/raffles?network=tv",
                     headers={"Authorization": member("bob", "-")["Authorization"]}, signed=False)  # fmt: skip
    assert status == 403

    status, body = call(url, "POST", "/v1/raffles/spring/draw?network=tv",
                        {"beacon": {"source": "admin", "value": "drand-round-1-abcdef0123"}})  # fmt: skip
    assert (status, body["error"]) == (409, "raffle_open")
    assert call(url, "POST", "/v1/raffles/spring/close?network=tv")[0] == 200
    status, body = call(
        url, "POST", "/v1/raffles/spring/draw?network=tv", {"beacon": {"value": "x"}}
    )
    assert (status, body["field"]) == (400, "beacon.source")
    status, body = call(url, "POST", "/v1/raffles/spring/draw?network=tv",
                        {"beacon": {"source": "admin", "value": "drand-round-1-abcdef0123",
                                    "ref": "drand quicknet round 1"}})  # fmt: skip
    assert status == 200, body
    winners = [w["user_id"] for w in body["winners"]]
    assert len(set(winners)) == 2

    # public: no credentials
    status, body = call(url, "GET", "/v1/raffles/spring?network=tv", signed=False)
    assert (status, body["status"], body["commitment"], body["count"]) == (
        200,
        "drawn",
        commitment,
        3,
    )
    status, body = call(url, "GET", "/v1/raffles/spring/verify?network=tv", signed=False)
    assert status == 200
    assert body["ok"], body
    assert [w["user_id"] for w in body["winners"]] == winners
    status, body = call(url, "GET", "/v1/raffles/spring/proof/bob?network=tv", signed=False)
    assert (status, body["valid"], body["leaf"]["tickets"]) == (200, True, 5)
    status, body = call(url, "GET", "/v1/raffles/spring/proof/zed?network=tv", signed=False)
    assert (status, body["error"]) == (404, "not_entered")
    for w in winners:
        paid = {"alice": 50, "bob": 125, "carol": 25}[w]
        assert balance(d, w) == BASE - paid + 100

    # rally raffle verify, from the gateway and from a saved (then tampered) record
    done = rally_cli("raffle", "verify", "spring", "--network", "tv", "--url", url,
                     "--config", str(d.config))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout
    with urllib.request.urlopen(f"{url}/v1/raffles/spring/record?network=tv") as resp:
        record = json.loads(resp.read())
    saved = tmp_path / "record.json"
    saved.write_text(json.dumps(record))
    assert rally_cli("raffle", "verify", "spring", "--file", str(saved)).returncode == 0
    record["leaves"][0]["tickets" if isinstance(record["leaves"][0], dict) else 2] += 1
    saved.write_text(json.dumps(record))
    done = rally_cli("raffle", "verify", "spring", "--file", str(saved))
    assert done.returncode == 1, done.stdout
    assert "FAIL" in done.stdout

    assert d.client.wait_idle(60)
    r = redis.Redis.from_url(d.gateway.redis_url)
    report = audit(
        r, Keys(d.settings.namespace), RuleBook.from_builtins(d.settings.rulebook().to_builtins())
    )
    assert report.ok, report.problems


def test_rally_raffle_admin_cli(dep: Deployment, tmp_path) -> None:
    d = dep
    base = ["--config", str(d.config), "--redis-url", d.gateway.redis_url, "--network", "tv"]
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"id": "cli1", "title": "From the CLI", "winners": 1}))
    done = rally_cli("raffle", "create", str(terms), *base)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "draft"
    assert rally_cli("raffle", "open", "cli1", *base).returncode == 0
    status, _ = call(d.url, "POST", "/v1/raffles/cli1/tickets?network=tv", {"tickets": 1},
                     headers=member("dora", "d1"), signed=False)  # fmt: skip
    assert status == 201
    done = rally_cli("raffle", "draw", "cli1", "--beacon", "drand-round-7-ffee", *base)
    assert done.returncode == 1
    assert "raffle_open" in done.stdout
    assert rally_cli("raffle", "close", "cli1", *base).returncode == 0
    assert rally_cli("raffle", "draw", "cli1", "--beacon", "short", *base).returncode == 2
    done = rally_cli("raffle", "draw", "cli1", "--beacon", "drand-round-7-ffee", *base)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [w["user_id"] for w in json.loads(done.stdout)["winners"]] == ["dora"]
    listed = json.loads(rally_cli("raffle", "list", *base).stdout)
    assert [x["raffle"] for x in listed] == ["cli1"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "x", "winners": 0}))
    done = rally_cli("raffle", "create", str(bad), *base)
    assert done.returncode == 2
    assert "winners" in done.stderr


def test_subscribers_get_their_luck(dep: Deployment) -> None:
    """A `sub` event makes its member a subscriber (its channel shard records it): their
    tickets weigh luck_subscriber_pct, whoever buys them."""
    d, url = dep, dep.url
    fund(d, ["sam", "nat"])
    now = time.time()
    sub = {"kind": "sub", "id": "s-sam", "network": "tv", "channel": "c1", "user_id": "sam",
           "ts": now}  # fmt: skip
    assert post(d.url, [sub])[0] == 202
    assert d.client.wait_idle(60)
    terms = {
        "id": "lucky",
        "network": "tv",
        "luck_subscriber_pct": 300,
        "max_tickets_per_member": 2,
    }
    assert call(url, "POST", "/v1/raffles?network=tv", terms)[0] == 201
    assert call(url, "POST", "/v1/raffles/lucky/open?network=tv")[0] == 200
    buy = "/v1/raffles/lucky/tickets?network=tv"
    lucks = {}
    for u in ("sam", "nat"):
        status, body = call(url, "POST", buy, {"tickets": 1}, headers=member(u, "1"), signed=False)
        assert status == 201, body
        lucks[u] = body["luck_pct"]
    assert lucks == {"sam": 300, "nat": 100}

    # tier gating: a Gold raffle refuses both, saying the tier and the points still needed
    terms = {"id": "goldonly", "network": "tv", "min_tier": 2}
    assert call(url, "POST", "/v1/raffles?network=tv", terms)[0] == 201
    assert call(url, "POST", "/v1/raffles/goldonly/open?network=tv")[0] == 200
    r = redis.Redis.from_url(d.gateway.redis_url)
    for u in ("sam", "nat"):
        status, body = call(url, "POST", "/v1/raffles/goldonly/tickets?network=tv",
                            {"tickets": 1}, headers=member(u, "g"), signed=False)  # fmt: skip
        lifetime = state_decoder.decode(
            r.hget(Keys(d.settings.namespace).mstate, f"tv:{u}")
        ).lifetime
        assert (status, body["error"], body["tier_required"]) == (403, "tier_too_low", "Gold")
        assert body["points_needed"] == 2_000 - lifetime
