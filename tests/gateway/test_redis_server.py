"""The project's own redis-server: AOF on, never two servers on one data dir, and it does
not outlive a killed parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from gateway.redis_server import RedisServer, running


def test_aof_is_on_and_data_survives_a_restart(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as first:
        r = redis.Redis.from_url(first.url)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("appendfsync")["appendfsync"] == "always"
        r.set("k", "v")
    with RedisServer(tmp_path) as second:
        assert redis.Redis.from_url(second.url).get("k") == b"v"


def test_a_server_left_on_the_data_dir_is_stopped_first(tmp_path: Path) -> None:
    stale = RedisServer(tmp_path).start()
    assert stale.proc is not None
    with RedisServer(tmp_path) as fresh:
        stale.proc.wait(timeout=15)  # stopped by the new server's start
        assert redis.Redis.from_url(fresh.url).ping()


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from gateway.redis_server import RedisServer;"
        f"s = RedisServer(Path({str(tmp_path)!r})).start(); print(s.proc.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())  # type: ignore[union-attr]
    assert running(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid), "redis-server outlived its killed parent"
