"""The scenarios: each drives the bench and returns its outcome (status, runs, summary)."""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import psutil

from actors.redisconn import hmget
from benchmarks.bench import (
    SAMPLE_S,
    Bench,
    post_events,
    sut_rss,
    wait_drained,
    wait_until,
)
from benchmarks.draw import draw_scenario
from benchmarks.feed import feed_scenario
from benchmarks.kpis import kpis_scenario
from benchmarks.migration import import_scenario
from benchmarks.overload import overload
from benchmarks.payouts import payouts
from benchmarks.plan import Burst, Phase
from benchmarks.report import SMOOTH_SAMPLES, smooth
from benchmarks.retained import families
from benchmarks.soak import soak
from benchmarks.spend import spend
from benchmarks.target import redis_memory
from gateway.simulator import channel_name

MAX_SNAPSHOT_VIEWERS = 100_000
"""Viewers per `viewers` event in watch-tick (keeps a body well under 4 MiB)."""


Scenario = Callable[[Bench], dict[str, Any]]


def steady(b: Bench) -> dict[str, Any]:
    """A sustained chat + presence mix at --rate, through Rallypoint and both baselines.
    Every event waits in its channel shard for the allowed lateness (`lateness_s`, 2 s by
    default: events apply in event-time order) before it is credited: the summary says how
    long, since no ingest->credit latency can be below it."""
    o = b.opts
    phases = (Phase(o.duration_s, o.rate),)
    runs = [b.run_load("steady", f"rally http batch {o.batch}", "rally", phases, batch=o.batch)]
    if o.baselines:
        for mode in ("naive", "strong"):
            runs.append(b.run_load("steady", f"{mode} baseline", mode, phases, batch=o.batch))
    rally = runs[0]
    summary: dict[str, Any] = {
        "target_eps": o.rate,
        "lateness_s": b.rally.config.lateness_s,
        "rally_credited_eps": rally["credited_eps"],
        "rally_e2e_p99_ms": (rally["latency_e2e_ms"] or {}).get("p99"),
        "rally_ingest_to_credit_p99_ms": (rally["latency_ingest_to_credit_ms"] or {}).get("p99"),
    }
    for run in runs[1:]:
        summary[f"ratio_vs_{run['target']}"] = _ratio(rally["credited_eps"], run["credited_eps"])
    return {"status": "ok", "runs": runs, "summary": summary}


