"""A deployment driven as a user would: shards in the test's Ray, the gateway as a
`rally gateway` process (so it can be killed -9), requests over HTTP with signatures."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.client import RallyClient
from gateway.redis_server import free_port
from gateway.settings import Settings, load_settings
from gateway.signing import signed_headers


def wait_runtime_file(
    data_dir: Path, proc: subprocess.Popen[Any], timeout_s: float = 120.0
) -> dict[str, Any]:
    """The runtime.json `rally serve` writes once every gateway process listens: started with
    `--port 0` (or `port = 0`), the URL it holds is the only one no other process can have
    taken between picking a port and binding it."""
    path = Path(data_dir) / "runtime.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rally serve exited with {proc.returncode}")
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError("rally serve wrote no runtime.json")


KEY, SECRET = "e2e-key", "e2e-secret-0123456789abcdef"

CONFIG = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{redis_url}"
[shards]
channel = 2
member = 2
[clock]
watch_interval_s = 0
streak_rollover = false
[limits]
max_event_age_s = 630720000   # 20 years: traffic.py's events have fixed dates (November 2026)
[networks.tv.earn]
watch_interval_s = 300
ignore = ["botty"]
[networks.tv.channels.c1]
chat_points = 2
[[api_keys]]
key = "{key}"
secrets = ["{secret}", "previous-secret-0123456789"]
networks = ["tv"]
"""


@dataclass
class Gateway:
    config: Path
    redis_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> Gateway:
        """Start the gateway and wait for /readyz. The port was free when picked, not when
        bound: if another process took it meanwhile, start again on another port."""
        for _attempt in range(3):
            if self._start(timeout_s):
                return self
            self.port = free_port()
        raise RuntimeError("gateway found no free port in three tries")

    def _start(self, timeout_s: float) -> bool:
        cmd = [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(self.config),
               "--redis-url", self.redis_url, "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                if "address already in use" in err.lower():
                    return False
                raise RuntimeError(f"gateway exited: {err}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (
                urllib.error.URLError,
                ConnectionError,
                TimeoutError,
                http.client.HTTPException,
            ):
                time.sleep(0.1)  # not up yet, or not our gateway answering: it exits soon
        raise RuntimeError("gateway did not become ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def post(url: str, events: list[dict], *, key: str = KEY, secret: str = SECRET,
         headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, dict]:  # fmt: skip
    """POST a batch; returns (status, JSON body). Connection failures raise OSError."""
    data = body if body is not None else msgspec.json.encode({"events": events})
    h = {"Content-Type": "application/json", **signed_headers(key, secret, data), **(headers or {})}
    req = urllib.request.Request(url + "/v1/events", data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def get(
    url: str, path: str, *, key: str = KEY, secret: str = SECRET,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:  # fmt: skip
    """GET `path` signed with the API key (unless `headers` are given); (status, JSON body)."""
    h = signed_headers(key, secret, target=path) if headers is None else headers
    req = urllib.request.Request(url + path, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@dataclass
class Deployment:
    settings: Settings
    config: Path
    client: RallyClient
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.gateway.url

    def restart_gateway(self) -> None:
        self.gateway = Gateway(self.config, self.gateway.redis_url).start()


@contextlib.contextmanager
def deploy(config: Path, redis_url: str) -> Iterator[Deployment]:
    """The shards (no scheduler) and a gateway process for `config`, stopped after."""
    settings = load_settings(config, {})
    client = RallyClient(settings.runtime(redis_url)).start(scheduler=False)
    dep = Deployment(settings, config, client, Gateway(config, redis_url).start())
    try:
        yield dep
    finally:
        dep.gateway.stop()
        client.stop()


@pytest.fixture
def deployment(ray_cluster, redis_server, namespace, tmp_path) -> Iterator[Deployment]:
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                                    key=KEY, secret=SECRET))  # fmt: skip
    with deploy(config, redis_server.url) as dep:
        yield dep


def rally_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
