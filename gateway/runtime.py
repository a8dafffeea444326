"""Bring a whole Rallypoint up and down: redis-server (unless given), Ray, the actors, the gateway."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
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
        self.ray_address = settings.ray.address
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
                address=self.ray_address or None,
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
    from gateway.app import create_app, quiet_gc

    runner = web.AppRunner(create_app(settings, redis_url), access_log=None)
    await runner.setup()
    quiet_gc()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # an asyncio Server
    return runner, sockets[0].getsockname()[1] if sockets else port


def write_runtime_file(data_dir: Path, **info: object) -> Path:
    path = Path(data_dir) / "runtime.json"
    path.write_text(json.dumps(info, indent=2))
    return path


class GatewayStartError(Exception):
    """A gateway worker process could not start listening."""


class GatewayPool:
    """`workers` gateway processes sharing host:port with SO_REUSEPORT ([server] workers): the
    kernel spreads connections over them; each has its own ingest writer and Redis clients
    (one Python process answers ~10k requests/s). Start and stop it from the main thread:
    a worker gets SIGTERM when the thread that started it dies."""

    def __init__(
        self, settings: Settings, redis_url: str, host: str, port: int, workers: int
    ) -> None:
        assert workers >= 1
        self.settings = settings
        self.redis_url = redis_url
        self.host = host
        self.port = port
        self.workers = workers
        self.procs: list[BaseProcess] = []
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process running Ray

    @classmethod
    def from_settings(cls, settings: Settings, redis_url: str) -> GatewayPool:
        """Where and how many: [server] host, port and workers."""
        server = settings.server
        return cls(settings, redis_url, server.host, server.port, server.workers)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _spawn(self, i: int) -> tuple[BaseProcess, Connection]:
        from gateway.app import serve_worker  # the worker imports the app, not Ray

        receive, send = self._ctx.Pipe(duplex=False)
        args = (self.settings, self.redis_url, self.host, self.port, send)
        proc = self._ctx.Process(target=serve_worker, args=args, name=f"rally-gateway-{i}")
        proc.start()
        send.close()
        return proc, receive

    def _await_ready(self, proc: BaseProcess, conn: Connection, timeout_s: float) -> None:
        try:
            if not conn.poll(timeout_s):
                raise GatewayStartError(
                    f"gateway worker {proc.name} not listening in {timeout_s} s"
                )
            status, detail = conn.recv()
        except EOFError:
            raise GatewayStartError(f"gateway worker {proc.name} exited while starting") from None
        finally:
            conn.close()
        if status != "ready":
            raise GatewayStartError(str(detail))

    def start(self, timeout_s: float = 60.0) -> int:
        """Start every worker and wait until each listens; returns the port (0 = a free one,
        held by a bound, never listening SO_REUSEPORT socket until the workers share it)."""
        hold: socket.socket | None = None
        if self.port == 0:
            hold = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            hold.bind((self.host, 0))
            self.port = hold.getsockname()[1]
        try:
            started = [self._spawn(i) for i in range(self.workers)]
            self.procs = [proc for proc, _ in started]
            for proc, conn in started:
                self._await_ready(proc, conn, timeout_s)
        except BaseException:
            self.stop()
            raise
        finally:
            if hold is not None:
                hold.close()
        log.info("gateway_pool_listening port=%d pids=%s", self.port, self.pids)
        return self.port

    def respawn_dead(self, timeout_s: float = 60.0) -> int:
        """Replace every worker that exited (crashed or killed); returns how many."""
        replaced = 0
        for i, proc in enumerate(self.procs):
            if proc.is_alive():
                continue
            log.warning("gateway_worker_died name=%s exitcode=%s", proc.name, proc.exitcode)
            self.procs[i], conn = self._spawn(i)
            self._await_ready(self.procs[i], conn, timeout_s)
            replaced += 1
        return replaced

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (each writes what it queued), then SIGKILL stragglers."""
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.procs = []
