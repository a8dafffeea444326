"""CPU and resident memory of every process of the run, found and sampled with psutil."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import psutil

FORK_ROLE = "redis-server fork (AOF rewrite)"
"""Shares its pages with redis-server: counted for CPU, never added to resident memory."""


def role_of(proc: psutil.Process, gateway_pid: int | None) -> str:
    """A readable role: gateway, redis-server, ray::ChannelShard, raylet, loadgen, ..."""
    if proc.pid == gateway_pid:
        return "gateway"
    with contextlib.suppress(psutil.Error):
        name = proc.name()
        cmdline = proc.cmdline()
        title = cmdline[0] if cmdline else name
        if title.startswith("ray::"):
            return title.split()[0]
        if title.startswith(("redis-aof-rewrite", "redis-rdb")):
            return FORK_ROLE  # a copy-on-write child of redis-server
        if "redis-server" in name or "redis-server" in title:
            return "redis-server"
        if "benchmarks.baselines" in cmdline:
            return "baseline-" + cmdline[cmdline.index("--mode") + 1]
        for known in ("raylet", "gcs_server", "log_monitor", "dashboard", "monitor.py"):
            if known in title or any(known in part for part in cmdline[:3]):
                return f"ray:{known.removesuffix('.py')}"
        return name
    return "gone"


@dataclass(slots=True)
class _Seen:
    role: str
    proc: psutil.Process
    cpu0: float
    cpu1: float
    t0: float
    t1: float
    rss_max: int = 0
    rss_last: int = 0


@dataclass(slots=True)
class ProcessSampler:
    """Samples the process tree under `roots` (and `extra` pids) on every `sample()`."""

    roots: list[int]
    gateway_pid: int | None = None
    extra: dict[int, str] = field(default_factory=dict)
    seen: dict[int, _Seen] = field(default_factory=dict)

    def _discover(self) -> list[tuple[psutil.Process, str | None]]:
        found: list[tuple[psutil.Process, str | None]] = []
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found.append((root, self.extra.get(pid)))
                found += [(c, self.extra.get(c.pid)) for c in root.children(recursive=True)]
        under = {proc.pid for proc, _ in found}
        for pid, role in self.extra.items():
            if pid not in under:
                with contextlib.suppress(psutil.Error):
                    found.append((psutil.Process(pid), role))
        return found

    def sample(self) -> None:
        for proc, role in self._discover():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                cpu = t.user + t.system
                rss = proc.memory_info().rss
                if rss == 0:  # a zombie, or a process exiting: nothing of it to measure
                    continue
                now = time.time()
                s = self.seen.get(proc.pid)
                if s is None or cpu < s.cpu1:  # new, or its pid reused by another process
                    role = role or role_of(proc, self.gateway_pid)
                    s = self.seen[proc.pid] = _Seen(role, proc, cpu, cpu, now, now)
                s.cpu1 = cpu
                s.t1 = now
                s.rss_last = rss
                s.rss_max = max(s.rss_max, rss)

    def reset(self) -> None:
        """Start a new measurement window: CPU from now, RSS maxima forgotten."""
        self.seen.clear()
        self.sample()

    def report(self) -> list[dict[str, object]]:
        """Per process: CPU seconds and % of one core over the time it was sampled; RSS."""
        rows = []
        for pid, s in sorted(self.seen.items(), key=lambda kv: kv[1].role):
            cpu_s = s.cpu1 - s.cpu0
            span = s.t1 - s.t0
            rows.append({
                "role": s.role, "pid": pid, "ppid": _ppid(s.proc), "cpu_s": round(cpu_s, 3),
                "cpu_pct": round(100 * cpu_s / span, 1) if span > 0 else 0.0,
                "rss_mb": round(s.rss_last / 2**20, 1), "rss_max_mb": round(s.rss_max / 2**20, 1),
            })  # fmt: skip
        return rows

    def cpu_by_role(self, exclude: tuple[str, ...] = ()) -> dict[str, float]:
        """CPU seconds since the window started, by role (the processes of one role summed,
        a redis-server fork's with the forks'), but of roles starting with `exclude`."""
        out: dict[str, float] = {}
        for s in self.seen.values():
            if not s.role.startswith(exclude):
                out[s.role] = out.get(s.role, 0.0) + s.cpu1 - s.cpu0
        return out

    def rss_by_role(self, exclude: tuple[str, ...] = ()) -> dict[str, int]:
        """Resident bytes at the last sample, by role (the processes of one role summed), but
        of roles starting with `exclude`; a fork's pages are its parent's and not counted
        twice."""
        out: dict[str, int] = {}
        for s in self.seen.values():
            if s.role != FORK_ROLE and not s.role.startswith(exclude):
                out[s.role] = out.get(s.role, 0) + s.rss_last
        return out


def _ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"
