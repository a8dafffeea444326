"""A real local webhook receiver (aiohttp, in a thread) that misbehaves on purpose.

It verifies each delivery's Standard Webhooks signature, dedupes by webhook-id and counts:
`paid` holds each id paid once (what a merchant's ledger would hold; an event webhook "pays"
0), `deliveries` every POST that reached it, `bodies` the first body of each id. By the payout id's hash it fails the first attempt (HTTP 500), times
out the first attempt (answers after `hang_s`), answers slowly (`slow_s`), and answers
410 Gone for the user ids in `gone`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter

from aiohttp import web

from engine import webhook


def _bucket(msg_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(msg_id.encode(), digest_size=4).digest(), "big") % 100


class Receiver:
    def __init__(
        self,
        secret: str,
        *,
        fail_pct: int = 10,
        hang_pct: int = 3,
        slow_pct: int = 10,
        hang_s: float = 3.0,
        slow_s: float = 0.2,
        gone: frozenset[str] = frozenset(),
    ) -> None:
        self.secret = secret
        self.fail_pct, self.hang_pct, self.slow_pct = fail_pct, hang_pct, slow_pct
        self.hang_s, self.slow_s = hang_s, slow_s
        self.gone = gone
        self.paid: dict[str, int] = {}
        self.deliveries: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, object]] = {}
        """The first verified body of each webhook-id (event webhooks: type and data)."""
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = webhook.verify(self.secret, request.headers, body, time.time())
        except webhook.WebhookError:
            with self.lock:
                self.bad_signatures += 1
            return web.Response(status=401)
        payload = json.loads(body)
        data = payload["data"]
        with self.lock:
            self.bodies.setdefault(msg_id, payload)
            self.deliveries[msg_id] += 1
            n = self.deliveries[msg_id]
        b = _bucket(msg_id)
        if data.get("user_id") in self.gone:
            return web.Response(status=410)
        if n == 1 and b < self.fail_pct:
            return web.Response(status=500)
        if n == 1 and b >= 100 - self.hang_pct:
            await asyncio.sleep(self.hang_s)  # the sender gives up first, then retries:
            with self.lock:  # the receiver did pay, and dedupes the retry by its id
                self.paid.setdefault(msg_id, data.get("amount", 0))
            return web.Response(status=200)
        if self.fail_pct <= b < self.fail_pct + self.slow_pct:
            await asyncio.sleep(self.slow_s)
        with self.lock:
            self.paid.setdefault(msg_id, data.get("amount", 0))
        return web.Response(status=204)
