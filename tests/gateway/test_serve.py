"""[server] workers: `rally gateway` runs that many processes on one port (SO_REUSEPORT),
each answering; a worker that dies is replaced; SIGTERM stops every one of them after they
wrote what they accepted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from gateway.redis_server import RedisServer, running
from gateway.signing import signed_headers

from .helpers import SECRET, body_of, chat, stream_entries

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
CONNECTIONS = 200
"""New connections tried until both workers have answered (the kernel hashes each one)."""


def _post(url: str, body: bytes) -> tuple[int, object]:
    headers = {**signed_headers("k1", SECRET, body), "Content-Type": "application/json"}
    req = urllib.request.Request(url + "/v1/events", body, headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def _pid_of(url: str) -> int:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:  # a new connection
        return int(json.loads(resp.read())["pid"])


def _wait_for_runtime(proc: subprocess.Popen[bytes], runtime_file: Path) -> dict[str, Any]:
    """runtime.json, once `rally gateway` has written it (after every worker listens)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return dict(json.loads(runtime_file.read_text()))
        except (OSError, ValueError):
            assert proc.poll() is None, "rally gateway exited"
            assert time.monotonic() < deadline, "rally gateway did not start"
            time.sleep(0.05)


def test_two_workers_share_the_port_and_sigterm_stops_all(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(
        f'namespace = "{namespace}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "[server]\nport = 0\nworkers = 2\n"  # port 0: the pool holds a free port for both
        "[limits]\nmax_event_age_s = 630720000.0\n"  # chat()'s fixed timestamps
        "[networks.demo]\n"
        f'[[api_keys]]\nkey = "k1"\nsecrets = ["{SECRET}"]\nnetworks = ["demo"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(config),
         "--redis-url", redis_server.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        runtime_file = tmp_path / "data" / "runtime.json"
        runtime = _wait_for_runtime(proc, runtime_file)
        url, workers = str(runtime["url"]), list(runtime["gateway_pids"])
        assert len(set(workers)) == 2
        assert proc.pid not in workers
        answered = set()
        for _ in range(CONNECTIONS):
            answered.add(_pid_of(url))
            if len(answered) == 2:
                break
        assert answered == set(workers)
        for i in range(20):
            assert _post(url, body_of([chat(i)])) == (202, {"accepted": 1})
        os.kill(workers[0], signal.SIGKILL)  # a dead worker is replaced
        deadline = time.monotonic() + START_TIMEOUT_S
        while (now := _wait_for_runtime(proc, runtime_file)["gateway_pids"]) == workers:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.05)
        assert workers[1] in now
        assert workers[0] not in now
        workers += now
        assert all(_pid_of(url) in now for _ in range(10))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not [pid for pid in workers if running(pid)]
    ids = sorted(e.id for part in stream_entries(redis_client, namespace).values() for e in part)
    assert ids == sorted(f"e{i}" for i in range(20))
