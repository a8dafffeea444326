"""The bench: one load run against Rallypoint or a baseline, measured; helpers for scenarios."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import redis
from rich.console import Console, Group
from rich.live import Live

from actors.client import backlog, flush, held
from actors.latency import histogram_percentiles
from benchmarks.loadgen import LoadRun
from benchmarks.plan import Burst, Endpoint, Phase, Plan, Traffic
from benchmarks.procs import ProcessSampler
from benchmarks.report import (
    histogram_delta,
    percentiles,
    run_row,
    runs_table,
)
from benchmarks.target import BaselineServer, PatientRedis, Rally, read_counters, read_latency
from gateway.signing import signed_headers
from gateway.simulator import channel_name

SAMPLE_S = 0.5
DRAIN_TIMEOUT_S = 60.0
QUIET_SAMPLES = 3
"""The pipeline has drained when its counters held still for this many samples."""
MAX_CONNECTIONS = 128
"""Most connections one generator process opens."""
OPEN_LOOP_SLOW_S = 0.25


@dataclass(frozen=True, slots=True)
class Options:
    """What `rally bench` was asked for (see its --help)."""

    scenarios: tuple[str, ...]
    out: Path
    duration_s: float = 20.0
    rate: float = 50_000.0
    channels: int = 500
    members: int = 50_000
    batch: int = 100
    seed: int = 1
    generators: int = 2
    baselines: bool = True
    peak_start_rate: float = 20_000.0
    peak_max_rate: float = 500_000.0
    peak_step_s: float = 4.0
    raid_viewers: int = 100_000
    raid_over_s: float = 3.0
    watch_sizes: tuple[int, ...] = (100_000, 1_000_000)
    batch_sizes: tuple[int, ...] = (1, 100, 1_000)
    batch_duration_s: float = 8.0
    memory_members: int = 100_000
    soak_s: float = 60.0
    soak_rate: float = 20_000.0
    soak_sample_s: float = 5.0
    soak_warmup_s: float = 15.0
    overload_s: float = 20.0
    overload_rate: float = 0.0
    """Events/s offered in overload; 0 = twice the capacity measured."""
    overload_max_lag_s: float = 2.0
    draw_tickets: int = 1_000_000
    draw_members: int = 100_000
    draw_repeats: int = 3
    kpis_rows: int = 10_000_000
    """Ledger rows generated for the kpis scenario's KPI report ..."""
    kpis_sink_rows: int = 1_000_000
    """... and rows (ledger, then events) pushed through the sink's append."""
    feed_clients: int = 1_000
    """Feed WebSockets connected in the feed scenario."""
    feed_messages: int = 200
    """Notices appended in the feed scenario (each reaches every client)."""
    spend_rate: float = 1_000.0
    """Spends/s submitted in the spend scenario ..."""
    spend_credit_rate: float = 20_000.0
    """... while this many events/s are offered for crediting."""
    spend_members: int = 1_000
    payouts: int = 5_000
    """Payouts in the payouts scenario (chain mints and cashback webhooks)."""
    payout_batch: int = 200
    """Payouts per mintBatch in the payouts scenario."""
    import_members: int = 1_000_000
    """Opening balances imported by the import scenario (`rally import`)."""
    url: str | None = None
    runtime: Path | None = None
    config: Path | None = None


