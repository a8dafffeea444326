"""The consume loop every shard kind shares: read a Redis stream through a consumer group,
skip what was already applied, hand batches to `process`, which commits and acknowledges.

Exactly-once effect: `process` commits the state it changed together with the id of the
last entry it applied (the offset) in one atomic step, then acknowledges. After a crash,
entries at or below the committed offset are acknowledged without being applied again.
A fencing epoch, watched by the commit's transaction (and checked by every heartbeat), makes a stale
instance (one that lost its shard to a newer one) stop.

Dead letters: when `process` raises on a batch, the batch is bisected (each half applied on
its own, from the committed state) until the failing entry stands alone; that entry is
retried with a growing pause, its failures counted in Redis (so a restart does not reset
them). After `max_entry_failures` failures it moves to the dead-letter stream, and the offset
past it, in one fenced commit (XADD deadletter + offset + XACK): the partition moves on.
Lost connections, timeouts and Redis refusing writes (OOM, read-only) are not the entry's
fault: they are retried from the committed state without counting. After
DEAD_LETTER_STREAK_MAX dead letters in a row the shard blocks instead (see there).

Health: the loop publishes a heartbeat (actors/health.py) about every second, idle or not.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Sequence

import msgspec
import redis

from actors import health
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.lua import Commit, CommitCall, NativeCommit
from actors.redisconn import connect
from engine.streamid import stream_id

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
ITEMS_PER_COMMIT = 20_000
"""Most items (events, credits, ledger entries) a shard commits at once. A commit is one
MULTI/EXEC and Redis serves nobody else while it runs: 20,000 items hold it for up to
~100-300 ms. Smaller commits were measured and cost more than they gave: at 1,000 events
(channel shards) and 2,000 credits (member shards) the stage harness spent ~40% more Redis
time per event (a batch coalesces fewer writes to the same keys: a member's presence and
chatter scores, its state) and `rally bench` credited 20-40% fewer events per second
(benchmarks/RESULTS.md, 2026-12-06 second section). Bounding the hold needs cheaper writes
per event first (presence and chatters as packed per-channel deltas)."""
EVENTS_PER_ENTRY = 1_000
"""Most events an ingest entry holds: the gateway splits a larger flush, so that
`StreamShard.groups` can cut a channel shard's backlog into commits of
`max_items_per_commit` events (it never splits an entry)."""
SOCKET_TIMEOUT_S = 60.0
"""A large commit can keep Redis busy for a while: do not give up on it early."""
RETRY_PAUSE_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
"""Pause before the k-th retry of a failing entry (the last one repeats)."""
ERROR_TEXT_MAX = 2_000
GC_THRESHOLDS = (20_000, 20, 20)
"""The cyclic collector in a shard's process and the ledger sink's (CPython's default: 700,
10, 10). A batch makes hundreds of thousands of short-lived objects (a watch tick: a credit,
its key, its ledger entry per viewer, beside a cache of member states; a sink flush: 50,000
decoded rows): at the default the collector walks the young and middle generations every
700 allocations, ~20% of a watch tick's member-shard CPU (measured, benchmarks/RESULTS.md).
Garbage in cycles is rare here and still collected."""
DEAD_LETTER_STREAK_MAX = 10
"""Dead letters in a row (no entry applied in between) after which a shard stops moving
failing entries aside: so many say the fault is not in the entries (Redis state, or an
item held back from earlier that fails whenever a batch releases it), and dead-lettering
would only empty the partition. The shard then retries the entry until it applies (state
"blocked": not ready); `rally deadletter retry --all` puts the ten back once fixed."""
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""Failures that say nothing about the entry: retried from the committed state, not counted.
On a Redis Cluster: MOVED and ASK (AskError) while a reshard moves the deployment's slot (a
commit meeting keys already migrated is refused whole: EXECABORT), TRYAGAIN, CLUSTERDOWN and
MASTERDOWN (ClusterDownError) while it fails over."""
_fields_encoder = msgspec.msgpack.Encoder()
fields_decoder = msgspec.msgpack.Decoder(dict[bytes, bytes])
"""Decodes the `fields` of a dead letter: the original entry's fields."""


