"""The spend scenario: spend latency while the pipeline credits a steady load.

--spend-members members first earn a large balance (custom events). Then the load
generators offer --spend-credit-rate events/s (the usual chat + presence mix) for
--duration seconds, and, from the second second on, a spender in this process submits
--spend-rate transfers/s (1 point each to the store account, each with its own key)
through actors.spend.SpendClient, as a gateway does: appended to the member shard's
stream, answered once the shard's commit made the debit durable. Latency is measured per
spend from submission to result; the summary gives p50/p99/max, what applied, and the
rate achieved. Spends are paced open loop (a slow answer does not slow the offer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from actors.redisconn import connect_async
from actors.spend import SpendClient
from benchmarks.bench import Bench, post_events, wait_drained
from benchmarks.plan import Phase
from engine.spend import OK, Transfer

SEED_POINTS = 1_000_000
START_AFTER_S = 1.0
MAX_INFLIGHT = 5_000
MAX_CONNECTIONS = 64
"""The spender's Redis connections (a blocking pool: a submission waits for one)."""


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class Spender:
    """Submits `rate` transfers/s for `duration_s` from its own thread and event loop."""

    def __init__(self, b: Bench, users: list[str], rate: float, duration_s: float) -> None:
        self.b = b
        self.users = users
        self.rate = rate
        self.duration_s = duration_s
        self.latencies_ms: list[float] = []
        self.codes: dict[str, int] = {}
        self.errors = 0
        self.first_error: str | None = None
        self.sent = 0
        self.elapsed_s = 0.0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)

    async def _one(self, client: SpendClient, t: Transfer, sem: asyncio.Semaphore) -> None:
        t0 = time.perf_counter()
        try:
            result = await client.submit(t)
        except Exception as err:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{type(err).__name__}: {err}"
        else:
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            self.codes[result.code] = self.codes.get(result.code, 0) + 1
        finally:
            sem.release()

    async def _run(self) -> None:
        rally = self.b.rally
        r = connect_async(rally.redis_url, max_connections=MAX_CONNECTIONS, pool_timeout=60)
        client = SpendClient(r, rally.keys, rally.config.member_shards, timeout_s=60)
        net = rally.config.network
        sem = asyncio.Semaphore(MAX_INFLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        n = int(self.rate * self.duration_s)
        token = self.b.token
        for i in range(n):
            due = start + i / self.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await sem.acquire()
            user = self.users[i % len(self.users)]
            t = Transfer(f"bench-{token}-{i}", net, user, 1, "debit", f"store:{net}",
                         "store_redeem")  # fmt: skip
            task = asyncio.create_task(self._one(client, t, sem))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
        self.elapsed_s = time.perf_counter() - start
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        with contextlib.suppress(TimeoutError):  # never hold the scenario on a stuck socket
            await asyncio.wait_for(r.aclose(), 5.0)


def spend(b: Bench) -> dict[str, Any]:
    """--spend-rate spends/s while --spend-credit-rate events/s are credited."""
    o = b.opts
    net = b.rally.config.network
    users = [f"spender-{b.token}-{i}" for i in range(o.spend_members)]
    now = time.time()
    for lo in range(0, len(users), 5_000):
        post_events(b, [
            {"kind": "custom", "id": f"seed-{b.token}-{i}", "network": net, "channel": "spend-seed",
             "user_id": u, "ts": now, "points": SEED_POINTS}
            for i, u in enumerate(users[lo : lo + 5_000], start=lo)
        ])  # fmt: skip
    wait_drained(b)
    spend_s = max(1.0, o.duration_s - START_AFTER_S)
    spender = Spender(b, users, o.spend_rate, spend_s)

    def watch(t: float, point: dict[str, Any]) -> dict[str, Any] | None:
        if t >= START_AFTER_S and not spender.thread.is_alive() and not spender.sent:
            spender.start()
        return {
            "t": round(t, 2),
            "spends_sent": spender.sent,
            "spends_done": len(spender.latencies_ms),
        }

    run = b.run_load("spend", f"rally credits {o.spend_credit_rate:,.0f}/s + spends", "rally",
                     (Phase(o.duration_s, o.spend_credit_rate),), batch=o.batch,
                     on_sample=watch)  # fmt: skip
    if not spender.sent and not spender.thread.is_alive():
        spender.start()
    spender.join(spend_s + 30)
    lat = spender.latencies_ms
    summary: dict[str, Any] = {
        "spend_rate_target": o.spend_rate,
        "spend_rate_achieved": round(spender.sent / spender.elapsed_s, 1)
        if spender.elapsed_s
        else 0,
        "spends": spender.sent,
        "spends_ok": spender.codes.get(OK, 0),
        "spend_codes": spender.codes,
        "spend_errors": spender.errors,
        "spend_first_error": spender.first_error,
        "spend_latency_ms_p50": _round(_percentile(lat, 0.50)),
        "spend_latency_ms_p99": _round(_percentile(lat, 0.99)),
        "spend_latency_ms_max": _round(max(lat, default=None)),
        "credit_rate_target": o.spend_credit_rate,
        "credited_eps": run["credited_eps"],
        "ingest_to_credit_p99_ms": (run["latency_ingest_to_credit_ms"] or {}).get("p99"),
    }
    run["spend_latency_ms"] = {"p50": summary["spend_latency_ms_p50"],
                               "p99": summary["spend_latency_ms_p99"],
                               "max": summary["spend_latency_ms_max"]}  # fmt: skip
    line = (
        f"spends {summary['spend_rate_achieved']:,}/s (target {o.spend_rate:,.0f}) while "
        f"crediting {run['credited_eps'] or 0:,.0f} events/s: spend latency "
        f"p50 {summary['spend_latency_ms_p50']} ms, p99 {summary['spend_latency_ms_p99']} ms, "
        f"max {summary['spend_latency_ms_max']} ms; {summary['spends_ok']:,} applied, "
        f"{spender.errors} errors"
    )
    return {"status": "ok", "runs": [run], "summary": summary, "lines": [line]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