@dataclass(slots=True)
class Bench:
    """Everything a scenario needs: the target, the baselines, Redis, sampling, display."""

    opts: Options
    rally: Rally
    console: Console
    results: dict[str, Any]
    live: Live | None = None
    panel: Any = None
    """A renderable a scenario shows below the runs table while it runs (None: nothing)."""
    baselines: dict[str, BaselineServer] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    runs: int = 0
    r: PatientRedis = field(init=False)
    sampler: ProcessSampler = field(init=False)

    def __post_init__(self) -> None:
        self.r = self.rally.client()
        roots = [p for p in (self.rally.pid,) if p]
        workers = {p: "gateway worker" for p in self.rally.gateway_pids if p != self.rally.pid}
        self.sampler = ProcessSampler(roots, gateway_pid=self.rally.pid, extra=workers)

    # ---- targets --------------------------------------------------------------------------

    def baseline(self, mode: str) -> BaselineServer:
        found = self.baselines.get(mode)
        if found is None:
            log = self.opts.out / f"baseline-{mode}.log"
            found = self.baselines[mode] = BaselineServer.start(mode, self.rally, log)
            self.sampler.extra[found.proc.pid] = f"baseline-{mode}"
        return found

    def endpoint(self, target: str) -> Endpoint:
        return self.rally.endpoint() if target == "rally" else self.baseline(target).endpoint()

    def close(self) -> None:
        for b in self.baselines.values():
            b.stop(self.r.client)
        self.baselines.clear()
        self.r.close()

    def counters(self) -> dict[str, int]:
        return read_counters(self.r, self.rally.keys)

    def release_held(self) -> bool:
        """Once every stream is drained, move the watermark past what the shards hold back,
        as `rally audit` does: the last `lateness_s` of a run is applied now rather than when
        the next load moves event time on. True if a flush was appended."""
        cfg, keys, r = self.rally.runtime, self.rally.keys, self.r.client
        if self.r.call(backlog, r, keys, cfg) or not self.r.call(held, r, keys, cfg):
            return False
        return self.r.call(flush, r, keys, cfg) is not None

    def idle(self) -> bool:
        """Every stream's consumer groups have applied and acknowledged all that was
        appended, and no shard holds anything back: exact, where counters holding still
        for a while (`settled`) is only a sign."""
        cfg, keys, r = self.rally.runtime, self.rally.keys, self.r.client
        return not self.r.call(backlog, r, keys, cfg) and not self.r.call(held, r, keys, cfg)

    def show(self, current: list[str] | None = None) -> None:
        if self.live is not None:
            parts = [runs_table(self.results, current)]
            if self.panel is not None:
                parts.append(self.panel)
            self.live.update(Group(*parts))

    def traffic(self, scenario: str, target: str, **kw: Any) -> Traffic:
        """The scenario's traffic: the same events for every target, but ids of its own run."""
        self.runs += 1
        base = Traffic(
            network=self.rally.config.network,
            channels=self.opts.channels,
            members=self.opts.members,
            seed=self.opts.seed,
            run_id=f"{scenario}-{target}-{self.runs}-{self.token}",
            channel_prefix=f"{scenario}-ch",
        )
        return replace(base, **kw)

    def end_streams(self, network: str, channels: list[str], run_id: str) -> None:
        """Take a run's channels offline, so the wall-clock watch ticks stop paying them
        while later runs are measured."""
        now = time.time()
        for lo in range(0, len(channels), 5_000):
            post_events(self, [
                {"kind": "offline", "id": f"{run_id}.off.{i}", "network": network,
                 "channel": ch, "ts": now}
                for i, ch in enumerate(channels[lo : lo + 5_000], start=lo)
            ])  # fmt: skip

    # ---- one load run ---------------------------------------------------------------------

    def run_load(
        self,
        scenario: str,
        label: str,
        target: str,
        phases: tuple[Phase, ...],
        *,
        batch: int,
        transport: str = "http",
        connections: int | None = None,
        burst: Burst | None = None,
        traffic: Traffic | None = None,
        on_sample: Callable[[float, dict[str, int]], dict[str, Any] | None] | None = None,
        endpoint: Endpoint | None = None,
    ) -> dict[str, Any]:
        """Drive `target` with `phases` from generator processes; measure; return the run.
        `endpoint`: send there instead (another gateway of the same deployment)."""
        opts = self.opts
        workers = max(1, opts.generators)
        conns = connections or _connections(phases, batch, workers)
        traffic = traffic or self.traffic(scenario, target)
        plans = [
            Plan(
                endpoint or self.endpoint(target),
                traffic,
                phases,
                transport=transport,
                batch_size=batch,
                connections=conns,
                burst=burst,
                worker=w,
                workers=workers,
                max_inflight_frames=self.rally.config.max_ws_inflight_frames,
            )
            for w in range(workers)
        ]
        is_rally = target == "rally"
        if is_rally:  # what set-up posted (e.g. channels going online) is not this run's
            wait_drained(self)
        c0 = self.counters() if is_rally else {}
        lat0 = read_latency(self.r, self.rally.keys) if is_rally else {}
        held0 = slow_reset(self.r) if is_rally else {}
        run = LoadRun(plans)
        series: list[dict[str, Any]] = []
        extra_series: list[dict[str, Any]] = []
        try:
            t0 = run.start()
            for w, pid in enumerate(run.pids):
                self.sampler.extra[pid] = f"loadgen-{w}"
            self.sampler.reset()
            send_s = sum(p.duration_s for p in phases)
            hard_deadline = t0 + send_s + DRAIN_TIMEOUT_S + 60
            sent_by = t0 + send_s + max(p.grace_s for p in plans)
            while True:
                finished = run.poll(SAMPLE_S)
                now = time.time()
                # once every generator has sent all it will (or its grace is over), they
                # wait only for their last probes: apply what shards hold back (README,
                # "Event time") rather than wait out the grace too
                if is_rally and (now > sent_by or run.all_sent):
                    self.release_held()
                self.sampler.sample()
                sent, accepted, errors, _ = run.progress.totals()
                client = {"sent": sent, "accepted": accepted, "errors": errors}
                point = self._point(now - t0, client, c0 if is_rally else None)
                series.append(point)
                if on_sample is not None:
                    extra = on_sample(now - t0, point)
                    if extra is not None:
                        extra_series.append(extra)
                        if extra.get("stop"):
                            run.stop()
                            sent_by = min(sent_by, now)
                self.show([scenario, *self._live_cells(label, series)])
                if finished:
                    break
                if now > hard_deadline:
                    run.stop()
                    run.kill()
                    break
        except BaseException:
            run.kill()
            raise
        finally:
            run.join()
        for pid in run.pids:
            self.sampler.extra.pop(pid, None)
        if is_rally:
            series += self._drain(t0, c0, series)
        wall = time.time() - t0
        result = self._summarize(label, target, transport, batch, phases, run, series, wall)
        if is_rally:
            lat1 = read_latency(self.r, self.rally.keys)
            delta = histogram_delta(lat1, lat0)
            max_ms = lat1.get("max_ms") if lat1.get("max_ms", 0) > lat0.get("max_ms", 0) else None
            result["latency_ingest_to_credit_ms"] = histogram_percentiles(delta, max_ms)
            result["redis_slow"] = slow_commands(self.r, held0)
        result["processes"] = self.sampler.report()
        if is_rally and result.get("events_applied"):
            result["cpu_us_per_event"] = cpu_per_event(
                self.sampler.cpu_by_role(exclude=("loadgen", "baseline")), result["events_applied"]
            )
        if extra_series:
            result["extra_series"] = extra_series
        if is_rally:
            names = [channel_name(i, traffic.channels, traffic.channel_prefix)
                     for i in range(traffic.channels)]  # fmt: skip
            self.end_streams(traffic.network, names, traffic.run_id)
        return result

    def _point(self, t: float, client: dict[str, int], c0: dict[str, int] | None) -> dict[str, Any]:
        """One sample: the client's totals and (for Rallypoint) its counters since `c0`."""
        c = self.counters() if c0 is not None else {}
        since = c0 or {}
        return {"t": t, **client, **{k: c.get(k, 0) - since.get(k, 0) for k in PIPELINE}}

    def _live_cells(self, label: str, series: list[dict[str, Any]]) -> list[str]:
        if len(series) < 2:
            return [label, *[""] * 8]
        a, b = series[-2], series[-1]
        dt = max(1e-6, b["t"] - a["t"])
        rate = {
            k: (b[k] - a[k]) / dt for k in ("sent", "accepted", "events_applied", "credits_applied")
        }
        run = {
            "label": f"{label} ({b['t']:.0f}s)",
            "offered_eps": rate["sent"],
            "accepted_eps": rate["accepted"],
            "credited_eps": rate["events_applied"] or None,
            "credits_per_s": rate["credits_applied"] or None,
            "errors": b["errors"],
        }
        return run_row("", run)[1:]

    def _drain(
        self, t0: float, c0: dict[str, int], series: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Sample until the pipeline has applied what it accepted: idle, or the counters
        held still."""
        out: list[dict[str, Any]] = []
        last = series[-1] if series else {}
        client = {k: last.get(k, 0) for k in ("sent", "accepted", "errors")}
        quiet = 0
        flushed = False
        deadline = time.time() + DRAIN_TIMEOUT_S
        while time.time() < deadline and quiet < QUIET_SAMPLES:
            time.sleep(SAMPLE_S)
            flushed = flushed or self.release_held()
            self.sampler.sample()  # the CPU window runs until the last event is applied
            point = self._point(time.time() - t0, client, c0)
            quiet = quiet + 1 if settled(last, point) else 0
            out.append(point)
            last = point
            if caught_up(point) and self.idle():
                break
            self.show(["", *self._live_cells("draining", [*series, *out][-2:])])
        return out

    def _summarize(
        self,
        label: str,
        target: str,
        transport: str,
        batch: int,
        phases: tuple[Phase, ...],
        run: LoadRun,
        series: list[dict[str, Any]],
        wall: float,
    ) -> dict[str, Any]:
        res = list(run.results.values())
        sent = sum(r.events_sent for r in res)
        accepted = sum(r.events_accepted for r in res)
        send_s = max((r.sent_until - r.started_at for r in res), default=wall) or wall
        closed = any(p.rate_per_s <= 0 for p in phases)
        out: dict[str, Any] = {
            "label": label,
            "target": target,
            "transport": transport,
            "batch": batch,
            "closed_loop": closed,
            "target_eps": None
            if closed
            else round(
                sum(p.rate_per_s * p.duration_s for p in phases)
                / sum(p.duration_s for p in phases),
                1,
            ),
            "duration_s": round(send_s, 2),
            "events_sent": sent,
            "events_accepted": accepted,
            "offered_eps": round(sent / send_s, 1),
            "accepted_eps": round(accepted / send_s, 1),
            "errors": sum(r.errors + r.rejected for r in res),
            "events_shed": sum(r.shed for r in res),
            "requests_shed": sum(r.shed_requests for r in res),
            "failures": dict(run.failures),
            "last_error": next((r.last_error for r in res if r.last_error), ""),
            "client_max_lag_ms": round(max((r.max_lag_ms for r in res), default=0.0), 1),
            "latency_e2e_ms": percentiles(x for r in res for x in r.probe_ms),
            "latency_ack_ms": percentiles(x for r in res for x in r.ack_ms),
            "probes_lost": sum(r.probes_lost for r in res),
        }
        bursts = [r for r in res if r.burst_events]
        if bursts:
            out["burst_events"] = sum(r.burst_events for r in bursts)
            out["burst_done_after_s"] = round(
                max(r.burst_done_at - r.started_at for r in bursts), 2
            )
        if target == "rally" and series:
            final = series[-1]
            applied = final["events_applied"] + final["events_dup"]
            t_applied = next(
                p["t"] for p in series if p["events_applied"] + p["events_dup"] >= applied
            )
            t_credits = next(
                p["t"] for p in series if p["credits_applied"] >= final["credits_applied"]
            )
            out.update(
                events_in=final["events_in"],
                events_applied=final["events_applied"],
                events_dup=final["events_dup"],
                credits_applied=final["credits_applied"],
                credited_eps=round(applied / max(t_applied, 1e-6), 1),
                credits_per_s=round(final["credits_applied"] / max(t_credits, 1e-6), 1),
                drained_after_s=round(t_applied - send_s, 2),
            )
        else:
            out.update(credited_eps=out["accepted_eps"], credits_per_s=None)
        out["series"] = _rates(series, is_rally=target == "rally")
        return out


PIPELINE = ("events_in", "events_applied", "events_dup", "credits_applied")
"""The counters of {ns}:stats a run follows."""


def settled(prev: dict[str, Any], cur: dict[str, Any]) -> bool:
    """The pipeline applied everything it accepted, the ledger projectors projected every
    ledger entry (so a figure measured next is not behind their backlog), and nothing moved
    since `prev`."""
    keys = ("events_applied", "credits_applied", "entries_projected")
    still = all(cur.get(k) == prev.get(k) for k in keys)
    return caught_up(cur) and still


def caught_up(cur: dict[str, Any]) -> bool:
    """The pipeline applied everything it accepted and the ledger projectors projected every
    ledger entry, by the counters."""
    return cur.get("events_applied", 0) + cur.get("events_dup", 0) >= cur.get(
        "events_in", 0
    ) and cur.get("entries_projected", 0) >= cur.get("entries", 0)


def cpu_per_event(cpu_s: dict[str, float], events: int) -> dict[str, float]:
    """Microseconds of CPU per applied event, by role, most first, and `all` of them: what a
    run's events cost the machine, whatever the wall time (2 cores crediting 250,000
    events/s leave 8 µs for everything)."""
    us = {role: round(s * 1e6 / events, 2) for role, s in cpu_s.items()}
    out = dict(sorted(((r, v) for r, v in us.items() if v >= 0.01), key=lambda kv: -kv[1]))
    out["all"] = round(sum(cpu_s.values()) * 1e6 / events, 2)
    return out


def _connections(phases: tuple[Phase, ...], batch: int, workers: int) -> int:
    """Connections per generator: closed loop, enough to saturate; open loop, enough that a
    slow answer (up to OPEN_LOOP_SLOW_S) never holds back the schedule."""
    if any(p.rate_per_s <= 0 for p in phases):
        return 64 if batch == 1 else 8 if batch <= 100 else 4
    peak_requests = max(p.rate_per_s for p in phases) / workers / batch
    return max(4, min(MAX_CONNECTIONS, math.ceil(peak_requests * OPEN_LOOP_SLOW_S)))


def _rates(series: list[dict[str, Any]], is_rally: bool) -> dict[str, list[Any]]:
    """Per-interval rates from cumulative counters, for the throughput plot."""
    t, offered, accepted, credited, credits = [], [], [], [], []
    for a, b in itertools.pairwise(series):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        t.append(round(b["t"], 2))
        offered.append(round((b["sent"] - a["sent"]) / dt))
        accepted.append(round((b["accepted"] - a["accepted"]) / dt))
        if is_rally:
            done_a = a["events_applied"] + a["events_dup"]
            credited.append(round((b["events_applied"] + b["events_dup"] - done_a) / dt))
            credits.append(round((b["credits_applied"] - a["credits_applied"]) / dt))
        else:
            credited.append(accepted[-1])
            credits.append(None)
    return {
        "t": t,
        "offered": offered,
        "accepted": accepted,
        "credited": credited,
        "credits": credits,
    }


# ---- helpers for scenarios that post by hand ---------------------------------------------------


def post_events(bench: Bench, events: list[dict[str, Any]], timeout_s: float = 120.0) -> int:
    """POST one batch synchronously; the number accepted (raises on an error answer). While
    the gateway sheds load (503 + Retry-After) the batch is sent again, within `timeout_s`."""
    cfg = bench.rally.config
    body = msgspec.json.encode({"events": events})
    deadline = time.time() + timeout_s
    while True:
        headers = {"Content-Type": "application/json",
                   **signed_headers(cfg.key, cfg.secret, body)}  # fmt: skip
        req = urllib.request.Request(bench.rally.url + "/v1/events", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return int(msgspec.json.decode(resp.read()).get("accepted", len(events)))
        except urllib.error.HTTPError as err:
            answer = err.read()[:300]
            retry_s = float(err.headers.get("Retry-After") or 0)
            if err.code != 503 or not retry_s or time.time() + retry_s > deadline:
                raise RuntimeError(f"POST /v1/events answered {err.code}: {answer!r}") from err
            time.sleep(retry_s)


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> float | None:
    """Seconds until `check()` held, or None on timeout."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if check():
            return time.time() - t0
        time.sleep(every_s)
    return None


