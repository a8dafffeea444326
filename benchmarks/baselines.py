"""The two baselines: a plain aiohttp handler crediting chat points straight into Redis.

Both check the same signature, take the same `{"events": [...]}` bodies and apply the same
chat earning rule as Rallypoint (chat_points per message, a per-member cooldown and a daily
cap); other kinds are accepted and ignored. They answer only after their writes are done,
so for them accepted = credited.

- naive: the way typical bots do it, one awaited Redis command at a time per event
  (SET NX EX for the cooldown, HINCRBY for the daily tally, HINCRBY balance, ZINCRBY board);
- strong: the same commands, pipelined per request (three round trips per request).

Run one: `python -m benchmarks.baselines --mode naive --port P --redis-url URL --namespace NS`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import signal
import sys
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER, sign

DAY_S = 86_400
MODES = ("naive", "strong")
REDIS_CONNECTIONS = 64
"""Requests beyond this many in flight wait for a Redis connection (as a well-run bot would)."""


@dataclass(frozen=True, slots=True)
class ChatRule:
    points: int = 1
    cooldown_s: int = 30
    daily_cap: int = 100


@dataclass(frozen=True, slots=True)
class BaselineKeys:
    ns: str

    def cooldown(self, uid: str) -> str:
        return f"{self.ns}:cd:{uid}"

    def day(self, ts: float) -> str:
        return f"{self.ns}:day:{int(ts // DAY_S)}"

    @property
    def balance(self) -> str:
        """hash user_id -> points: where a credited probe appears."""
        return f"{self.ns}:bal"

    def board(self, channel: str) -> str:
        return f"{self.ns}:lb:{channel}"


class Baseline:
    def __init__(
        self, mode: str, r: aioredis.Redis, ns: str, key: str, secret: str, rule: ChatRule
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.r = r
        self.keys = BaselineKeys(ns)
        self.key = key
        self.secret = secret
        self.rule = rule

    def _authorized(self, request: web.Request, body: bytes) -> bool:
        ts = request.headers.get(TS_HEADER, "")
        if request.headers.get(KEY_HEADER) != self.key or not ts.isdigit():
            return False
        if abs(time.time() - int(ts)) > 300:
            return False
        return hmac.compare_digest(request.headers.get(SIG_HEADER, ""), sign(self.secret, ts, body))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._authorized(request, body):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            events = (json.loads(body) if self.mode == "naive" else msgspec.json.decode(body))[
                "events"
            ]
        except (ValueError, KeyError, TypeError, msgspec.DecodeError):
            return web.json_response({"error": "invalid_body"}, status=400)
        chats = [ev for ev in events if ev.get("kind") == "chat" and ev.get("user_id")]
        if self.mode == "naive":
            for ev in chats:
                await self._credit_one(ev)
        else:
            await self._credit_pipelined(chats)
        return web.json_response({"accepted": len(events)})

    async def _credit_one(self, ev: dict) -> None:
        k, rule, uid = self.keys, self.rule, ev["user_id"]
        if not await self.r.set(k.cooldown(uid), 1, nx=True, ex=rule.cooldown_s):
            return
        today = await self.r.hincrby(k.day(ev["ts"]), uid, rule.points)
        points = min(rule.points, rule.daily_cap - (today - rule.points))
        if points <= 0:
            return
        await self.r.hincrby(k.balance, uid, points)
        await self.r.zincrby(k.board(ev["channel"]), points, uid)

    async def _credit_pipelined(self, chats: list[dict]) -> None:
        k, rule = self.keys, self.rule
        if not chats:
            return
        pipe = self.r.pipeline(transaction=False)
        for ev in chats:
            pipe.set(k.cooldown(ev["user_id"]), 1, nx=True, ex=rule.cooldown_s)
        fresh = [ev for ev, ok in zip(chats, await pipe.execute(), strict=True) if ok]
        if not fresh:
            return
        for ev in fresh:
            pipe.hincrby(k.day(ev["ts"]), ev["user_id"], rule.points)
        tallies = await pipe.execute()
        for ev, today in zip(fresh, tallies, strict=True):
            points = min(rule.points, rule.daily_cap - (today - rule.points))
            if points > 0:
                pipe.hincrby(k.balance, ev["user_id"], points)
                pipe.zincrby(k.board(ev["channel"]), points, ev["user_id"])
        await pipe.execute()


def make_app(baseline: Baseline) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/events", baseline.handle)
    app.router.add_get("/readyz", lambda _: web.Response(text="ok"))
    return app


async def serve(args: argparse.Namespace) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(
        args.redis_url, max_connections=REDIS_CONNECTIONS, timeout=None
    )
    r = aioredis.Redis(connection_pool=pool)
    rule = ChatRule(args.chat_points, args.cooldown_s, args.daily_cap)
    app = make_app(Baseline(args.mode, r, args.namespace, args.key, args.secret, rule))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline {args.mode} on 127.0.0.1:{args.port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await r.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--chat-points", type=int, default=1)
    p.add_argument("--cooldown-s", type=int, default=30)
    p.add_argument("--daily-cap", type=int, default=100)
    asyncio.run(serve(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
