"""The systems under test: a Rallypoint (started here or already running) and the baselines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.redisconn import connect
from benchmarks.plan import Endpoint
from gateway.redis_server import free_port

SERVE_READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
REDIS_TIMEOUT_S = 10.0
REDIS_PATIENCE_S = 120.0


class TargetError(Exception):
    """The system under test could not be started or reached."""


WATCH_NETWORK = "watchbench"
"""The network of the watch-tick scenario in the bench's embedded settings."""


def settings_text() -> str:
    """The embedded defaults: the demo configuration (network "demo", key "demo-key"), plus
    a network whose watch ticks come every 5 s, for the watch-tick scenario."""
    from benchmarks.payouts import WEBHOOK_SECRET
    from gateway.settings import demo_settings_toml

    demo = demo_settings_toml(key_networks=("demo", WATCH_NETWORK))
    return demo + (
        f"\n[networks.{WATCH_NETWORK}.earn]   # rally bench watch-tick: one tick every 5 s\n"
        "watch_interval_s = 5\nwatch_points_live = 10\n"
        "\n[payouts]   # rally bench payouts: a quick retry schedule, the bench receiver's secret\n"
        f'webhook_secret = "{WEBHOOK_SECRET}"\nmin_points = 1\nwebhook_timeout_s = 1.0\n'
        "backoff_base_s = 0.2\nbackoff_max_s = 2.0\nlease_s = 10.0\n"
    )


@dataclass(frozen=True, slots=True)
class Config:
    """What the benchmark needs to know from a settings file."""

    network: str
    key: str
    secret: str
    watch_interval_s: int
    earn: dict[str, Any]
    max_ws_inflight_frames: int
    channel_shards: int = 2
    member_shards: int = 2
    lateness_s: float = 2.0
    watch_network: str = ""
    """The network watch-tick uses: WATCH_NETWORK when the key covers it, else `network`."""
    watch_network_interval_s: int = 300

    @classmethod
    def parse(cls, text: str) -> Config:
        raw = tomllib.loads(text)
        networks = raw.get("networks") or {"demo": {}}
        network = "demo" if "demo" in networks else next(iter(networks))
        keys = [
            k for k in raw.get("api_keys", []) if "*" in k["networks"] or network in k["networks"]
        ]
        if not keys:
            raise TargetError(f"the settings have no api key for network {network!r}")
        earn = networks.get(network, {}).get("earn", {})
        limits = raw.get("limits", {})
        watch = network
        if WATCH_NETWORK in networks and (
            "*" in keys[0]["networks"] or WATCH_NETWORK in keys[0]["networks"]
        ):
            watch = WATCH_NETWORK
        watch_earn = networks.get(watch, {}).get("earn", {})
        return cls(
            network=network,
            key=keys[0]["key"],
            secret=keys[0]["secrets"][0],
            watch_interval_s=int(earn.get("watch_interval_s", 300)),
            earn=earn,
            max_ws_inflight_frames=int(limits.get("max_ws_inflight_frames", 256)),
            channel_shards=int(raw.get("shards", {}).get("channel", 2)),
            member_shards=int(raw.get("shards", {}).get("member", 2)),
            lateness_s=float(limits.get("lateness_s", 2.0)),
            watch_network=watch,
            watch_network_interval_s=int(watch_earn.get("watch_interval_s", 300)),
        )

    def runtime(self, redis_url: str, namespace: str) -> RuntimeConfig:
        """What actors.client's flow helpers (backlog, held, flush) need to know."""
        return RuntimeConfig(
            redis_url=redis_url,
            namespace=namespace,
            channel_shards=self.channel_shards,
            member_shards=self.member_shards,
            lateness_s=self.lateness_s,
        )