def wait_drained(bench: Bench, timeout_s: float = DRAIN_TIMEOUT_S, *, exact: bool = False) -> bool:
    """The pipeline has applied everything accepted: idle, or (unless `exact`) its counters
    held still. `exact` also waits for the ledger sink's archive, which no counter shows."""
    last: dict[str, int] = {}
    quiet = 0
    flushed = False
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        flushed = flushed or bench.release_held()
        c = bench.counters()
        quiet = quiet + 1 if settled(last, c) else 0
        if (quiet >= QUIET_SAMPLES and not exact) or (caught_up(c) and bench.idle()):
            return True
        last = c
        time.sleep(0.2)
    return False


def sut_rss(bench: Bench) -> dict[str, int]:
    """Resident bytes of Rallypoint's processes (gateway, Ray, redis-server), now, by role."""
    bench.sampler.reset()
    return bench.sampler.rss_by_role(exclude=("loadgen", "baseline"))


SLOW_US = 10_000
"""What Redis' slow log records: single commands (a script among them) that held the
single-threaded server for longer than this (the issue's "~10 ms"). EXEC is not in the slow
log (Redis logs the commands inside a transaction one by one): `held_over` counts it."""
HELD = ("exec", "evalsha", "eval", "fcall")
"""The commands that hold Redis for a whole transaction or script."""
HELD_BOUND_US = 8_454
"""The bound of Redis' LATENCY HISTOGRAM bucket just under 10 ms: a call counted above it
took more than ~8.5 ms (the buckets double: the next bound is 16,908 us)."""


