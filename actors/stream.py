"""The consume loop both shard kinds share: read a Redis stream through a consumer group,
skip what was already applied, hand batches to `process`, which commits and acknowledges.

Exactly-once effect: `process` commits the state it changed together with the id of the
last entry it applied (the offset) in one atomic step, then acknowledges. After a crash,
entries at or below the committed offset are acknowledged without being applied again.
A fencing epoch, checked inside the commit script, makes a stale instance (one that lost
its shard to a newer one) stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import redis

from actors.config import RuntimeConfig
from actors.keys import Keys

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
SOCKET_TIMEOUT_S = 60.0
"""A large commit can keep Redis busy for a while: do not give up on it early."""


class Fenced(RuntimeError):
    """A newer instance of this shard has started: this one must stop writing."""


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


class StreamShard:
    """Base of the shard actors: one consumer of one stream, with a background loop thread."""

    group = "shards"
    kind = "shard"

    def __init__(self, cfg: RuntimeConfig, index: int, stream: str) -> None:
        self.cfg = cfg
        self.index = index
        self.keys = Keys(cfg.namespace)
        self.stream = stream
        self.consumer = f"{self.kind}-{index}"
        self.r = redis.Redis.from_url(
            cfg.redis_url, socket_keepalive=True, socket_timeout=SOCKET_TIMEOUT_S
        )
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.epoch_key = self.keys.k("epoch", self.kind, index)
        self.epoch = int(self.r.incr(self.epoch_key))
        ensure_group(self.r, stream, self.group)
        raw = self.r.hget(self.keys.offsets, stream)
        self.offset = parse_id(raw) if raw else (0, 0)
        self.batches = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=self.consumer, daemon=True)
        self.thread.start()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        self._claim_orphans()
        backlog = True  # first our own pending entries (a crash left them unacknowledged)
        while not self.stopping.is_set():
            try:
                start = "0" if backlog else ">"
                block = None if backlog else self.cfg.block_ms
                got = self.r.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: start},
                    count=self.cfg.read_count,
                    block=block,
                )
                entries: list[Entry] = got[0][1] if got else []
                if backlog and not entries:
                    backlog = False
                    continue
                if entries:
                    self._handle(entries)
                else:
                    self.idle()
            except Fenced:
                log.warning("%s fenced by a newer instance; stopping", self.consumer)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                log.warning("%s lost Redis; retrying from the committed state", self.consumer)
                backlog = self._recover(0.5)
            except Exception:
                log.exception("%s failed a batch; retrying from the committed state", self.consumer)
                backlog = self._recover(1.0)

    def _recover(self, pause_s: float) -> bool:
        """After a failure whose outcome is unknown (did the commit land?), forget everything
        held in memory and start again from what Redis has committed: the offset decides
        which pending entries are applied again. Returns True (re-read pending entries)."""
        self.errors += 1
        time.sleep(pause_s)
        with self.lock:
            self.reset()
            try:
                raw = self.r.hget(self.keys.offsets, self.stream)
            except redis.RedisError:
                return True  # still down: the next read fails and we come back here
            self.offset = parse_id(raw) if raw else (0, 0)
        return True

    def reset(self) -> None:
        """Drop the in-memory activations (their committed state is reloaded on demand)."""

    def _claim_orphans(self) -> None:
        """Take over entries pending on other consumers of this stream (e.g. renamed shards)."""
        try:
            self.r.xautoclaim(self.stream, self.group, self.consumer, min_idle_time=0, count=10_000)
        except redis.ResponseError:
            log.exception("xautoclaim failed")

    def _handle(self, entries: list[Entry]) -> None:
        with self.lock:
            applied = self.offset
            stale = [eid for eid, _ in entries if parse_id(eid) <= applied]
            if stale:
                self.r.xack(self.stream, self.group, *stale)
            fresh = [e for e in entries if parse_id(e[0]) > applied]
            for group in self.groups(fresh):
                self.process(group)
                self.offset = parse_id(group[-1][0])
                self.batches += 1

    max_items_per_commit = 20_000
    """Most items (events, credits, ledger entries) one commit carries: one commit is one
    Lua script, and Redis serves nobody else while it runs."""

    def groups(self, entries: list[Entry]) -> list[list[Entry]]:
        """Consecutive runs of entries holding at most `max_items_per_commit` items (by the
        `n` field writers put on entries; one entry alone may exceed it). Each run commits
        on its own: offsets only move forward, so a crash between runs loses nothing."""
        out: list[list[Entry]] = []
        run: list[Entry] = []
        items = 0
        for entry in entries:
            n = int(entry[1].get(b"n", 1))
            if run and items + n > self.max_items_per_commit:
                out.append(run)
                run, items = [], 0
            run.append(entry)
            items += n
        if run:
            out.append(run)
        return out

    # -- what subclasses provide ----------------------------------------------------------
    def process(self, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when a read timed out with nothing new."""

    # -- actor methods --------------------------------------------------------------------
    def pid(self) -> int:
        import os

        return os.getpid()

    def ping(self) -> bool:
        return self.thread.is_alive()

    def info(self) -> dict[str, object]:
        return {
            "consumer": self.consumer,
            "epoch": self.epoch,
            "offset": f"{self.offset[0]}-{self.offset[1]}",
            "batches": self.batches,
            "errors": self.errors,
            "alive": self.thread.is_alive(),
        }

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