@dataclass(slots=True)
class Rally:
    """A Rallypoint deployment, reached over HTTP and through its Redis."""

    url: str
    redis_url: str
    namespace: str
    pid: int | None
    config: Config
    proc: subprocess.Popen[bytes] | None = None
    gateway_pids: tuple[int, ...] = ()
    """The processes serving the port ([server] workers > 1), from runtime.json."""

    @property
    def keys(self) -> Keys:
        return Keys.of(self.namespace, self.redis_url)

    @property
    def runtime(self) -> RuntimeConfig:
        return self.config.runtime(self.redis_url, self.namespace)

    def endpoint(self) -> Endpoint:
        host, port = _host_port(self.url)
        return Endpoint(
            host, port, self.config.key, self.config.secret, self.redis_url,
            probe_hash=self.keys.mstate, probe_field_prefix=f"{self.config.network}:",
        )  # fmt: skip

    @classmethod
    def start(cls, data_dir: Path, config_text: str, log_path: Path) -> Rally:
        """`rally serve` on a free port under `data_dir`; returns once /readyz answers 200."""
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = data_dir / "rally.toml"
        config_path.write_text(config_text)
        runtime = data_dir / "runtime.json"
        runtime.unlink(missing_ok=True)
        port = free_port()
        exe = Path(sys.executable).with_name("rally")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]
        cmd += [
            "serve",
            "--config",
            str(config_path),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        env = {k: v for k, v in os.environ.items() if k != "RALLY_REDIS_URL"}
        log = log_path.open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + SERVE_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise TargetError(f"`rally serve` exited with {proc.returncode}:\n{tail}")
            if runtime.exists():
                try:
                    info = json.loads(runtime.read_text())
                except ValueError:
                    info = None
                if info and _ready(info["url"]):
                    break
            if time.time() > deadline:
                stop_process(proc)
                raise TargetError(
                    f"`rally serve` was not ready within {SERVE_READY_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.2)
        return cls(
            info["url"], info["redis_url"], info["namespace"], info.get("pid", proc.pid),
            Config.parse(config_text), proc, gateway_pids=tuple(info.get("gateway_pids", ())),
        )  # fmt: skip

    @classmethod
    def attach(cls, url: str, runtime_file: Path | None, config_text: str) -> Rally:
        """A running deployment: its runtime.json gives Redis and the namespace."""
        info: dict[str, Any] = {}
        if runtime_file is not None:
            info = json.loads(runtime_file.read_text())
        redis_url = info.get("redis_url") or os.environ.get("RALLY_REDIS_URL", "")
        if not redis_url:
            raise TargetError(
                "a running target needs --runtime FILE (runtime.json) or RALLY_REDIS_URL"
            )
        if not _ready(url):
            raise TargetError(f"{url}/readyz does not answer 200")
        return cls(url, redis_url, info.get("namespace", "rally"), info.get("pid"),
                   Config.parse(config_text), gateway_pids=tuple(info.get("gateway_pids", ())))  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def client(self) -> PatientRedis:
        return PatientRedis(connect(self.redis_url, socket_timeout=REDIS_TIMEOUT_S))


class PatientRedis:
    """The bench's own Redis client: a target whose Redis is busy (a long script, a timeout)
    is waited for, up to `patience_s`, instead of failing the measurement."""

    def __init__(self, client: redis.Redis, patience_s: float = REDIS_PATIENCE_S) -> None:
        self.client = client
        self.patience_s = patience_s

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.time() + self.patience_s
        while True:
            try:
                return fn(*args, **kwargs)
            except (redis.TimeoutError, redis.ConnectionError, redis.BusyLoadingError):
                pass
            except redis.ResponseError as err:
                if not str(err).startswith("BUSY"):
                    raise
            if time.time() > deadline:
                raise TargetError(f"Redis at {self.client} stayed busy for {self.patience_s:.0f} s")
            time.sleep(0.25)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self.call(attr, *args, **kwargs)


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host, int(port)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/readyz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL of its process group if it will not stop."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def gateway_settings_text(
    config: Config, namespace: str, *, max_lag_events: int, max_lag_s: float
) -> str:
    """Settings of one more gateway of a running deployment (its namespace, partitions and
    api key) that sheds load at its own [limits] lag bounds: `rally bench overload`."""
    return f"""\
# Written by `rally bench overload`: a second gateway of the deployment under test.
namespace = {json.dumps(namespace)}

[shards]
channel = {config.channel_shards}
member = {config.member_shards}

[limits]
max_lag_events = {max_lag_events}
max_lag_s = {max_lag_s!r}
max_ws_inflight_frames = {config.max_ws_inflight_frames}

[[api_keys]]
key = {json.dumps(config.key)}
secrets = [{json.dumps(config.secret)}]
networks = ["*"]
"""


@dataclass(slots=True)
class ExtraGateway:
    """`rally gateway` as its own process against the deployment's Redis."""

    url: str
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls, redis_url: str, config_text: str, data_dir: Path, log_path: Path
    ) -> ExtraGateway:
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = data_dir / "gateway.toml"
        config_path.write_text(config_text)
        port = free_port()
        exe = Path(sys.executable).with_name("rally")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]
        cmd += ["gateway", "--config", str(config_path), "--redis-url", redis_url,
                "--port", str(port), "--data-dir", str(data_dir)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "RALLY_REDIS_URL"}
        log = log_path.open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + SERVE_READY_TIMEOUT_S
        while not _answers(url + "/healthz"):
            if proc.poll() is not None or time.time() > deadline:
                stop_process(proc)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise TargetError(f"`rally gateway` did not start:\n{tail}")
            time.sleep(0.1)
        return cls(url, proc)

    def endpoint(self, like: Endpoint) -> Endpoint:
        """`like` (the deployment's endpoint), sent to this gateway instead."""
        host, port = _host_port(self.url)
        return replace(like, host=host, port=port)

    def metrics(self) -> dict[str, float]:
        """Its /metrics samples, keyed `name` or `name{label=value,...}`; {} if it is gone."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def stop(self) -> None:
        stop_process(self.proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(slots=True)
class BaselineServer:
    """One baseline (naive or strong) as its own process against the same redis-server."""

    mode: str
    port: int
    namespace: str
    redis_url: str
    config: Config
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, mode: str, rally: Rally, log_path: Path) -> BaselineServer:
        port = free_port()
        ns = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
        cfg, earn = rally.config, rally.config.earn
        cmd = [
            sys.executable, "-m", "benchmarks.baselines", "--mode", mode, "--port", str(port),
            "--redis-url", rally.redis_url, "--namespace", ns, "--key", cfg.key,
            "--secret", cfg.secret, "--chat-points", str(earn.get("chat_points", 1)),
            "--cooldown-s", str(earn.get("chat_cooldown_s", 30)),
            "--daily-cap", str(earn.get("chat_daily_cap", 100)),
        ]  # fmt: skip
        log = log_path.open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not _ready(f"http://127.0.0.1:{port}"):
            if proc.poll() is not None or time.time() > deadline:
                stop_process(proc)
                raise TargetError(f"baseline {mode} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        return cls(mode, port, ns, rally.redis_url, cfg, proc)

    def endpoint(self) -> Endpoint:
        return Endpoint(
            "127.0.0.1", self.port, self.config.key, self.config.secret, self.redis_url,
            probe_hash=f"{self.namespace}:bal",
        )  # fmt: skip

    def stop(self, r: redis.Redis | None = None) -> None:
        """Stop the process; then, best effort, leave the shared Redis as we found it."""
        stop_process(self.proc, 10)
        if r is None:
            return
        with contextlib.suppress(redis.RedisError):
            for k in r.scan_iter(match=f"{self.namespace}:*", count=1_000):
                r.unlink(k)


def read_counters(r: PatientRedis, keys: Keys) -> dict[str, int]:
    raw = r.hgetall(keys.stats)
    return {k.decode(): int(float(v)) for k, v in raw.items()}


def read_latency(r: PatientRedis, keys: Keys) -> dict[str, float]:
    raw = r.hgetall(keys.latency)
    return {k.decode(): float(v) for k, v in raw.items()}


def redis_memory(r: PatientRedis) -> int:
    return int(r.info("memory")["used_memory"])