def latency_histograms(r: redis.Redis) -> dict[str, dict[int, int]]:
    """Redis' LATENCY HISTOGRAM (7.0 or newer) of the HELD commands: command -> {bucket
    bound in us: calls at or under it, cumulative}; {} where Redis has none."""
    try:
        got = r.execute_command("LATENCY", "HISTOGRAM", *HELD)
    except redis.RedisError:
        return {}
    out: dict[str, dict[int, int]] = {}
    for name, body in (got or {}).items():
        hist = body.get(b"histogram_usec") or {}
        out[name.decode()] = {int(k): int(v) for k, v in hist.items()}
    return out


def held_over(
    before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]
) -> dict[str, Any]:
    """Transactions and scripts since `before` that held Redis over HELD_BOUND_US: how many,
    the upper bound (ms) of the longest one's bucket and which command it was."""
    over, longest, which = 0, 0, ""
    for name, hist in after.items():
        base = before.get(name, {})
        calls_before = max(base.values(), default=0)

        def cum(bound: int, h: dict[int, int]) -> int:
            below = [v for k, v in h.items() if k <= bound]
            return max(below, default=0)

        total = max(hist.values(), default=0) - calls_before
        under = cum(HELD_BOUND_US, hist) - cum(HELD_BOUND_US, base)
        over += total - under
        grew = [k for k, v in hist.items() if v > cum(k, base) and k > HELD_BOUND_US]
        if grew and max(grew) > longest:
            longest, which = max(grew), name.upper()
    return {"over_10ms": over, "longest_ms": round(longest / 1000, 1) if longest else None,
            "longest": which}  # fmt: skip


