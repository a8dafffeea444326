"""Shared helpers of the gateway tests: settings, a served app, signed requests, events."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import redis
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient, TestServer

from actors.keys import Keys
from engine.events import Event, decode_events
from gateway.app import create_app
from gateway.settings import Settings, settings_from_dict
from gateway.signing import signed_headers, ws_handshake

SECRET = "current-secret-0123456789abcdef"
OLD_SECRET = "previous-secret-0123456789abcdef"
ADMIN_SECRET = "admin-secret-0123456789abcdef"
SHARDS = 2
DATA_DIR = Path(tempfile.mkdtemp(prefix="rally-gateway-tests-"))
"""[server] data_dir of these tests (the vouchers' signing key, the ledger archive): not the
default `.rally` of the checkout, which `rally serve` and `rally audit` would then find."""
atexit.register(shutil.rmtree, DATA_DIR, True)
HISTORIC_AGE_S = 20 * 365 * 86_400.0
"""[limits] max_event_age_s of these tests: their fixed timestamps (November 2023, see `chat`)
stay inside the event-time window."""


def make_settings(namespace: str, auth: dict[str, Any] | None = None, **limits: Any) -> Settings:
    raw: dict[str, Any] = {
        "auth": auth or {},
        "namespace": namespace,
        "data_dir": str(DATA_DIR),
        "shards": {"channel": SHARDS, "member": 2},
        "limits": {"coalesce_window_ms": 2, "max_event_age_s": HISTORIC_AGE_S, **limits},
        "networks": {
            "demo": {
                "earn": {"chat_points": 2},
                "channels": {"big": {"chat_points": 3}, "vip": {"min_tier": "Diamond"}},
            },
            "other": {},
        },
        "api_keys": [
            {"key": "k1", "secrets": [SECRET, OLD_SECRET], "networks": ["demo"]},
            {"key": "admin", "secrets": [ADMIN_SECRET], "networks": ["*"]},
        ],
    }
    return settings_from_dict(raw, {})


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, redis_url: str, clock: Callable[[], float] = time.time
) -> AsyncIterator[TestClient]:
    app = create_app(settings, redis_url, clock=clock)
    async with TestClient(TestServer(app)) as client:
        yield client


def chat(i: int | str, channel: str = "c1", network: str = "demo", **extra: Any) -> dict[str, Any]:
    ev = {
        "kind": "chat",
        "id": f"e{i}",
        "network": network,
        "channel": channel,
        "ts": 1_700_000_000 + (i if isinstance(i, int) else 0),
        "user_id": f"u{i}",
        "user_name": f"User {i}",
        "text": "hi",
    }
    ev.update(extra)
    return ev


def body_of(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def signed(body: bytes, key: str = "k1", secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {**signed_headers(key, secret, body), "Content-Type": "application/json", **extra}


def signed_get(
    target: str, key: str = "k1", secret: str = SECRET, now: float | None = None
) -> dict[str, str]:
    """The auth headers of a read of `target` (path and query string, as sent)."""
    return signed_headers(key, secret, target=target, now=now)


async def get(
    client: TestClient, target: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any]:
    """GET `target`, signed with an API key (`key`, `secret`, `now`) unless `headers` are given."""
    async with client.get(
        target, headers=signed_get(target, **kw) if headers is None else headers
    ) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def ws_connect(
    client: TestClient, key: str = "k1", secret: str = SECRET
) -> ClientWebSocketResponse:
    """A WebSocket to /v1/stream, opened with a fresh signed single-use handshake."""
    target, headers = ws_handshake(key, secret)
    return await client.ws_connect(target, headers=headers)


async def post(client: TestClient, obj: object, **kw: Any) -> tuple[int, Any]:
    body = obj if isinstance(obj, bytes) else body_of(obj)
    headers = kw.pop("headers") if "headers" in kw else signed(body, **kw)
    async with client.post("/v1/events", data=body, headers=headers) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


def event_entries(r: redis.Redis, namespace: str, p: int) -> list[dict[bytes, bytes]]:
    """The entries of ingest:{p} that carry events (not the event-time frontier marks)."""
    return [f for _, f in r.xrange(Keys(namespace).ingest(p)) if b"e" in f]


def stream_entries(r: redis.Redis, namespace: str, shards: int = SHARDS) -> dict[int, list[Event]]:
    """Events in each ingest stream, one list per partition, in stream order."""
    return {
        p: [ev for f in event_entries(r, namespace, p) for ev in decode_events(f[b"e"])]
        for p in range(shards)
    }


def stream_lengths(r: redis.Redis, namespace: str, shards: int = SHARDS) -> list[int]:
    """Entries carrying events in each ingest stream."""
    return [len(event_entries(r, namespace, p)) for p in range(shards)]
