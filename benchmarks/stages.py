"""`python -m benchmarks.stages`: where an event's time goes, stage by stage, without Ray or HTTP.

Appends a seeded chat workload to `ingest:0` of a fresh `redis-server` (AOF, fsync always)
the way the gateway does (1,000 events an entry, `--entry-events`), then runs the real
shard classes' `process()` in this process, one stage after the other: channel shard
(ingest -> credits), member shard (credits -> ledger log), ledger projector (ledger log ->
leaderboards).
For each stage it reports microseconds per event of Python (this process's CPU time)
and of Redis (the CPU time of the server's main thread, `INFO cpu`, which is
single-threaded time no other client gets), and the transactions or scripts that held
Redis over ~8.5 ms (Redis' latency histogram; `--max-items` bounds a commit). The sum
bounds what one core each for Python and Redis can credit.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.redisconn import connect
from actors.shards import ChannelShard, LedgerProjector, MemberShard
from actors.stream import GC_THRESHOLDS, StreamShard
from benchmarks.bench import held_over, latency_histograms
from engine.events import Chat, Event, Online, Viewer, Viewers, encode_events
from engine.rules import RuleBook
from gateway.redis_server import RedisServer


def workload(n: int, members: int, channels: int, t0: float, seed: int) -> list[Event]:
    """`n` chats from `members` members over `channels` channels, within 250 s of event time."""
    span_s = 250.0
    rng = random.Random(seed)
    events: list[Event] = [Online(f"on{c}", "acme", f"c{c}", t0) for c in range(channels)]
    for i in range(n):
        u = rng.randrange(members)
        events.append(Chat(f"e{i}", "acme", f"c{rng.randrange(channels)}", t0 + i * span_s / n,
                           f"u{u}", f"user{u}", "hi"))  # fmt: skip
    return events


def watch_workload(viewers: int, channels: int, t0: float) -> list[Event]:
    """`viewers` new viewers present (one snapshot a channel) in `channels` live channels."""
    per = -(-viewers // channels)
    events: list[Event] = [Online(f"on{c}", "acme", f"c{c}", t0) for c in range(channels)]
    for c in range(channels):
        ids = range(c * per, min(viewers, (c + 1) * per))
        events.append(Viewers(f"v{c}", "acme", f"c{c}", t0 + 1,
                              viewers=[Viewer(f"u{i}") for i in ids]))  # fmt: skip
    return events


@contextmanager
def no_threads() -> Iterator[None]:
    """Shards start their loop thread in __init__: here the harness drives them."""
    start = threading.Thread.start
    threading.Thread.start = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.start = start  # type: ignore[method-assign]


def redis_usec(r: redis.Redis) -> int:
    """CPU time of Redis' main thread (where every command runs), in microseconds."""
    cpu = r.info("cpu")
    return round((cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6)


def step(shard: StreamShard, r: redis.Redis) -> int:
    """One read of the shard's stream, processed and acknowledged; the entries it read."""
    got = r.xreadgroup(shard.group, shard.consumer, {shard.stream: ">"},
                       count=shard.cfg.read_count)  # fmt: skip
    entries = got[0][1] if got else []
    for run in shard.groups(entries):
        shard.process(run)
        shard._applied(run)
    return len(entries)


def drive(shards: list[StreamShard], r: redis.Redis) -> tuple[int, float, float, int]:
    """Run `shards` (of one kind) over their whole streams, one read each in turn until all
    are drained (so member shards hear each other's stage-A marks as they would running
    side by side); returns (entries, wall s, CPU s of this process, Redis usec)."""
    entries_done = 0
    r.config_resetstat()
    u0 = redis_usec(r)
    t0 = time.perf_counter()
    c0 = time.process_time()
    busy = True
    while busy:
        busy = False
        for shard in shards:
            read = step(shard, r)
            busy = busy or read > 0
            entries_done += read
    cpu_s = time.process_time() - c0
    return entries_done, time.perf_counter() - t0, cpu_s, redis_usec(r) - u0


def stage(
    name: str, shards: list[StreamShard], r: redis.Redis, n: int, profile: bool = False,
    max_items: int = 0,
) -> dict[str, Any]:  # fmt: skip
    for shard in shards if max_items else []:
        shard.max_items_per_commit = max_items
    rss0 = psutil.Process().memory_info().rss
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    entries, wall_s, cpu_s, usec = drive(shards, r)
    if prof is not None:
        prof.disable()
        print(f"== {name}: cProfile, by own time ==")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    python_us = cpu_s * 1e6 / n
    held = held_over({}, latency_histograms(r))  # drive() reset the histograms
    by_command = {name.removeprefix("cmdstat_"): round(st["usec"] / n, 2)
                  for name, st in r.info("commandstats").items()}  # fmt: skip
    return {"stage": name, "entries": entries, "wall_s": round(wall_s, 3),
            "python_us_per_event": round(python_us, 2),
            "redis_us_per_event": round(usec / n, 2),
            "over_10ms": held["over_10ms"], "longest_ms": held["longest_ms"] or 0.0,
            "rss_mb": round((psutil.Process().memory_info().rss - rss0) / 2**20, 1),
            "redis_us_per_event_by_command": dict(sorted(by_command.items(),
                                                         key=lambda kv: -kv[1]))}  # fmt: skip


def run(
    n: int, members: int, channels: int, seed: int, data_dir: Path, profile: str = "",
    max_items: int = 0, watch: int = 0, entry_events: int = 1_000, read_count: int = 0,
    member_shards: int = 1,
) -> list[dict[str, Any]]:  # fmt: skip
    """The chat workload (`n` events), or with `watch` that many new viewers paid one watch
    tick, then (all members now) the next one: per event read per credit."""
    with RedisServer(data_dir).start() as server:
        r = connect(server.url)
        cfg = RuntimeConfig(
            redis_url=server.url, channel_shards=1, member_shards=member_shards,
            watch_clock_interval_s=0,
            streak_rollover=False, rules=RuleBook({}).to_builtins(),
            **({"read_count": read_count} if read_count else {}),
        )  # fmt: skip
        keys = Keys.of(cfg.namespace, cfg.redis_url)
        interval = RuleBook({}).earn("acme", "c0").watch_interval_s
        # all within one watch interval: this measures the per-event path (the watch tick
        # is measured with `--watch`, and end to end by `rally bench watch-tick`)
        t0 = (time.time() - 3 * interval) // interval * interval + 1
        if watch:
            events, n = watch_workload(watch, channels, t0), watch
        else:
            events = workload(n, members, channels, t0, seed)
        for i in range(0, len(events), entry_events):
            part = events[i : i + entry_events]
            r.xadd(keys.ingest(0), {"e": encode_events(part), "n": len(part)})
        # releases what lateness holds back (and pays the tick at t0 - 1 + interval)
        clock = events[-1].ts + cfg.lateness_s + 1 + (interval if watch else 0)
        r.xadd(keys.ingest(0), {"clock": repr(clock)})
        with no_threads():
            shards: list[list[StreamShard]] = [
                [ChannelShard(cfg, 0)],
                [MemberShard(cfg, m) for m in range(member_shards)],
                [LedgerProjector(cfg, m) for m in range(member_shards)],
            ]
        names = ["channel shard", "member shard", "ledger projector"]
        out = [
            stage(name, shard, r, n, profile == name.split()[0], max_items)
            for name, shard in zip(names, shards, strict=True)
        ]
        if watch:  # the repeat tick: every viewer a member already
            r.xadd(keys.ingest(0), {"clock": repr(clock + interval)})
            out += [
                stage(f"{name} (repeat)", shard, r, n, profile == name.split()[0], max_items)
                for name, shard in zip(names, shards, strict=True)
            ]
        r.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--members", type=int, default=50_000)
    p.add_argument("--channels", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", choices=["channel", "member", "ledger"], default="",
                   help="print cProfile's top functions of one stage (with --watch: of both ticks)")  # fmt: skip
    p.add_argument("--max-items", type=int, default=0,
                   help="each shard's max_items_per_commit (default: the shard's own)")  # fmt: skip
    p.add_argument("--watch", type=int, default=0, metavar="VIEWERS",
                   help="instead of chat: that many new viewers paid a watch tick, then another")  # fmt: skip
    p.add_argument("--entry-events", type=int, default=1_000,
                   help="events per ingest entry (the gateway puts up to 1,000 in one; a "
                        "WebSocket or single-event load, what one flush coalesced)")  # fmt: skip
    p.add_argument("--read-count", type=int, default=0,
                   help="stream entries a shard reads at once (default: read_count, 2,000): "
                        "what a shard keeping up with its stream finds at each read")  # fmt: skip
    p.add_argument("--member-shards", type=int, default=1,
                   help="member shards (and ledger projectors), driven in turn: with two or "
                        "more, each waits for the others' stage-A marks as when deployed")  # fmt: skip
    p.add_argument("--commands", action="store_true",
                   help="also print each stage's Redis time by command (INFO commandstats)")  # fmt: skip
    a = p.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as StreamShard._run sets it in a shard's process
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(a.events, a.members, a.channels, a.seed, Path(tmp), a.profile, a.max_items,
                   a.watch, a.entry_events, a.read_count, a.member_shards)  # fmt: skip
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    total_py = sum(x["python_us_per_event"] for x in rows)
    total_redis = sum(x["redis_us_per_event"] for x in rows)
    print(f"{'stage':<27} {'entries':>8} {'wall s':>8} {'python us/ev':>13} {'redis us/ev':>12}"
          f" {'>8.5 ms':>8} {'longest ms':>11} {'RSS MB':>7}")  # fmt: skip
    for x in rows:
        print(f"{x['stage']:<27} {x['entries']:>8} {x['wall_s']:>8} "
              f"{x['python_us_per_event']:>13} {x['redis_us_per_event']:>12}"
              f" {x['over_10ms']:>8} {x['longest_ms']:>11} {x['rss_mb']:>7}")  # fmt: skip
    print(f"{'total':<27} {'':>8} {'':>8} {total_py:>13.2f} {total_redis:>12.2f}")
    if a.commands:
        print("\nRedis us/event by command (INFO commandstats; a MULTI's commands count apart):")
        for x in rows:
            top = list(x["redis_us_per_event_by_command"].items())[:6]
            print(f"{x['stage']:<27} " + ", ".join(f"{c} {us:g}" for c, us in top))


if __name__ == "__main__":
    main()
