"""The payouts scenario: --payouts payouts (default 5,000) in one promotional event.

1. chain: the token deployed on the embedded EVM (eth-tester, in this process) and, when
   chain/contracts/node_modules holds anvil, on a real node started here; the payouts are
   minted with `mintBatch` in batches of --payout-batch (the chain sink's batch ids).
   Reported: seconds, payouts/s, gas per payout.
2. webhook: --payouts cashback payouts of 1 point each (members seeded with points first)
   through the running deployment's payout actor to a local receiver
   (benchmarks/receiver.py) that fails 10 % of first attempts (HTTP 500), holds 3 % past
   the sender's timeout and answers 10 % slowly, deduping by webhook-id. Reported: time
   until every payout settled, payouts/s, deliveries, none paid twice.
3. events: a subscription (added as an admin's would be) to `raffle.drawn`, then --payouts
   `raffle_drawn` notices appended to the notices stream; the payout actor delivers them as
   event webhooks to the same failing receiver. Reported: time until every one was
   delivered, events/s, deliveries, none lost.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from eth_account import Account

from actors.event_hooks import HookStore
from actors.payout import PayoutStore
from benchmarks.bench import Bench, post_events, wait_drained, wait_until
from benchmarks.receiver import Receiver
from chain.client import TokenClient, batch_id, embedded_web3, rpc_web3
from engine.event_hooks import Subscription
from engine.member import state_decoder
from engine.payout import PayoutRules, Request
from gateway.redis_server import free_port

ANVIL = (
    Path(__file__).resolve().parents[1] / "chain" / "contracts" / "node_modules" / ".bin" / "anvil"
)
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
WEBHOOK_SECRET = "whsec_cmFsbHktYmVuY2gtd2ViaG9vay1zZWNyZXQ="
"""The bench deployment's [payouts] webhook_secret (benchmarks/target.py settings_text)."""
TOKEN = 10**18


