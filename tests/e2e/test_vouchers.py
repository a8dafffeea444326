"""Vouchers through two `rally gateway` processes sharing one deployment: many concurrent
scans of the same codes, sent to both processes at once, redeem each code exactly once; both
processes verify with the one signing key generated under data_dir; `rally audit` passes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
