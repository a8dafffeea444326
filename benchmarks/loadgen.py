"""Load-generator processes: seeded simulated traffic, sent open-loop over loopback.

Each worker process owns a share of the target rate. Before the start signal it renders its
traffic from `SimulatedNetwork` into body templates (a cycle of at most `cycle_events`
events, repeated with fresh ids); while running it only substitutes ids and timestamps,
signs and sends. Request k is *scheduled* when its last event is due under the rate
profile; latency counts from that scheduled time, so a slow server shows as latency even
when the client falls behind (no coordinated omission). A rate of 0 means closed loop:
each connection sends its next request as soon as the last one is answered.

Probes measure ingest→visible: every so often a request carries a chat from a fresh user,
and the worker polls Redis until that user's state exists (member state for Rallypoint,
the balance hash for the baselines).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import uvloop
from redis.exceptions import RedisError

from actors.redisconn import connect_async
from benchmarks.plan import CLOSED_LOOP_GUESS_PER_S, WS_TRANSPORTS, Plan, Schedule, Templates
from benchmarks.wire import (
    HttpConnection,
    SignedPost,
    WireError,
    WsConnection,
    ack_decoder,
    ws_frame,
)
from gateway.simulator import MAX_BATCH_EVENTS

PROGRESS_EVERY_S = 0.5
PROBE_POLL_S = 0.005


@dataclass(slots=True)
class WorkerResult:
    worker: int
    requests: int = 0
    events_sent: int = 0
    events_accepted: int = 0
    rejected: int = 0
    errors: int = 0
    last_error: str = ""
    started_at: float = 0.0
    sent_until: float = 0.0
    ack_ms: array = field(default_factory=lambda: array("f"))
    """Per request (HTTP) or frame (WebSocket): scheduled send → answer, in ms."""
    probe_ms: list[float] = field(default_factory=list)
    probes_lost: int = 0
    burst_events: int = 0
    burst_done_at: float = 0.0
    max_lag_ms: float = 0.0
    """How far behind its schedule the sender ever was."""
    shed: int = 0
    """Events the gateway shed (503 "overloaded", WebSocket "slow_down"): not errors."""
    shed_requests: int = 0


def _error_of(answer: bytes) -> str | None:
    """The `error` code of a JSON error body, if it is one."""
    try:
        body = ack_decoder.decode(answer)
    except (msgspec.DecodeError, ValueError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


class _Probes:
    """Probe events, and a poller that notes when each becomes visible in Redis."""

    def __init__(self, plan: Plan, network: str, channel: str) -> None:
        self.plan = plan
        self.network = network
        self.channel = channel
        self.pending: dict[str, float] = {}
        self.fields: dict[str, str] = {}
        """Probe event id -> its field in the probe hash, while pending."""
        self.seq = 0
        self.done: list[float] = []
        self.error = ""
        self.redis = connect_async(plan.endpoint.redis_url)

    def make(self, scheduled: float) -> tuple[str, bytes]:
        """A probe event (its id and JSON), pending until its member becomes visible."""
        self.seq += 1
        tr = self.plan.traffic
        uid = f"probe.{tr.run_id}.w{self.plan.worker}.{self.seq}"
        event_id = f"{tr.run_id}.w{self.plan.worker}.p{self.seq}"
        self.pending[self.plan.endpoint.probe_field_prefix + uid] = scheduled
        self.fields[event_id] = self.plan.endpoint.probe_field_prefix + uid
        ev = {
            "kind": "chat",
            "id": event_id,
            "network": self.network,
            "channel": self.channel,
            "user_id": uid,
            "user_name": uid,
            "ts": round(scheduled, 3),
            "text": "probe",
        }
        return event_id, msgspec.json.encode(ev)

    def drop(self, event_ids: list[str]) -> None:
        """Probes the gateway shed: never credited, so no longer waited for."""
        for event_id in event_ids:
            field = self.fields.pop(event_id, None)
            if field is not None:
                self.pending.pop(field, None)

    async def poll(self, stop: asyncio.Event, drain_s: float) -> None:
        """Note probes as they become visible; once `stop` is set, for at most `drain_s`
        more. Ends by itself: a cancelled Redis call may not end the task."""
        give_up = math.inf
        while self.pending or not stop.is_set():
            if stop.is_set() and give_up == math.inf:
                give_up = time.monotonic() + drain_s
            if time.monotonic() > give_up:
                return
            if self.pending:
                fields = list(self.pending)
                try:
                    found = await self.redis.hmget(self.plan.endpoint.probe_hash, fields)
                except (RedisError, OSError) as err:
                    self.error = f"probe poll: {type(err).__name__}: {err}"
                    return
                now = time.time()
                for f, v in zip(fields, found, strict=True):
                    if v is not None:
                        self.done.append((now - self.pending.pop(f)) * 1e3)
            await asyncio.sleep(PROBE_POLL_S)

    async def close(self) -> None:
        await self.redis.aclose()


class _Worker:
    def __init__(self, plan: Plan, progress: mp.Queue, stop_flag: Callable[[], bool]) -> None:
        self.plan = plan
        self.progress = progress
        self.stop_flag = stop_flag
        self.res = WorkerResult(plan.worker)
        per_item = 1 if plan.transport in WS_TRANSPORTS else min(plan.batch_size, MAX_BATCH_EVENTS)
        self.per_item = per_item
        self.sched = Schedule(plan.phases, 1.0 / plan.workers)
        n_events = self.sched.total_events if not self.sched.closed else plan.cycle_events
        self.tmpl = Templates(plan, per_item, n_events)
        ch0 = self.tmpl.sim.channel_names[0]
        self.probes = _Probes(plan, plan.traffic.network, ch0)
        rate = sum(p.rate_per_s for p in plan.phases) / max(1, len(plan.phases))
        items_per_s = plan.share(rate if rate > 0 else CLOSED_LOOP_GUESS_PER_S) / per_item
        self.probe_every = max(1, round(items_per_s / max(plan.probes_per_s / plan.workers, 1e-3)))
        self.t0 = 0.0
        self.next_item = 0
        self.sending = True
        ep = plan.endpoint
        self.signer = SignedPost(ep.host, ep.port, ep.path, ep.key, ep.secret)

    # ---- scheduling ---------------------------------------------------------------------

    def _take(self) -> tuple[int, float] | None:
        """The next item and its scheduled wall time, or None when done."""
        if not self.sending or self.stop_flag():
            self.sending = False
            return None
        k = self.next_item
        now = time.time()
        # a target that fell behind does not stretch the run; but a worker that woke late
        # on a loaded machine still sends its first item, so that a short run is not empty
        if k > 0 and now - self.t0 >= self.sched.duration_s + (
            0.0 if self.sched.closed else self.plan.grace_s
        ):
            self.sending = False
            return None
        if self.sched.closed:
            self.next_item += 1
            return k, now
        last_event = (k + 1) * self.per_item - 1
        if last_event >= self.sched.total_events:
            self.sending = False
            return None
        self.next_item += 1
        return k, self.t0 + self.sched.due(last_event)

    def _lag(self, scheduled: float) -> None:
        lag = (time.time() - scheduled) * 1e3
        if lag > self.res.max_lag_ms:
            self.res.max_lag_ms = lag

    # ---- HTTP ---------------------------------------------------------------------------

    async def _http_loop(self) -> None:
        ep = self.plan.endpoint
        conn = HttpConnection(ep.host, ep.port)
        try:
            while (item := self._take()) is not None:
                k, scheduled = item
                delay = scheduled - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._lag(scheduled)
                inner, n = self.tmpl.render(k, scheduled)
                probe = None
                if k % self.probe_every == 0:
                    probe, event = self.probes.make(scheduled)
                    inner = event + b"," + inner
                    n += 1
                shed = await self._post(conn, b'{"events":[' + inner + b"]}", n, scheduled)
                if shed and probe is not None:
                    self.probes.drop([probe])
        finally:
            await conn.close()

    async def _post(self, conn: HttpConnection, body: bytes, n: int, scheduled: float) -> bool:
        """Send one batch; True if the gateway shed it (503 "overloaded")."""
        res = self.res
        request = self.signer.request(body, time.time())
        res.requests += 1
        res.events_sent += n
        try:
            status, answer = await conn.send(request)
        except (OSError, WireError, asyncio.IncompleteReadError) as err:
            res.errors += 1
            res.last_error = f"{type(err).__name__}: {err}"
            await conn.close()
            await asyncio.sleep(0.05)
            return False
        res.ack_ms.append((time.time() - scheduled) * 1e3)
        if status == 503 and _error_of(answer) == "overloaded":
            res.shed += n
            res.shed_requests += 1
            return True
        if status < 300:
            try:
                res.events_accepted += int(ack_decoder.decode(answer).get("accepted", n))
            except (msgspec.DecodeError, ValueError):
                res.events_accepted += n
        elif status < 500 and status != 429:
            res.rejected += n
            res.last_error = f"{status}: {answer[:200]!r}"
        else:
            res.errors += 1
            res.last_error = f"{status}: {answer[:200]!r}"
        return False

    async def _burst(self) -> None:
        """The raid: a raid event, then `joins` viewers new to the channel join within `over_s`."""
        b = self.plan.burst
        assert b is not None
        w, workers = self.plan.worker, self.plan.workers
        mine = b.joins // workers + (1 if w < b.joins % workers else 0)
        sim = self.tmpl.sim
        tr = self.plan.traffic
        channel = sim.channel_names[min(b.channel, len(sim.channel_names) - 1)]
        start = self.t0 + b.at_s
        await asyncio.sleep(max(0.0, start - time.time()))
        users = [f"raider.{tr.run_id}.w{w}.{i}" for i in range(mine)]  # new to this channel
        base = {"network": tr.network, "channel": channel}
        events: list[dict] = []
        if w == 0:
            owner = sim.broadcaster(len(sim.channels) - 1)
            events.append({**base, "kind": "raid", "id": f"{tr.run_id}.raid", "user_id": owner,
                           "user_name": owner, "viewers": b.joins, "ts": start})  # fmt: skip
        for i, uid in enumerate(users):
            events.append({**base, "kind": "join", "id": f"{tr.run_id}.w{w}.r{i}",
                           "user_id": uid, "user_name": uid, "ts": start})  # fmt: skip
        chunks = [events[i : i + b.batch_size] for i in range(0, len(events), b.batch_size)]
        ep = self.plan.endpoint
        conns = [HttpConnection(ep.host, ep.port) for _ in range(4)]
        gap = b.over_s / max(1, len(chunks))

        async def send(i: int, chunk: list[dict]) -> None:
            scheduled = start + i * gap
            await asyncio.sleep(max(0.0, scheduled - time.time()))
            for ev in chunk:
                ev["ts"] = round(scheduled, 3)
            body = msgspec.json.encode({"events": chunk})
            await self._post(conns[i % len(conns)], body, len(chunk), scheduled)

        for i in range(0, len(chunks), len(conns)):
            await asyncio.gather(
                *(send(i + j, c) for j, c in enumerate(chunks[i : i + len(conns)]))
            )
        self.res.burst_events = len(events)
        self.res.burst_done_at = time.time()
        for c in conns:
            await c.close()

    # ---- WebSocket ----------------------------------------------------------------------

    async def _ws_conn(self) -> None:
        ep = self.plan.endpoint
        ws = WsConnection(ep.host, ep.port)
        acks = "bulk" if self.plan.transport == "ws-bulk" else None
        await ws.open(ep.stream_path, ep.key, ep.secret, acks)
        inflight: deque[float] = deque()
        emptied = asyncio.Event()
        res = self.res
        reader = asyncio.create_task(self._ws_acks(ws, inflight, emptied))
        try:
            while self.sending:
                if len(inflight) >= self.plan.max_inflight_frames:
                    await asyncio.sleep(0.001)
                    continue
                frames: list[bytes] = []
                now = time.time()
                room = self.plan.max_inflight_frames - len(inflight)
                while len(frames) < room:
                    k = self.next_item
                    if not self.sched.closed and (
                        k >= self.sched.total_events or self.t0 + self.sched.due(k) > now
                    ):
                        break
                    item = self._take()
                    if item is None:
                        break
                    k, scheduled = item
                    body, n = self.tmpl.render(k, scheduled)
                    if k % self.probe_every == 0:
                        frames.append(ws_frame(self.probes.make(scheduled)[1]))
                        inflight.append(scheduled)
                        res.events_sent += 1
                    frames.append(ws_frame(body))
                    inflight.append(scheduled)
                    res.events_sent += n
                    self._lag(scheduled)
                if not frames:
                    if self.stop_flag() or (
                        not self.sched.closed and self.next_item >= self.sched.total_events
                    ):
                        self.sending = False
                        break
                    await asyncio.sleep(0.0005)
                    continue
                res.requests += len(frames)
                ws.write(b"".join(frames))
                await ws.drain()
            if inflight and not reader.done():
                emptied.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(emptied.wait(), self.plan.drain_s)
            res.errors += len(inflight)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await ws.close()

    async def _ws_acks(
        self, ws: WsConnection, inflight: deque[float], emptied: asyncio.Event
    ) -> None:
        res = self.res
        while True:
            try:
                opcode, payload = await ws.read()
            except (asyncio.IncompleteReadError, OSError, WireError) as err:
                res.last_error = f"websocket closed: {err}"
                return
            if opcode == 0x8:
                res.last_error = f"websocket closed by server: {payload[2:200]!r}"
                return
            try:
                msg = ack_decoder.decode(payload)
            except msgspec.DecodeError:
                continue
            acked = msg.get("ack")
            now = time.time()
            if isinstance(acked, list):
                res.events_accepted += len(acked)
                for _ in range(min(len(acked), len(inflight))):
                    res.ack_ms.append((now - inflight.popleft()) * 1e3)
            elif msg.get("error") == "slow_down":  # shed: counted, not an error
                ids = msg.get("ids") or []
                res.shed += len(ids)
                res.shed_requests += 1
                self.probes.drop(ids)
                if inflight:
                    inflight.popleft()
            elif "error" in msg:
                res.rejected += 1
                res.last_error = str(msg)[:200]
                if inflight:
                    inflight.popleft()
            if not inflight:
                emptied.set()

    # ---- the run ------------------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            r = self.res
            self.progress.put(("progress", self.plan.worker, time.time(), r.events_sent,
                               r.events_accepted, r.errors + r.rejected, len(self.probes.done)))  # fmt: skip
            await asyncio.sleep(PROGRESS_EVERY_S)

    async def run(self, t0: float) -> WorkerResult:
        self.t0 = t0
        self.res.started_at = t0
        await asyncio.sleep(max(0.0, t0 - time.time()))
        stop_probes = asyncio.Event()
        poller = asyncio.create_task(self.probes.poll(stop_probes, self.plan.drain_s))
        reporter = asyncio.create_task(self._report())
        tasks = []
        if self.plan.burst is not None:
            tasks.append(asyncio.create_task(self._burst()))
        if self.plan.transport in WS_TRANSPORTS:
            tasks += [asyncio.create_task(self._ws_conn()) for _ in range(self.plan.connections)]
        else:
            tasks += [asyncio.create_task(self._http_loop()) for _ in range(self.plan.connections)]
        for t in tasks:
            try:
                await t
            except (OSError, WireError) as err:
                self.res.errors += 1
                self.res.last_error = f"{type(err).__name__}: {err}"
        self.res.sent_until = time.time()
        self.progress.put(("sent", self.plan.worker))  # the parent may flush the watermark now
        stop_probes.set()
        await poller
        reporter.cancel()
        self.res.probe_ms = self.probes.done
        self.res.probes_lost = len(self.probes.pending)
        self.res.last_error = self.res.last_error or self.probes.error
        await self.probes.close()
        return self.res


def worker_main(
    plan: Plan, progress: mp.Queue, go: mp.Event, start_at: mp.Value, stop: mp.Event
) -> None:
    """Process entry: render templates, say ready, wait for the start signal, run, report."""
    try:
        worker = _Worker(plan, progress, stop.is_set)
        progress.put(("ready", plan.worker, worker.tmpl.events_per_cycle))
        go.wait()
        result = uvloop.run(worker.run(start_at.value))
        progress.put(("result", plan.worker, result))
    except BaseException as err:  # reported to the parent, which decides
        progress.put(("failed", plan.worker, f"{type(err).__name__}: {err}"))
        raise


@dataclass(slots=True)
class Progress:
    """The latest counters of every worker, summed."""

    sent: dict[int, int] = field(default_factory=dict)
    accepted: dict[int, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    probes: dict[int, int] = field(default_factory=dict)

    def totals(self) -> tuple[int, int, int, int]:
        return (sum(self.sent.values()), sum(self.accepted.values()),
                sum(self.errors.values()), sum(self.probes.values()))  # fmt: skip


class LoadRun:
    """Start worker processes for `plans`, then poll() until done, then results()."""

    READY_TIMEOUT_S = 120.0

    def __init__(self, plans: list[Plan]) -> None:
        ctx = mp.get_context("spawn")
        self.plans = plans
        self.q: mp.Queue = ctx.Queue()
        self.go = ctx.Event()
        self.stop_ev = ctx.Event()
        self.start_at = ctx.Value("d", 0.0)
        self.procs = [
            ctx.Process(
                target=worker_main,
                args=(p, self.q, self.go, self.start_at, self.stop_ev),
                name=f"rally-loadgen-{p.worker}",
                daemon=True,
            )
            for p in plans
        ]
        self.progress = Progress()
        self.results: dict[int, WorkerResult] = {}
        self.failures: dict[int, str] = {}
        self.sent: set[int] = set()
        """Workers that have sent everything (they may still wait for their probes)."""
        self.t0 = 0.0

    def start(self) -> float:
        """Start the processes, wait until all are ready, give the start signal; the t0."""
        for p in self.procs:
            p.start()
        ready: set[int] = set()
        deadline = time.time() + self.READY_TIMEOUT_S
        while len(ready) < len(self.procs):
            try:
                msg = self.q.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                self.kill()
                raise RuntimeError("load generators did not get ready in time") from None
            if msg[0] == "ready":
                ready.add(msg[1])
            elif msg[0] == "failed":
                self.kill()
                raise RuntimeError(f"load generator {msg[1]} failed: {msg[2]}")
        self.t0 = time.time() + 0.2
        self.start_at.value = self.t0
        self.go.set()
        return self.t0

    def stop(self) -> None:
        """Ask the workers to stop sending early (they still finish their probes)."""
        self.stop_ev.set()

    def poll(self, timeout_s: float = 0.0) -> bool:
        """Take in what the workers said; True once every worker has finished."""
        deadline = time.time() + timeout_s
        while True:
            try:
                msg = self.q.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                break
            kind, w = msg[0], msg[1]
            pr = self.progress
            if kind == "progress":
                _, _, _, pr.sent[w], pr.accepted[w], pr.errors[w], pr.probes[w] = msg
            elif kind == "sent":
                self.sent.add(w)
            elif kind == "result":
                self.sent.add(w)
                self.results[w] = msg[2]
            elif kind == "failed":
                self.failures[w] = msg[2]
            if time.time() >= deadline:
                break
        for p in self.procs:
            if not p.is_alive() and p.exitcode not in (0, None) and p.pid is not None:
                idx = self.procs.index(p)
                self.failures.setdefault(idx, f"exit code {p.exitcode}")
        return len(self.results) + len(self.failures) >= len(self.procs)

    @property
    def all_sent(self) -> bool:
        """Every worker has sent everything it will send (or has stopped)."""
        return len(self.sent | set(self.failures)) >= len(self.procs)

    def join(self) -> None:
        for p in self.procs:
            p.join(timeout=10)
        self.kill()

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]
