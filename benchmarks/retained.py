"""What Redis retains per processed event, by key family, once the pipeline has drained.

    .venv/bin/python -m benchmarks.retained [--events 200000] [--batch 1000]

Starts its own redis-server and a local Ray cluster, appends chat events dated around now
(the way the gateway appends an accepted batch), waits until every shard has applied
everything, then sums MEMORY USAGE over every key of the deployment by family (the key
part after the namespace: `ingest`, `seenh`, `ledger`, ...) and reports used_memory
growth and bytes per event. Streams are not trimmed here (no scheduler), so the stream
families show what trimming has to remove; the dedupe family is what this run retains.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import redis

from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.redisconn import connect
from engine.events import Chat, Event, encode_events
from engine.rules import RuleBook
from gateway.ingest import split_by_partition
from gateway.redis_server import RedisServer


def families(r: redis.Redis, prefix: str) -> dict[str, tuple[int, int]]:
    """Key family -> (keys, bytes by MEMORY USAGE ... SAMPLES 0)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    names = list(r.scan_iter(match=prefix + "*", count=10_000))
    pipe = r.pipeline(transaction=False)
    for k in names:
        pipe.memory_usage(k, samples=0)
    for k, used in zip(names, pipe.execute(), strict=True):
        fam = k.decode().removeprefix(prefix).split(":")[0]
        out[fam][0] += 1
        out[fam][1] += int(used or 0)
    return {f: (n, b) for f, (n, b) in sorted(out.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--channels", type=int, default=6)
    ap.add_argument("--users", type=int, default=5_000)
    args = ap.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="retained-"))
    server = RedisServer(tmp, fsync="everysec").start()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        cfg = RuntimeConfig(
            redis_url=server.url,
            namespace="m",
            watch_clock_interval_s=0.0,
            streak_rollover=False,
            rules=RuleBook({}).to_builtins(),
        )
        r = connect(server.url)
        keys = Keys.of(cfg.namespace, cfg.redis_url)
        client = RallyClient(cfg).start(scheduler=False)
        r.memory_purge()
        base = int(r.info("memory")["used_memory"])
        now = time.time()
        n, t0 = args.events, time.monotonic()
        for start in range(0, n, args.batch):
            batch: list[Event] = []
            for i in range(start, min(start + args.batch, n)):
                ts = now - 600 + 600 * i / n  # ten minutes of event time, ending now
                batch.append(
                    Chat(
                        id=f"evt-{i:09d}",
                        network="acme",
                        channel=f"c{i % args.channels}",
                        user_id=f"u{i % args.users}",
                        ts=ts,
                    )
                )
            with r.pipeline(transaction=True) as pipe:
                for p, part in split_by_partition(batch, cfg.channel_shards).items():
                    pipe.xadd(keys.ingest(p), {"e": encode_events(part), "n": len(part)})
                pipe.execute()
        assert client.wait_idle(600), "the pipeline did not drain"
        took = time.monotonic() - t0
        stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}
        processed = stats.get("events_applied", 0) + stats.get("events_dup", 0)
        client.stop()
        r.memory_purge()
        used = int(r.info("memory")["used_memory"])
        fams = families(r, keys.prefix)
        print(f"{processed:,} events processed in {took:.1f} s; used_memory grew "
              f"{(used - base) / 2**20:,.1f} MB = {(used - base) / processed:,.1f} B/event")  # fmt: skip
        print(f"{'family':<12}{'keys':>9}{'bytes':>14}{'B/event':>10}")
        for fam, (count, size) in fams.items():
            print(f"{fam:<12}{count:>9,}{size:>14,}{size / processed:>10.1f}")
        total = sum(size for _, size in fams.values())
        print(f"{'all':<12}{sum(c for c, _ in fams.values()):>9,}{total:>14,}"
              f"{total / processed:>10.1f}")  # fmt: skip
    finally:
        ray.shutdown()
        server.stop()


if __name__ == "__main__":
    main()