def slow_reset(r: PatientRedis) -> dict[str, dict[int, int]]:
    """Empty Redis' slow log and make it record every command over SLOW_US (a Redis that
    refuses CONFIG keeps its own threshold); returns the held commands' histograms now."""
    with contextlib.suppress(redis.RedisError):
        r.call(r.client.config_set, "slowlog-log-slower-than", SLOW_US)
        r.call(r.client.config_set, "slowlog-max-len", 1024)
    with contextlib.suppress(redis.RedisError):
        r.call(r.client.slowlog_reset)
    return r.call(latency_histograms, r.client)


def slow_commands(r: PatientRedis, held_before: dict[str, dict[int, int]]) -> dict[str, Any]:
    """Since slow_reset: the transactions and scripts that held Redis over ~10 ms
    (`held_over`), and the single commands in the slow log: how many, the longest (ms)."""
    held = held_over(held_before, r.call(latency_histograms, r.client))
    try:  # raw: the logged arguments are binary blobs (cut at 128 bytes), not text
        got = r.call(r.client.execute_command, "SLOWLOG", "GET", 1024)
    except redis.RedisError:
        return held
    held["commands_over_10ms"] = len(got or [])
    if got:
        top = max(got, key=lambda e: int(e[2]))  # [id, time, duration us, [args], ...]
        name = top[3][0] if top[3] else b""
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        held["command_longest_ms"] = round(int(top[2]) / 1000, 1)
        held["command_longest"] = name
    return held