class Fenced(RuntimeError):
    """A newer instance of this shard has started: this one must stop writing."""


INFRA_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
                 "UNBLOCKED")  # fmt: skip
"""Error replies that are no fault of the entries, when redis-py gives them no class of
their own (those it does, it strips of their code: see INFRA_ERRORS). UNBLOCKED ends a
blocking read of a stream that left the server (a reshard migrated it)."""


LINGER_BELOW_ITEMS = 1_000
"""A batch with fewer items than this, read from a drained stream, waits `linger_ms`."""


def ray_node_id() -> str:
    """The id of the Ray node this process runs on ("" when Ray is not running here)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def not_the_entry(err: BaseException) -> bool:
    """True for failures that are no fault of the entries being applied."""
    if isinstance(err, (Fenced, *INFRA_ERRORS)):
        return True
    return isinstance(err, redis.ResponseError) and str(err).startswith(INFRA_REPLIES)


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
    nice = 0
    """Added to the loop thread's nice value when it starts (on Linux, that thread's only:
    not the process that built the shard, say a test)."""

    @property
    def offsets_key(self) -> str:
        """The hash holding this consumer's committed offset (field: the stream). A second
        consumer group of a stream keeps its own hash (actors/trim.py knows where)."""
        return self.keys.offsets

    def __init__(self, cfg: RuntimeConfig, index: int, stream: str) -> None:
        self.cfg = cfg
        self.index = index
        self.keys = Keys.of(cfg.namespace, cfg.redis_url)
        self.stream = stream
        self.consumer = f"{self.kind}-{index}"
        self.r = connect(cfg.redis_url, socket_keepalive=True, socket_timeout=SOCKET_TIMEOUT_S)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.epoch_key = health.epoch_key(self.keys, self.kind, index)
        self.epoch = int(self.r.incr(self.epoch_key))
        ensure_group(self.r, stream, self.group)
        raw = self.r.hget(self.offsets_key, stream)
        self.offset = stream_id(raw) if raw else (0, 0)
        self.batches = 0
        self.errors = 0
        self.dead_letters = 0
        self.dead_letter_streak = 0
        """Dead letters since an entry last applied."""
        self.state = "running"
        self.since = self.last_ok_ts = time.time()
        self.node = ray_node_id()
        self.next_beat = 0.0
        self.script = NativeCommit(self.r)
        self._beat_script = self.r.register_script(health.HEARTBEAT)
        self.beat()
        self.thread = threading.Thread(target=self._run, name=self.consumer, daemon=True)
        self.thread.start()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        gc.set_threshold(*GC_THRESHOLDS)  # the process hosts this shard (a Ray actor)
        if self.nice:
            with contextlib.suppress(OSError):
                os.nice(self.nice)
        self._claim_orphans()
        backlog = True  # first our own pending entries (a crash left them unacknowledged)
        while not self.stopping.is_set():
            try:
                self.beat_if_due()
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
                if entries and not backlog and self.cfg.linger_ms > 0:
                    entries = self._linger(entries)
                if backlog and not entries:
                    backlog = False
                    continue
                if entries:
                    self._handle(entries)
                else:
                    self.idle()
            except Fenced:
                self._fenced()
                return
            except Exception as err:
                if not_the_entry(err):
                    log.warning("%s lost Redis (%r); retrying from the committed state",
                                self.consumer, err)  # fmt: skip
                    backlog = self._recover(0.5)
                else:
                    log.exception("%s failed; retrying from the committed state", self.consumer)
                    backlog = self._recover(1.0)
        self._set_state("stopped")
        self._try_beat()

    def _linger(self, entries: list[Entry]) -> list[Entry]:
        """A read that drained the stream with a small batch (fewer than LINGER_BELOW_ITEMS
        items, by the entries' `n`): wait `linger_ms` and read what came meanwhile, so that
        a trickle of small entries (single-event requests, one WebSocket frame each) is
        applied in fewer, larger batches. Every batch pays its read, its fenced commit's two
        round trips and its bookkeeping, whatever its size."""
        if len(entries) >= self.cfg.read_count:
            return entries  # the stream may hold more: no reason to wait
        items = sum(int(fields.get(b"n", 1)) for _, fields in entries)
        if items >= LINGER_BELOW_ITEMS or self.stopping.wait(self.cfg.linger_ms / 1000):
            return entries
        got = self.r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.cfg.read_count - len(entries)
        )
        return (entries + got[0][1]) if got else entries

    def _recover(self, pause_s: float) -> bool:
        """After a failure whose outcome is unknown (did the commit land?), forget everything
        held in memory and start again from what Redis has committed: the offset decides
        which pending entries are applied again. Returns True (re-read pending entries)."""
        self.errors += 1
        self.stopping.wait(pause_s)
        with self.lock:
            try:
                self._reload()
            except redis.RedisError:
                pass  # still down: the next read fails and we come back here
        return True

    def _reload(self) -> None:
        """Drop what memory holds and take the committed offset again (under self.lock)."""
        self.reset()
        raw = self.r.hget(self.offsets_key, self.stream)
        self.offset = stream_id(raw) if raw else (0, 0)

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
            stale = [eid for eid, _ in entries if stream_id(eid) <= applied]
            if stale:
                self.r.xack(self.stream, self.group, *stale)
            fresh = [e for e in entries if stream_id(e[0]) > applied]
            for group in self.groups(fresh):
                self._apply(group)
                self.beat_if_due()

    def _unapplied(self, entries: Sequence[Entry]) -> list[Entry]:
        return [e for e in entries if stream_id(e[0]) > self.offset]

    def _apply(self, entries: Sequence[Entry]) -> None:
        """Apply a run of entries; on failure find the entry that fails (bisecting), retry
        it, and dead-letter it once it has failed `max_entry_failures` times."""
        if not entries:
            return
        try:
            self.process(entries)
        except Exception as err:
            if not_the_entry(err):
                raise
            self.errors += 1
            log.warning("%s failed a run of %d entries (%r); isolating the failing entry",
                        self.consumer, len(entries), err)  # fmt: skip
            self._reload()
            rest = self._unapplied(entries)
            if len(rest) == 1:
                self._retry(rest[0], err)
            elif rest:
                mid = len(rest) // 2
                self._apply(rest[:mid])
                self._apply(self._unapplied(rest[mid:]))
        else:
            self._applied(entries)

    def _applied(self, entries: Sequence[Entry]) -> None:
        self.offset = stream_id(entries[-1][0])
        self.batches += 1
        self.last_ok_ts = time.time()
        self.dead_letter_streak = 0
        if self.state in ("failing", "blocked"):
            self._set_state("running")

    def _retry(self, entry: Entry, err: Exception) -> None:
        """Retry one failing entry with a growing pause until it applies or has failed
        `max_entry_failures` times (counted in Redis: a restart keeps counting)."""
        self._set_state("failing")
        self.beat_if_due()
        field = f"{self.stream}/{entry[0].decode()}"
        fkey = health.failures_key(self.keys)
        while True:
            failures = int(self.r.hincrby(fkey, field, 1))
            if failures >= self.cfg.max_entry_failures:
                if self.dead_letter_streak < DEAD_LETTER_STREAK_MAX:
                    self._dead_letter(entry, err, failures, field)
                    return
                if self.state != "blocked":
                    log.error("%s blocked: %d entries in a row kept failing; retrying %s "
                              "until it applies", self.consumer, self.dead_letter_streak,
                              entry[0].decode())  # fmt: skip
                    self._set_state("blocked")
            pause = RETRY_PAUSE_S[min(failures, len(RETRY_PAUSE_S)) - 1]
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                self.beat_if_due()
                if self.stopping.wait(min(0.2, pause)):
                    return
            try:
                self.process([entry])
            except Exception as again:
                if not_the_entry(again):
                    raise
                self.errors += 1
                err = again
                self._reload()
                if stream_id(entry[0]) <= self.offset:
                    return  # it did commit after all
            else:
                self._applied([entry])
                self.r.hdel(fkey, field)
                return

    def _dead_letter(self, entry: Entry, err: Exception, failures: int, field: str) -> None:
        """Move `entry` to the dead-letter stream and the offset past it, in one commit."""
        eid, fields = entry
        text = f"{type(err).__name__}: {err}"[:ERROR_TEXT_MAX]
        log.error("%s dead-letters %s %s after %d failures: %s",
                  self.consumer, self.stream, eid.decode(), failures, text)  # fmt: skip
        k = self.keys
        c = Commit()
        c.cmd(
            "XADD", health.deadletter_key(k), "*", "stream", self.stream, "id", eid.decode(),
            "group", self.group, "shard", self.consumer, "error", text, "failures", failures,
            "ts_ms", int(time.time() * 1000), "fields", _fields_encoder.encode(fields),
        )  # fmt: skip
        c.cmd("HINCRBY", health.deadletter_count_key(k), self.stream, 1)
        c.cmd("HINCRBY", k.stats, "dead_letters", 1)
        c.cmd("HDEL", health.failures_key(k), field)
        self.commit(c, [entry])
        self.offset = stream_id(eid)
        self.dead_letters += 1
        self.dead_letter_streak += 1
        self._set_state("running")
        self.beat_if_due()

    def commit(self, c: Commit, entries: Sequence[Entry]) -> None:
        """Run `c` with the offset moved to the last of `entries` and them acknowledged, in
        one fenced atomic transaction (actors/lua.py NativeCommit)."""
        ids = [eid for eid, _ in entries]
        args = CommitCall(
            c, self.epoch_key, self.epoch, self.stream, self.group, self.offsets_key, ids[-1], ids
        )
        try:
            self.script(args=args)
        except redis.ResponseError as err:
            if str(err).startswith("FENCED"):
                raise Fenced(self.consumer) from err
            raise

    max_items_per_commit = ITEMS_PER_COMMIT
    """Most items (events, credits, ledger entries) one commit carries: one commit is one
    transaction, and Redis serves nobody else while it runs."""

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

    # -- health ---------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.since = time.time()
            self.next_beat = 0.0  # say it at the next chance

    def heartbeat(self) -> health.Heartbeat:
        return health.Heartbeat(
            shard=self.consumer, kind=self.kind, index=self.index, stream=self.stream,
            group=self.group, pid=os.getpid(), epoch=self.epoch, state=self.state,
            since=self.since, ts=time.time(), batches=self.batches, errors=self.errors,
            dead_letters=self.dead_letters, last_ok_ts=self.last_ok_ts, node=self.node,
        )  # fmt: skip

    def beat(self) -> None:
        """Publish the heartbeat now; raises Fenced when a newer instance has started."""
        hb = self.heartbeat()
        self.next_beat = time.monotonic() + health.HEARTBEAT_S
        since = hb.since if hb.state == "fenced" else hb.ts
        fenced = msgspec.structs.replace(hb, state="fenced", since=since)
        encode = health.heartbeat_encoder.encode
        key = health.health_key(self.keys)
        args = [self.consumer, self.epoch, encode(hb), encode(fenced)]
        if not self._beat_script(keys=[key, self.epoch_key], args=args):
            self.state, self.since = "fenced", hb.ts
            raise Fenced(self.consumer)

    def beat_if_due(self) -> None:
        if time.monotonic() >= self.next_beat:
            self.beat()

    def _try_beat(self) -> None:
        try:
            self.beat()
        except (Fenced, redis.RedisError):
            pass

    def _fenced(self) -> None:
        log.warning("%s fenced by a newer instance; stopping", self.consumer)
        self._set_state("fenced")
        self._try_beat()  # says "fenced" unless a newer instance already reports

    # -- what subclasses provide ----------------------------------------------------------
    def process(self, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when a read timed out with nothing new."""

    # -- actor methods --------------------------------------------------------------------
    def pid(self) -> int:
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
            "dead_letters": self.dead_letters,
            "state": self.state,
            "alive": self.thread.is_alive(),
        }

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