def peak(b: Bench) -> dict[str, Any]:
    """Ramp the rate in steps until Rallypoint falls behind; report the saturation point."""
    o = b.opts
    rates: list[float] = []
    r = o.peak_start_rate
    while r < o.peak_max_rate:
        rates.append(r)
        r *= 1.5
    rates.append(o.peak_max_rate)
    phases = tuple(Phase(o.peak_step_s, x) for x in rates)
    state = {"behind_since": None}

    def watch(t: float, point: dict[str, Any]) -> dict[str, Any] | None:
        step = min(int(t // o.peak_step_s), len(rates) - 1)
        backlog = point["events_in"] - point["events_applied"] - point["events_dup"]
        behind = backlog > 2 * rates[step] or point["sent"] < 0.7 * _due(phases, t)
        if behind and state["behind_since"] is None:
            state["behind_since"] = t
        elif not behind:
            state["behind_since"] = None
        stop = state["behind_since"] is not None and t - state["behind_since"] > 2 * o.peak_step_s
        return {"t": round(t, 2), "step_rate": rates[step], "backlog": backlog, "stop": stop}

    run = b.run_load("peak", f"rally ramp batch {o.batch}", "rally", phases, batch=o.batch,
                     on_sample=watch)  # fmt: skip
    steps = _step_rates(run["series"], rates, o.peak_step_s)
    credited = run["series"]["credited"]
    sustained = [s for s in steps if s["credited_eps"] >= 0.9 * s["offered_target_eps"]]
    saturation = max((s["offered_target_eps"] for s in sustained), default=None)
    smoothed = smooth(credited, SMOOTH_SAMPLES)[SMOOTH_SAMPLES - 1 :] or smooth(credited, 1)
    summary = {
        "saturation_eps": saturation,
        "best_step_credited_eps": max((s["credited_eps"] for s in steps), default=0),
        "best_credited_eps_2s": round(max(smoothed, default=0)),
        "steps": len(steps),
    }
    run["steps"] = steps
    where = (
        f"≈ {saturation:,.0f} events/s (the highest step credited at ≥90% of its rate)"
        if saturation is not None
        else f"below the first step ({rates[0]:,.0f} events/s)"
    )
    lines = [f"saturation {where}; best step credited {summary['best_step_credited_eps']:,}/s, "
             f"best over 2 s {summary['best_credited_eps_2s']:,}/s"]  # fmt: skip
    return {"status": "ok", "runs": [run], "summary": summary, "lines": lines}


def _due(phases: tuple[Phase, ...], t: float) -> float:
    total, start = 0.0, 0.0
    for p in phases:
        span = min(max(t - start, 0.0), p.duration_s)
        total += span * p.rate_per_s
        start += p.duration_s
    return total


def _step_rates(
    series: dict[str, list[Any]], rates: list[float], step_s: float
) -> list[dict[str, Any]]:
    out = []
    for i, rate in enumerate(rates):
        lo, hi = i * step_s + 0.5, (i + 1) * step_s
        idx = [j for j, t in enumerate(series["t"]) if lo < t <= hi]
        if not idx:
            break
        sent = sum(series["offered"][j] for j in idx) / len(idx)
        credited = sum(series["credited"][j] for j in idx) / len(idx)
        out.append(
            {"offered_target_eps": rate, "sent_eps": round(sent), "credited_eps": round(credited)}
        )
    return out


def raid(b: Bench) -> dict[str, Any]:
    """--raid-viewers join one channel within --raid-over-s, over a steady background."""
    o = b.opts
    background = min(o.rate, 10_000.0)
    at_s = max(1.0, o.duration_s * 0.25)
    duration = max(o.duration_s, at_s + o.raid_over_s + 2)
    traffic = b.traffic("raid", "rally")
    channel = channel_name(0, traffic.channels, traffic.channel_prefix)
    presence_key = b.rally.keys.presence(f"{traffic.network}:{channel}")
    burst = Burst(at_s=at_s, joins=o.raid_viewers, over_s=o.raid_over_s, channel=0)

    def watch(t: float, point: dict[str, Any]) -> dict[str, Any]:
        return {"t": round(t, 2), "present": int(b.r.hlen(presence_key)),
                "backlog": point["events_in"] - point["events_applied"] - point["events_dup"]}  # fmt: skip

    run = b.run_load("raid", f"rally raid {o.raid_viewers:,} viewers", "rally",
                     (Phase(duration, background),), batch=o.batch, burst=burst,
                     traffic=traffic, on_sample=watch)  # fmt: skip
    present = run.get("extra_series", [])
    before = next((p["present"] for p in present if p["t"] >= at_s - SAMPLE_S), 0)
    peak_present = max((p["present"] for p in present), default=0)
    arrived = next(
        (p["t"] for p in present if p["present"] - before >= 0.99 * o.raid_viewers), None
    )
    summary = {
        "raid_viewers": o.raid_viewers,
        "over_s": o.raid_over_s,
        "present_before": before,
        "present_peak": max(peak_present, int(b.r.hlen(presence_key))),
        "all_present_after_s": round(arrived - at_s, 2) if arrived is not None else None,
        "raid_sent_in_s": round(run.get("burst_done_after_s", at_s) - at_s, 2),
        "background_e2e_p99_ms": (run["latency_e2e_ms"] or {}).get("p99"),
    }
    lines = [f"{o.raid_viewers:,} viewers joined within {o.raid_over_s:g} s (sent in "
             f"{summary['raid_sent_in_s']:g} s): all present after "
             f"{_secs(summary['all_present_after_s'])} from the raid's start"]  # fmt: skip
    return {"status": "ok", "runs": [run], "summary": summary, "lines": lines}


def watch_tick(b: Bench) -> dict[str, Any]:
    """Watch-time payout: N viewers present and live, then one tick; time until all credited.

    A size whose memory, extrapolated from the size before, would not fit in what the machine
    has free is skipped (and says so) rather than pushing a shared machine into swap or OOM.
    """
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    lines = []
    for size in b.opts.watch_sizes:
        done = [r for r in results if "payout_s" in r]
        need = done[-1]["bytes_per_member"] * size * MEMORY_MARGIN if done else 0
        free = psutil.virtual_memory().available
        if need > free:
            why = f"needs ~{need / 2**30:.1f} GB by extrapolation, {free / 2**30:.1f} GB free"
            results.append({"viewers": size, "skipped": why})
            lines.append(f"{size:,} viewers: skipped ({why})")
            continue
        try:
            r = _watch_once(b, size)
        except (RuntimeError, OSError) as err:  # one size failing keeps the others' figures
            results.append({"viewers": size, "failed": str(err)[:300]})
            lines.append(f"{size:,} viewers: failed: {str(err)[:300]}")
            continue
        results.append(r)
        summary[f"payout_{size}_s"] = r["payout_s"]
        summary[f"repeat_payout_{size}_s"] = r.get("repeat_payout_s")
        summary[f"bytes_per_member_{size}"] = r["bytes_per_member"]
        if r["payout_s"] is None:
            done = (f"not done within {WATCH_BUDGET_S:.0f} s: {r['verified']:,} of {size:,} "
                    f"balances moved by then")  # fmt: skip
        else:
            done = (f"every balance moved {_secs(r['payout_s'])} after the tick (the "
                    f"{WATCH_SAMPLE:,} sampled: {_secs(r['sample_paid_s'])}); the next tick, "
                    f"all already members: {_secs(r['repeat_payout_s'])} (sample "
                    f"{_secs(r['repeat_sample_paid_s'])})")  # fmt: skip
        lines.append(f"{size:,} viewers: {done}; presence set up in {_secs(r['setup_s'])}; "
                     f"{r['bytes_per_member']:,} B/member RSS")  # fmt: skip
    return {"status": "ok", "runs": [], "watch": results, "summary": summary, "lines": lines}


MEMORY_MARGIN = 1.5


def _secs(x: float | None) -> str:
    return "timed out" if x is None else f"{x:.2f} s"


WATCH_BUDGET_S = 120.0
"""How long one payout is waited for (the suite must stay within its 10 minutes)."""
WATCH_SAMPLE = 1_000
"""Viewers whose member state is polled to time a payout (all are checked once at the end)."""


def _watch_once(b: Bench, size: int) -> dict[str, Any]:
    """`size` fresh viewers present in channels (snapshots), then one watch tick paid, then
    (all of them members now) one more.

    Event time (README, "Event time"): the viewers join offline channels, which earn
    nothing, so however long the joining takes no tick pays them. Each payout then takes
    the channels live at least a second before the next boundary B and takes them offline
    again with events dated B + lateness + 0.05 s, posted as soon as the wall clock reaches
    that date: the watermark passes B, and the channels are offline before the next
    boundary, so exactly one tick is paid however long it takes (the scheduler's clock
    could pay it first only within those 0.05 s). Timed from that post until every viewer's
    balance moved (and, cheaper to poll, every sampled viewer's).
    """
    cfg = b.rally.config
    net = cfg.watch_network
    n_channels = math.ceil(size / MAX_SNAPSHOT_VIEWERS)
    names = [f"wt{size}-{b.token}-{i}" for i in range(n_channels)]
    per = math.ceil(size / n_channels)
    uids = [f"wt{size}.{b.token}.{i}" for i in range(size)]
    fields = [f"{net}:{u}" for u in uids]
    sample = fields[:: max(1, size // WATCH_SAMPLE)] + fields[-10:]
    b.show(["watch-tick", f"{size:,} viewers: joining", *[""] * 8])
    wait_drained(b, timeout_s=WATCH_BUDGET_S)
    rss0 = sut_rss(b)
    mem0 = redis_memory(b.r)
    setup_t0 = time.time()
    for ci, name in enumerate(names):
        viewers = [{"id": u} for u in uids[ci * per : (ci + 1) * per]]
        base = {"network": net, "channel": name, "ts": time.time()}
        post_events(b, [{**base, "kind": "offline", "id": f"{name}.off"},
                        {**base, "kind": "viewers", "id": f"{name}.v", "viewers": viewers}],
                    timeout_s=WATCH_BUDGET_S)  # the joins of a million may hold it back: wait  # fmt: skip

    def all_present() -> bool:
        pipe = b.r.pipeline(transaction=False)
        for name in names:
            pipe.hlen(b.rally.keys.presence(f"{net}:{name}"))
        return sum(b.r.call(pipe.execute)) >= size

    wait_drained(b)
    present_s = wait_until(all_present, timeout_s=max(60.0, size / 5_000), every_s=0.05)
    setup_s = time.time() - setup_t0
    b.show(["watch-tick", f"{size:,} viewers: paying", *[""] * 8])
    first = _pay_one_tick(b, names, "1", sample, fields)
    again = _pay_one_tick(b, names, "2", sample, fields) if first.all_s is not None else None
    wait_drained(b)
    rss1 = sut_rss(b)
    mem1 = redis_memory(b.r)
    b.end_streams(net, names, f"wt{size}-{b.token}")
    return {
        "viewers": size,
        "channels": n_channels,
        "setup_s": round(setup_s, 2),
        "all_present_after_s": round(present_s, 2) if present_s is not None else None,
        "sample_paid_s": _round(first.sample_s),
        "payout_s": _round(first.all_s),
        "repeat_sample_paid_s": _round(again.sample_s if again else None),
        "repeat_payout_s": _round(again.all_s if again else None),
        "verified": first.moved,
        "repeat_verified": again.moved if again else 0,
        "rss_delta_mb": round(_grown(rss0, rss1) / 2**20, 1),
        "redis_used_memory_delta_mb": round((mem1 - mem0) / 2**20, 1),
        "bytes_per_member": round(_grown(rss0, rss1) / max(1, first.moved)),
    }


class _Balance(msgspec.Struct, array_like=True):
    """The head of a stored engine.member.MemberState: enough to see its balance."""

    name: str
    balance: int


_balance = msgspec.msgpack.Decoder(_Balance)


class Paid(NamedTuple):
    sample_s: float | None
    """Seconds from the crossing post until every sampled viewer's balance moved."""
    all_s: float | None
    """... until every viewer's balance moved (None: not within WATCH_BUDGET_S)."""
    moved: int
    """Viewers whose balance moved by then."""


def _pay_one_tick(
    b: Bench, names: list[str], tag: str, sample: list[str], fields: list[str]
) -> Paid:
    """Take the (offline) channels live clear of a boundary B, then cross B with their
    `offline` (so no later tick pays them, whatever the scheduler's clock does while this
    one is paid); the time until every viewer's balance moved: the sample's (cheap to
    poll), then every viewer's credit applied (the member shards' counter)."""
    cfg = b.rally.config
    net, interval = cfg.watch_network, cfg.watch_network_interval_s
    mstate = b.rally.keys.mstate

    def post_all(kind: str, suffix: str, ts: float) -> None:
        post_events(b, [{"kind": kind, "id": f"{name}.{suffix}{tag}", "network": net,
                         "channel": name, "ts": ts} for name in names])  # fmt: skip

    def read(keys: list[str]) -> list[int]:
        """Balances (a member state is written before its first payout: stage A of the
        referral rules keeps what it saw). Packed by hiredis: polled every 20 ms while the
        tick is paid, redis-py's HMGET of the sample took ~1 ms of the shards' two cores."""
        return [0 if raw is None else _balance.decode(raw).balance
                for i in range(0, len(keys), 10_000)
                for raw in hmget(b.r, mstate, keys[i : i + 10_000])]  # fmt: skip

    # a tick before may still be in flight, or in the ledger sink's archive
    wait_drained(b, timeout_s=WATCH_BUDGET_S, exact=True)
    wait_drained(b)  # every tick before now is paid (a flush moves event time to now + 0.5 s)
    before = dict(zip(fields, read(fields), strict=True))
    credits0 = b.counters().get("credits_applied", 0)
    after = time.time() + 0.6
    while True:  # live at least a second before the next boundary, after the flush
        live_ts = time.time()
        boundary = (math.floor(live_ts / interval) + 1) * interval
        if live_ts > after and boundary - live_ts >= 1.0:
            break
        time.sleep(0.05)
    post_all("online", "on", live_ts)
    ts = boundary + cfg.lateness_s + 0.05
    while time.time() < ts:  # not dated ahead of the server clock
        time.sleep(0.01)
    t_send = time.time()
    post_all("offline", "tick", ts)

    def all_paid() -> bool:
        return all(v != before[k] for k, v in zip(sample, read(sample), strict=True))

    def applied() -> int:
        return b.counters().get("credits_applied", 0) - credits0

    sample_s = wait_until(all_paid, timeout_s=WATCH_BUDGET_S)
    # every viewer's one credit applied: the member shards count them in the commit that
    # makes the balances visible (reading a million balances while they commit would slow
    # what it measures); then, untimed, that every balance did move
    done = sample_s is not None and wait_until(
        lambda: applied() >= len(fields), timeout_s=WATCH_BUDGET_S - sample_s, every_s=0.02
    ) is not None  # fmt: skip
    all_s = time.time() - t_send if done else None
    moved = sum(v != before[k] for k, v in zip(fields, read(fields), strict=True))
    return Paid(sample_s, all_s if moved == len(fields) else None, moved)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def batches(b: Bench) -> dict[str, Any]:
    """Saturating (closed-loop) runs at each batch size, Rallypoint and both baselines; then
    WebSocket one event per frame, acked frame by frame and in bulk (acks=bulk); then
    resident memory per --memory-members new members."""
    o = b.opts
    phases = (Phase(o.batch_duration_s, 0.0),)
    runs = []
    ratios: dict[str, Any] = {}
    for size in o.batch_sizes:
        rally = b.run_load("batches", f"rally http batch {size}", "rally", phases, batch=size)
        runs.append(rally)
        if o.baselines:
            for mode in ("naive", "strong"):
                base = b.run_load("batches", f"{mode} batch {size}", mode, phases, batch=size)
                runs.append(base)
                ratios[f"ratio_vs_{mode}_batch_{size}"] = _ratio(
                    rally["credited_eps"], base["credited_eps"]
                )
    ws = b.run_load("batches", "rally websocket 1/frame", "rally", phases, batch=1, transport="ws",
                    connections=8)  # fmt: skip
    runs.append(ws)
    bulk = b.run_load("batches", "rally websocket 1/frame, bulk acks", "rally", phases, batch=1,
                      transport="ws-bulk", connections=8)  # fmt: skip
    runs.append(bulk)
    memory = _member_memory(b, o.memory_members)
    summary = {**ratios, **memory}
    lines = [_memory_line(memory, "first_", "new members (the first round)"),
             _memory_line(memory, "", f"more new members ({MEMORY_ROUNDS_BEYOND} rounds beyond "
                          "the base)")]  # fmt: skip
    return {"status": "ok", "runs": runs, "summary": summary, "memory": memory, "lines": lines}


DURABLE_FAMILIES = ("mstate", "lb")
"""The key families that keep something for every member for good (its state, with its
points per channel, and its places on the all-time boards). The others that grow with new members are
bounded whatever the member count: streams are trimmed once consumed (the ledger log once
archived) or capped (notices), presence, chatters and dedupe ids expire with their windows."""


MEMORY_ROUNDS_BEYOND = 3
"""Rounds of new members measured after the first: one reading's noise (a process's heap at
a high or a low of its transient buffers: the ledger sink's swings by ±150 MB) is spread
over this many rounds."""


def _member_memory(b: Bench, n: int) -> dict[str, Any]:
    """Resident bytes per member. A first round of n fresh members, who each chat once, also
    pays what a deployment reaches once and then keeps (its buffers' high water, the feed's
    backlog of notices); MEMORY_ROUNDS_BEYOND more rounds of n measure what every member more
    costs beyond that base (one reading after the first round, one after the last). The
    figures without a prefix are those beyond the base, `first_` the first round's."""
    before = _memory_reading(b)
    first_visible = _add_members(b, 0, n)
    base = _memory_reading(b)
    visible = [_add_members(b, n * (1 + k), n) for k in range(MEMORY_ROUNDS_BEYOND)]
    after = _memory_reading(b)
    first = _memory_growth(before, base, first_visible)
    beyond = _memory_growth(base, after, max((v for v in visible if v is not None), default=None))
    return {**beyond, **{f"first_{k}": v for k, v in first.items()}}


class _MemoryReading(NamedTuple):
    rss: dict[str, int]
    redis: int
    families: dict[str, tuple[int, int]]
    members: int


def _memory_reading(b: Bench) -> _MemoryReading:
    """At rest: RSS by process, Redis' used_memory and MEMORY USAGE by key family
    (benchmarks.retained), and the members Redis holds."""
    _at_rest(b)
    return _MemoryReading(sut_rss(b), redis_memory(b.r), families(b.r.client, b.rally.keys.prefix),
                          int(b.r.hlen(b.rally.keys.mstate)))  # fmt: skip


def _add_members(b: Bench, start: int, n: int) -> float | None:
    """n fresh members (numbered from `start`) each chat once; seconds until all are in
    Redis."""
    net = b.rally.config.network
    b.show(["batches", f"memory: {n:,} new members from {start:,}", *[""] * 8])
    members0 = int(b.r.hlen(b.rally.keys.mstate))
    now = time.time()
    step = 2_000
    for lo in range(start, start + n, step):
        post_events(b, [
            {"kind": "chat", "id": f"mem-{b.token}-{i}", "network": net, "channel": f"mem-{b.token}",
             "user_id": f"mem{b.token}-{i}", "user_name": f"m{i}", "ts": now, "text": "hi"}
            for i in range(lo, min(start + n, lo + step))
        ])  # fmt: skip
    return wait_until(lambda: int(b.r.hlen(b.rally.keys.mstate)) - members0 >= n,
                      timeout_s=max(60.0, n / 2_000), every_s=0.1)  # fmt: skip


def _memory_growth(r0: _MemoryReading, r1: _MemoryReading, visible: float | None) -> dict[str, Any]:
    members = max(1, r1.members - r0.members)
    per = _grown(r0.rss, r1.rss) / members
    by_role = {
        role: round((r1.rss.get(role, 0) - r0.rss.get(role, 0)) / members)
        for role in sorted(r0.rss.keys() | r1.rss.keys())
    }
    by_family = {
        f: round((r1.families[f][1] - r0.families.get(f, (0, 0))[1]) / members)
        for f in r1.families
        if r1.families[f][1] != r0.families.get(f, (0, 0))[1]
    }
    return {
        "redis_bytes_per_member_by_family": by_family,
        "redis_durable_bytes_per_member": sum(by_family.get(f, 0) for f in DURABLE_FAMILIES),
        "memory_new_members": r1.members - r0.members,
        "memory_visible_after_s": round(visible, 2) if visible is not None else None,
        "rss_bytes_per_member": round(per),
        "rss_mb_per_100k_members": round(per * 100_000 / 2**20, 1),
        "rss_bytes_per_member_by_role": {k: v for k, v in by_role.items() if v},
        "redis_bytes_per_member": round((r1.redis - r0.redis) / members),
    }


def _at_rest(b: Bench) -> None:
    """Everything accepted applied and archived, the ledger logs and notices trimmed to
    what the trimmer keeps: the point where one reading of memory compares with another
    (else a round is charged the streams the last one left behind, or credited their trim)."""
    wait_drained(b, exact=True)
    keys, cfg = b.rally.keys, b.rally.runtime

    def trimmed() -> bool:
        pipe = b.r.pipeline(transaction=False)
        for m in range(cfg.member_shards):
            pipe.xlen(keys.ledgerlog(m))
        pipe.xlen(keys.notices)
        *logs, notices = b.r.call(pipe.execute)
        return not any(logs) and notices <= 2 * cfg.notices_kept

    wait_until(trimmed, timeout_s=60.0, every_s=0.1)


def _memory_line(memory: dict[str, Any], prefix: str, what: str) -> str:
    m = {k.removeprefix(prefix): v for k, v in memory.items() if k.startswith(prefix)}
    return (
        f"{m['memory_new_members']:,} {what}: {m['rss_bytes_per_member']:,} B resident per "
        f"member, RSS growth over all processes ({m['rss_mb_per_100k_members']} MB per 100k); "
        f"Redis' used_memory grew {m['redis_bytes_per_member']:,} B per member, of which kept "
        f"for good (member state, standings, all-time boards): "
        f"{m['redis_durable_bytes_per_member']:,} B; by key family: "
        + ", ".join(f"{f} {v:,}" for f, v in m["redis_bytes_per_member_by_family"].items())
        + "; RSS by process: "
        + ", ".join(f"{r} {v:,}" for r, v in m["rss_bytes_per_member_by_role"].items())
    )


def _grown(rss0: dict[str, int], rss1: dict[str, int]) -> int:
    """Resident bytes gained between two `sut_rss` readings, over all roles."""
    return sum(rss1.values()) - sum(rss0.values())


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def bot_scenario(b: Bench) -> dict[str, Any]:
    """Command reply latency through a real IRC server and `rally bot`, at 100 and 5,000
    chat lines/s over 50 channels, plus a saturating 20,000 lines/s run for the lines/s one
    connector ingests (benchmarks/botbench.py)."""
    from benchmarks.botbench import measure

    b.console.print("[bold]bot[/bold]: InspIRCd + rally bot, 50 channels")
    res = measure(b.rally.redis_url, b.rally.namespace, b.opts.out / "bot",
                  rates=(100.0, 5_000.0, 20_000.0), seconds=min(b.opts.duration_s, 10.0))  # fmt: skip
    by_rate = {int(r["offered_lines_per_s"]): r for r in res["runs"]}
    summary = {
        f"reply_p{q}_ms_at_{rate}": by_rate[rate][f"reply_p{q}_ms"]
        for rate in (100, 5_000) for q in (50, 99)
    }  # fmt: skip
    summary["ingested_lines_per_s_max"] = max(r["ingested_lines_per_s"] for r in res["runs"])
    lines = [
        f"{r['offered_lines_per_s']:,.0f} lines/s offered: reply p50 {r['reply_p50_ms']} ms, "
        f"p99 {r['reply_p99_ms']} ms ({r['replies']}/{r['commands']} replies); "
        f"ingested {r['ingested_lines_per_s']:,}/s"
        for r in res["runs"]
    ]
    return {"status": "ok", "runs": [], "bot_runs": res["runs"], "summary": summary,
            "lines": lines}  # fmt: skip


def unavailable(capability: str, modules: tuple[str, ...]) -> Scenario:
    """A scenario whose capability has not landed: says so instead of failing."""

    def scenario(b: Bench) -> dict[str, Any]:
        present = [m for m in modules if _importable(m)]
        if not present:
            reason = f"not available yet: {capability}"
        else:
            reason = (
                f"{capability} exists ({', '.join(present)}) but its benchmark is not written yet"
            )
        b.console.print(f"[yellow]{reason}[/yellow]")
        return {"status": "unavailable", "reason": reason, "runs": []}

    return scenario


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


SCENARIOS: dict[str, Scenario] = {
    "steady": steady,
    "peak": peak,
    "overload": overload,
    "raid": raid,
    "bot": bot_scenario,
    "draw": draw_scenario,
    "kpis": kpis_scenario,
    "feed": feed_scenario,
    "batches": batches,
    "spend": spend,
    "payouts": payouts,
    "import": import_scenario,
    "soak": soak,
    "watch-tick": watch_tick,
}
"""Every scenario, in the order `rally bench` runs them by default (watch-tick last: a payout
to a million members may still be running when its wait ends)."""
