"""Vouchers through two `rally gateway` processes sharing one deployment: many concurrent
scans of the same codes, sent to both processes at once, redeem each code exactly once; both
processes verify with the one signing key generated under data_dir; `rally audit` passes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from actors.keys import Keys
from engine.member import state_decoder
from gateway.signing import signed_headers
from tests.e2e.conftest import KEY, SECRET, Deployment, Gateway, rally_cli

NET = "tv"


def call(url: str, method: str, target: str, body: object = None) -> tuple[int, dict[str, Any]]:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json",
               **signed_headers(KEY, SECRET, data, target=target, method=method)}  # fmt: skip
    req = urllib.request.Request(url + target, data=data or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def pid_of(url: str) -> int:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        return int(json.loads(resp.read())["pid"])


def test_scans_race_through_two_gateway_processes(deployment: Deployment) -> None:
    second = Gateway(deployment.config, deployment.gateway.redis_url).start()
    try:
        urls = [deployment.url, second.url]
        assert pid_of(urls[0]) != pid_of(urls[1])
        status, minted = call(urls[0], "POST", f"/v1/vouchers/batches?network={NET}",
                              {"count": 2, "points": 40, "expires_in_s": 3600, "batch": "e2e"})  # fmt: skip
        assert status == 201, minted
        codes = minted["codes"]
        scans = [
            (urls[i % 2], f"/v1/members/{user}/vouchers?network={NET}", {"code": code})
            for i, (user, code) in enumerate(
                [(f"v{i}", codes[0]) for i in range(30)] + [("solo", codes[1])] * 30
            )
        ]
        with ThreadPoolExecutor(max_workers=30) as pool:
            results = list(pool.map(lambda s: call(s[0], "POST", s[1], s[2]), scans))
        for code_results in (results[:30], results[30:]):
            assert sum(1 for status, _ in code_results if status == 200) == 1, code_results
            refused = {(s, b["error"]) for s, b in code_results if s != 200}
            assert refused <= {(409, "voucher_used"), (409, "voucher_pending")}, refused
        # the second process verifies codes the first one minted (one key under data_dir)
        status, body = call(urls[1], "POST", f"/v1/members/late/vouchers?network={NET}",
                            {"code": codes[0]})  # fmt: skip
        assert (status, body["error"]) == (409, "voucher_used")
        status, body = call(urls[1], "GET", f"/v1/vouchers/attempts?network={NET}&limit=500")
        assert status == 200
        outcomes = [a["outcome"] for a in body["attempts"]]
        assert len(outcomes) == 61
        assert outcomes.count("redeemed") == 2
        status, body = call(urls[0], "GET", f"/v1/vouchers/batches?network={NET}")
        assert [(b["id"], b["redeemed"]) for b in body["batches"]] == [("e2e", 2)]
    finally:
        second.stop()
    done = rally_cli("audit", "--config", str(deployment.config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit passed" in done.stdout


def test_kill9_of_a_gateway_mid_scans_loses_and_doubles_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Gateway A is killed -9 while 40 members scan their codes through it: every code it
    claimed is finished exactly once by gateway B's sweeper; the others scan again through B;
    each member ends with the code's points once and `rally audit` passes."""
    config = tmp_path / "fast-sweep.toml"
    config.write_text(
        deployment.config.read_text()
        + "\n[vouchers]\nresume_after_s = 1.0\nsweep_interval_s = 0.2\n"
    )
    deployment.gateway.stop()
    a = Gateway(config, deployment.gateway.redis_url).start()
    b = Gateway(config, deployment.gateway.redis_url).start()
    r = redis.Redis.from_url(deployment.gateway.redis_url)
    keys = Keys(deployment.settings.namespace)
    try:
        status, minted = call(b.url, "POST", f"/v1/vouchers/batches?network={NET}",
                              {"count": 40, "points": 70, "expires_in_s": 3600, "batch": "k9"})  # fmt: skip
        assert status == 201, minted
        codes = minted["codes"]
        users = [f"k{i}" for i in range(40)]

        def scan_a(i: int) -> int:
            try:
                return call(a.url, "POST", f"/v1/members/{users[i]}/vouchers?network={NET}",
                            {"code": codes[i]})[0]  # fmt: skip
            except OSError:
                return -1

        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(scan_a, i) for i in range(40)]
            while sum(f.done() for f in futures) < 5:
                time.sleep(0.005)
            a.kill9()
            answered = [f.result() for f in futures]
        assert answered.count(200) >= 5
        deadline = time.monotonic() + 60
        while r.zcard(keys.voucher_pending) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not r.zcard(keys.voucher_pending), "B's sweeper finished every pending claim"
        claimed = {int(s) for s in r.hkeys(keys.voucher_claims(NET, "k9"))}
        _, page = call(b.url, "GET", f"/v1/vouchers/attempts?network={NET}&limit=500")
        swept = sum(1 for x in page["attempts"] if x["by"] == "sweeper")
        print(f"kill -9: {answered.count(200)} answered, {len(claimed)} claimed, {swept} swept")
        for i in range(40):  # members whose scan never got a claim scan again through B
            status, body = call(b.url, "POST", f"/v1/members/{users[i]}/vouchers?network={NET}",
                                {"code": codes[i]})  # fmt: skip
            assert status == (409 if i in claimed else 200), (i, body)
        assert deployment.client.wait_idle(60)
        for u in users:
            raw = r.hget(keys.mstate, f"{NET}:{u}")
            assert raw is not None
            assert state_decoder.decode(raw).balance == 70, u
        assert len(r.hkeys(keys.voucher_claims(NET, "k9"))) == 40
        assert int(r.hget(keys.voucher_redeemed(NET), "k9")) == 40
    finally:
        a.stop()
        b.stop()
        deployment.gateway = b
    done = rally_cli("audit", "--config", str(deployment.config))
    assert done.returncode == 0, done.stdout + done.stderr
