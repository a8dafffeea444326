"""The `rally` CLI as a user runs it: serve (two gateway workers), post, read (API key and a
`rally token` member token), stop, audit from the AOF, bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.signing import bearer
from tests.e2e.conftest import KEY, SECRET, get, post, rally_cli, wait_runtime_file
from tests.e2e.traffic import day_of_traffic

SERVE_CONFIG = """
data_dir = "{data_dir}"
namespace = "cli"
[server]
port = 0   # a free one: the URL is in runtime.json
workers = 2
[auth]
token_secret = "cli-token-secret-0123456789"
[clock]
watch_interval_s = 0
[limits]
max_event_age_s = 630720000   # 20 years: traffic.py's events have fixed dates (November 2026)
[networks.tv.earn]
welcome_points = 7
[[api_keys]]
key = "{key}"
secrets = ["{secret}"]
networks = ["tv"]
"""


def wait_ready(url: str, proc: subprocess.Popen[str], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if get(url, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("rally serve did not become ready")


def test_serve_post_read_stop_then_audit_from_the_aof(tmp_path: Path) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(SERVE_CONFIG.format(data_dir=tmp_path / "data", key=KEY, secret=SECRET))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        runtime = wait_runtime_file(tmp_path / "data", proc)
        url = runtime["url"]
        wait_ready(url, proc)
        wire = day_of_traffic(seed=5, members=12, chats=300)
        assert post(url, wire) == (202, {"accepted": len(wire)})
        deadline = time.monotonic() + 60
        body: dict = {}
        while time.monotonic() < deadline:
            status, body = get(url, "/v1/members/m1?network=tv")
            if status == 200 and body["balance"] > 7:
                break
            time.sleep(0.2)
        assert body["balance"] > 7
        assert body["tier"] in {"Bronze", "Silver", "Gold", "Diamond"}
        assert len(set(runtime["gateway_pids"])) == 2
        token = rally_cli("token", "m1", "--config", str(config))
        assert token.returncode == 0, token.stderr
        as_m1 = bearer(token.stdout.strip())
        status, mine = get(url, "/v1/members/m1?network=tv", headers=as_m1)
        assert (status, mine["user_id"]) == (200, "m1")
        assert get(url, "/v1/members/m2?network=tv", headers=as_m1)[0] == 403
        assert get(url, "/v1/members/m1?network=tv", headers={})[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    # the server is gone: audit starts its own redis-server on the AOF in the data dir
    (tmp_path / "data" / "runtime.json").unlink()
    done = rally_cli("audit", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit passed" in done.stdout
    assert "13 members" in done.stdout  # 12 viewers and "botty", not ignored in this config


def test_bad_configuration_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[networks.tv.earn]\nchat_points = "lots"\n')
    done = rally_cli("audit", "--config", str(config))
    assert done.returncode == 2
    assert "networks.tv.earn.chat_points" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_command_line_is_exit_2(tmp_path: Path) -> None:
    done = rally_cli("demo", "--seconds", "soon")
    assert done.returncode == 2
    assert "seconds" in done.stderr
    missing = rally_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "not found" in missing.stderr
    empty = str(tmp_path / "empty")
    done = rally_cli("analytics", "snapshot", "--data-dir", empty)
    assert (done.returncode, done.stdout) == (2, "")
    assert "does not exist yet" in done.stderr
    assert "rally serve" in done.stderr
    done = rally_cli("analytics", "kpis", "--data-dir", empty)
    assert done.returncode == 2
    assert "run `rally analytics snapshot` first" in done.stderr
    done = rally_cli("analytics", "kpis", "--data-dir", empty, "--from", "2026-02-30")
    assert done.returncode == 2
    assert "--from" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_runs_and_audits_clean(tmp_path: Path) -> None:
    done = rally_cli(
        "demo", "--seconds", "3", "--rate", "500", "--data-dir", str(tmp_path / "demo")
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "audit passed" in done.stdout
    assert "Top members of demo" in done.stdout
    assert "analytics: DAU" in done.stdout  # a snapshot taken, its KPIs read