def _mint_all(tok: TokenClient, n: int, batch: int) -> dict[str, Any]:
    to = [Account.create().address for _ in range(min(n, 1_000))]
    t0 = time.perf_counter()
    gas = 0
    for lo in range(0, n, batch):
        ids = [f"bench-{lo + i}" for i in range(min(batch, n - lo))]
        minted = tok.mint_batch(batch_id(ids), [to[(lo + i) % len(to)] for i in range(len(ids))],
                                [TOKEN] * len(ids))  # fmt: skip
        gas += minted.gas_used
    s = time.perf_counter() - t0
    return {"payouts": n, "batch": batch, "seconds": round(s, 2),
            "payouts_per_s": round(n / s, 1), "gas_per_payout": gas // n}  # fmt: skip


def _anvil() -> tuple[subprocess.Popen[bytes], str] | None:
    if not ANVIL.exists():
        return None
    port = free_port()
    proc = subprocess.Popen([str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                                         headers={"content-type": "application/json"})  # fmt: skip
            urllib.request.urlopen(req, timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def _webhooks(b: Bench, n: int) -> dict[str, Any]:
    net = b.rally.config.network
    users = [f"payee-{b.token}-{i}" for i in range(500)]
    now = time.time()
    post_events(b, [{"kind": "custom", "id": f"pseed-{b.token}-{i}", "network": net,
                     "channel": "payout-seed", "user_id": u, "ts": now, "points": 100_000}
                    for i, u in enumerate(users)])  # fmt: skip
    wait_drained(b)
    fields = [f"{net}:{u}" for u in users]

    def seeded() -> bool:  # the counters can settle while member shards still hold credits
        b.release_held()
        got = b.r.hmget(b.rally.keys.mstate, fields)
        return all(raw is not None and state_decoder.decode(raw).balance >= 100_000 for raw in got)

    if wait_until(seeded, timeout_s=60.0, every_s=0.1) is None:
        raise RuntimeError("the payees' seed points were not credited within 60 s")
    rec = Receiver(WEBHOOK_SECRET, hang_s=2.0).start()
    try:
        store = PayoutStore(
            b.r.client, b.rally.keys, PayoutRules(min_points=1, daily_limit_points=0)
        )
        reqs = [Request(network=net, user_id=users[i % len(users)], points=1,
                        key=f"bench-{b.token}-{i}", destination=rec.url) for i in range(n)]  # fmt: skip
        t0 = time.perf_counter()
        out = store.create(reqs, time.time())
        ids = {p.id for _, p in out if p is not None}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            c = store.counts()
            if c.get("settled", 0) + c.get("dead", 0) + c.get("voided", 0) >= len(ids):
                break
            time.sleep(0.2)
        s = time.perf_counter() - t0
        counts = store.counts()
        return {
            "payouts": n, "seconds": round(s, 2), "payouts_per_s": round(n / s, 1),
            "settled": counts.get("settled", 0), "dead": counts.get("dead", 0),
            "deliveries": sum(rec.deliveries.values()), "paid_once": len(rec.paid),
            "lost": len(ids - set(rec.paid)), "bad_signatures": rec.bad_signatures,
        }  # fmt: skip
    finally:
        rec.stop()


def _events(b: Bench, n: int) -> dict[str, Any]:
    net = b.rally.config.network
    r = b.r.client
    rec = Receiver(WEBHOOK_SECRET, hang_s=2.0).start()
    hooks = HookStore(r, b.rally.keys, [], 3_600)
    sub = Subscription(id=f"bench-{b.token}", network=net, url=rec.url, events=("raffle.drawn",))
    try:
        hooks.subscribe(sub)
        time.sleep(1.5)  # the actor reads the subscriptions about every second
        start = int(hooks.counts().get("delivered", 0)) + int(hooks.counts().get("dead", 0))
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            body = {
                "network": net,
                "raffle": f"bench-{b.token}-{i}",
                "winners": [],
                "ts": time.time(),
            }
            pipe.xadd(b.rally.keys.notices, {"raffle_drawn": msgspec.json.encode(body)})
        pipe.execute()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            c = hooks.counts()
            if int(c.get("delivered", 0)) + int(c.get("dead", 0)) - start >= n:
                break
            time.sleep(0.2)
        s = time.perf_counter() - t0
        with rec.lock:
            got = len(rec.paid)
        return {"events": n, "seconds": round(s, 2), "events_per_s": round(n / s, 1),
                "deliveries": sum(rec.deliveries.values()), "delivered_once": got,
                "lost": n - got, "bad_signatures": rec.bad_signatures}  # fmt: skip
    finally:
        hooks.unsubscribe(sub.id)
        rec.stop()


def payouts(b: Bench) -> dict[str, Any]:
    o = b.opts
    n, batch = o.payouts, o.payout_batch
    b.show(["payouts", f"{n:,} payouts, mintBatch of {batch}", *[""] * 8])
    w3, signer = embedded_web3()
    embedded = TokenClient.deploy(w3, signer, estimate=False)  # as the chain sink runs it
    summary: dict[str, Any] = {"embedded": _mint_all(embedded, n, batch)}
    node = _anvil()
    if node is not None:
        proc, url = node
        try:
            w3, signer = rpc_web3(url, ANVIL_KEY)
            summary["anvil"] = _mint_all(TokenClient.deploy(w3, signer), n, batch)
        finally:
            proc.terminate()
            proc.wait(10)
    summary["webhook"] = _webhooks(b, n)
    summary["events"] = _events(b, n)
    e, wh = summary["embedded"], summary["webhook"]
    note = (f"{n:,} chain payouts, mintBatch of {batch}: embedded EVM {e['seconds']} s "
            f"({e['gas_per_payout']:,} gas/payout)")  # fmt: skip
    if "anvil" in summary:
        note += f"; anvil {summary['anvil']['seconds']} s"
    note += (f"; webhooks with a failing receiver: {wh['payouts_per_s']}/s, {wh['deliveries']:,} "
             f"deliveries, {wh['lost']} lost, {wh['paid_once']:,} paid once")  # fmt: skip
    ev = summary["events"]
    note += (f"; event webhooks (raffle.drawn), same receiver: {ev['events_per_s']}/s, "
             f"{ev['deliveries']:,} deliveries, {ev['lost']} lost")  # fmt: skip
    b.console.print(note)
    return {"status": "ok", "runs": [], "summary": summary, "lines": [note]}
