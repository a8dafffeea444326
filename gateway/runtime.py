"""Bring a whole Rallypoint up and down: redis-server (unless given), Ray, the actors, the gateway."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray
from aiohttp import web

from actors.client import RallyClient
from gateway.redis_server import RedisServer
from gateway.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    """Redis, Ray and the shard actors for `settings`; the gateway is served separately."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.redis: RedisServer | None = None
        self.redis_url = settings.redis.url
        self.client: RallyClient | None = None
        self._owns_ray = False

    def start(self) -> Runtime:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            self.redis = RedisServer(self.data_dir / "redis").start()
            self.redis_url = self.redis.url
        if not ray.is_initialized():
            os.environ.setdefault("RAY_DEDUP_LOGS", "0")
            ray.init(
                address=self.settings.ray.address or None,
                include_dashboard=False,
                logging_level=logging.WARNING,
                namespace=f"rally-{self.settings.namespace}",
            )
            self._owns_ray = True
        self.client = RallyClient(self.settings.runtime(self.redis_url)).start()
        return self

    def stop(self, drain_s: float = 10.0) -> None:
        """Let the actors finish what was acknowledged (up to `drain_s`), then stop."""
        if self.client is not None:
            self.client.wait_idle(drain_s)
            self.client.stop()
            self.client = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def start_gateway(
    settings: Settings, redis_url: str, host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve the gateway on host:port (0 = a free port); returns the runner and the port."""
    from gateway.app import create_app

    runner = web.AppRunner(create_app(settings, redis_url), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    server = site._server
    bound = port
    if server is not None and server.sockets:  # type: ignore[union-attr]
        bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def write_runtime_file(data_dir: Path, **info: object) -> Path:
    path = Path(data_dir) / "runtime.json"
    path.write_text(json.dumps(info, indent=2))
    return path
