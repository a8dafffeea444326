"""run_gateway: several worker processes share one port and stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from gateway.redis_server import RedisServer, free_port
from gateway.signing import signed_headers

from .helpers import SECRET, body_of, chat, stream_entries

ROOT = Path(__file__).resolve().parents[2]
SERVE = """
import sys
from gateway.app import run_gateway
from gateway.settings import settings_from_dict
if __name__ == "__main__":
    raw = {
        "namespace": sys.argv[2],
        "networks": {"demo": {}},
        "limits": {"max_event_age_s": 20 * 365 * 86_400},  # chat()'s fixed timestamps
        "api_keys": [{"key": "k1", "secrets": [sys.argv[4]], "networks": ["demo"]}],
    }
    run_gateway(settings_from_dict(raw, {}), sys.argv[1], "127.0.0.1", int(sys.argv[3]), workers=2)
"""


def _post(port: int, body: bytes) -> tuple[int, object]:
    headers = {**signed_headers("k1", SECRET, body), "Content-Type": "application/json"}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", body, headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_two_workers_share_the_port(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    proc = subprocess.Popen(
        [sys.executable, str(script), redis_server.url, namespace, str(port), SECRET],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "gateway exited"
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        for i in range(20):
            assert _post(port, body_of([chat(i)])) == (202, {"accepted": 1})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    ids = sorted(e.id for part in stream_entries(redis_client, namespace).values() for e in part)
    assert ids == sorted(f"e{i}" for i in range(20))
