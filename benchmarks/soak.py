"""The soak scenario: a sustained rate for a long time, watching that memory and disk stay flat.

Every --soak-sample seconds it records Redis' used_memory, the AOF size, the resident
memory of every process (gateway, redis-server, each Ray actor), the stream lengths and
the pipeline's lag (events accepted but not applied; ledger entries not yet archived).
It reports the bytes Redis retains per processed event after the warm-up:
(used_memory at the end, drained and trimmed - used_memory after warm-up) / events
processed in between, and plots the samples (soak.png).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks.bench import Bench, wait_drained, wait_until
from benchmarks.plan import Phase

TRIMMED_WAIT_S = 15.0
"""How long the end sample waits for the trimmer to empty the streams after the drain."""


def soak(b: Bench) -> dict[str, Any]:
    """--soak-rate events/s for --soak-seconds; memory, AOF, RSS, streams and lag sampled."""
    o = b.opts
    warmup_s = o.soak_warmup_s if o.soak_warmup_s < o.soak_s else o.soak_s / 4
    probe = Probe(b)
    samples: list[dict[str, Any]] = []
    state = {"next": 0.0}

    def on_sample(t: float, point: dict[str, Any]) -> dict[str, Any] | None:
        if t < state["next"]:
            return None
        state["next"] = t + o.soak_sample_s
        s = probe.sample(t)
        samples.append(s)
        b.panel = probe.table(samples, warmup_s)
        return None

    run = b.run_load("soak", f"rally soak {o.soak_rate:,.0f}/s", "rally",
                     (Phase(o.soak_s, o.soak_rate),), batch=o.batch, on_sample=on_sample)  # fmt: skip
    wait_drained(b)
    wait_until(lambda: probe.stream_total() <= probe.streams_floor, TRIMMED_WAIT_S, every_s=0.2)
    last = run["series"]["t"][-1] if run["series"]["t"] else o.soak_s
    end = probe.sample(max(last, samples[-1]["t"] if samples else 0.0) + 0.1)
    end["final"] = True
    samples.append(end)
    b.panel = None
    summary = summarize(samples, warmup_s, o)
    run["soak_samples"] = samples
    lines = [
        f"after {warmup_s:.0f} s warm-up: Redis retains {_fmt(summary['bytes_per_event'])} B per "
        f"processed event ({summary['events_after_warmup']:,} events); used_memory "
        f"{summary['used_memory_mb_warm']} → {summary['used_memory_mb_end']} MB, AOF max "
        f"{summary['aof_mb_max']} MB ({summary['aof_rewrites']} rewrites), RSS "
        f"{summary['rss_mb_warm']} → {summary['rss_mb_end']} MB"
    ]
    return {"status": "ok", "runs": [run], "summary": summary, "lines": lines}


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:,.1f}"


class Probe:
    """Reads what the soak samples: Redis INFO, stream lengths, counters, process RSS."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        keys = b.rally.keys
        cfg = b.rally.config
        self.streams = {
            "ingest": [keys.ingest(p) for p in range(cfg.channel_shards)],
            "credits": [keys.credits(m) for m in range(cfg.member_shards)],
            "ledgerlog": [keys.ledgerlog(m) for m in range(cfg.member_shards)],
        }
        self.streams_floor = sum(map(len, self.streams.values()))
        """Trimmed: about nothing left (a watch-clock tick may have just been appended)."""
        self.rewrites0 = self._rewrites()

    def _rewrites(self) -> int:
        stats = self.b.r.info("persistence")
        return int(stats.get("aof_rewrites", 0) or 0)

    def stream_lengths(self) -> dict[str, int]:
        pipe = self.b.r.pipeline(transaction=False)
        order = [(kind, s) for kind, names in self.streams.items() for s in names]
        for _, s in order:
            pipe.xlen(s)
        out: dict[str, int] = dict.fromkeys(self.streams, 0)
        for (kind, _), n in zip(order, self.b.r.call(pipe.execute), strict=True):
            out[kind] += int(n)
        return out

    def stream_total(self) -> int:
        return sum(self.stream_lengths().values())

    def rss_by_role(self) -> dict[str, int]:
        self.b.sampler.sample()
        return self.b.sampler.rss_by_role(exclude=("loadgen", "baseline", "gone"))

    def sample(self, t: float) -> dict[str, Any]:
        """One sample at `t` s into the run; counters are the deployment's totals."""
        r = self.b.r
        mem = r.info("memory")
        per = r.info("persistence")
        stats = self.b.counters()
        processed = stats.get("events_applied", 0) + stats.get("events_dup", 0)
        return {
            "t": round(t, 2),
            "processed": processed,
            "used_memory": int(mem["used_memory"]),
            "aof_bytes": int(per.get("aof_current_size", 0) or 0),
            "aof_rewriting": int(per.get("aof_rewrite_in_progress", 0) or 0),
            "aof_rewrites": int(per.get("aof_rewrites", 0) or 0) - self.rewrites0,
            "rss": self.rss_by_role(),
            "streams": self.stream_lengths(),
            "lag_events": stats.get("events_in", 0) - processed,
            "lag_archive": stats.get("entries", 0) - stats.get("entries_archived", 0),
        }

    def table(self, samples: list[dict[str, Any]], warmup_s: float) -> Table:
        t = Table(title=f"soak (warm-up {warmup_s:.0f} s)", show_lines=False)
        for c in ("t s", "processed", "used_memory MB", "AOF MB", "RSS MB",
                  "ingest/credits/ledgerlog", "lag events", "lag archive"):  # fmt: skip
            t.add_column(c, justify="right")
        for s in samples[-6:]:
            st = s["streams"]
            t.add_row(
                f"{s['t']:.0f}",
                f"{s['processed']:,}",
                f"{s['used_memory'] / 2**20:,.1f}",
                f"{s['aof_bytes'] / 2**20:,.1f}" + (" (rewriting)" if s["aof_rewriting"] else ""),
                f"{sum(s['rss'].values()) / 2**20:,.0f}",
                f"{st['ingest']:,}/{st['credits']:,}/{st['ledgerlog']:,}",
                f"{s['lag_events']:,}",
                f"{s['lag_archive']:,}",
            )
        return t


def summarize(samples: list[dict[str, Any]], warmup_s: float, o: Any) -> dict[str, Any]:
    """The figures of the soak: retained bytes per event after warm-up, memory, AOF, RSS."""
    warm = next((s for s in samples if s["t"] >= warmup_s), samples[0])
    end = samples[-1]
    events = end["processed"] - warm["processed"]
    grown = end["used_memory"] - warm["used_memory"]
    after = [s for s in samples if s["t"] >= warm["t"]]
    return {
        "soak_s": o.soak_s,
        "rate_eps": o.soak_rate,
        "warmup_s": round(warmup_s, 1),
        "events_processed": end["processed"],
        "events_after_warmup": events,
        "bytes_per_event": round(grown / events, 2) if events > 0 else None,
        "used_memory_mb_warm": round(warm["used_memory"] / 2**20, 1),
        "used_memory_mb_end": round(end["used_memory"] / 2**20, 1),
        "used_memory_mb_max": round(max(s["used_memory"] for s in after) / 2**20, 1),
        "aof_mb_max": round(max(s["aof_bytes"] for s in samples) / 2**20, 1),
        "aof_mb_end": round(end["aof_bytes"] / 2**20, 1),
        "aof_rewrites": end["aof_rewrites"],
        "rss_mb_warm": round(sum(warm["rss"].values()) / 2**20),
        "rss_mb_end": round(sum(end["rss"].values()) / 2**20),
        "streams_end": end["streams"],
        "lag_events_max": max(s["lag_events"] for s in samples),
        "lag_archive_max": max(s["lag_archive"] for s in samples),
    }


def plot_soak(results: dict[str, Any], out: Path) -> Path | None:
    """soak.png: Redis used_memory and AOF size, RSS per process, stream lengths and lag."""
    sc = results["scenarios"].get("soak", {})
    runs = sc.get("runs") or []
    samples = runs[0].get("soak_samples") if runs else None
    if sc.get("status") != "ok" or not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    mb = 2**20
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))
    ax = axes[0][0]
    ax.plot(t, [s["used_memory"] / mb for s in samples], label="Redis used_memory")
    ax.plot(t, [s["aof_bytes"] / mb for s in samples], label="AOF size")
    ax.set_ylabel("MB")
    ax.set_title("Redis memory and AOF", fontsize=9)
    ax = axes[0][1]
    roles = sorted({r for s in samples for r in s["rss"]})
    for role in roles:
        ax.plot(t, [s["rss"].get(role, 0) / mb for s in samples], label=role, linewidth=1)
    ax.set_ylabel("MB resident")
    ax.set_title("RSS per process (summed by role)", fontsize=9)
    ax = axes[1][0]
    for kind in ("ingest", "credits", "ledgerlog"):
        ax.plot(t, [s["streams"][kind] for s in samples], label=f"{kind} entries")
    ax.set_ylabel("stream entries")
    ax.set_title("stream lengths (all partitions)", fontsize=9)
    ax = axes[1][1]
    ax.plot(t, [s["lag_events"] for s in samples], label="events not applied")
    ax.plot(t, [s["lag_archive"] for s in samples], label="ledger entries not archived")
    ax.set_ylabel("backlog")
    ax.set_title("pipeline lag", fontsize=9)
    warm = sc.get("summary", {}).get("warmup_s")
    for a in axes.flat:
        a.set_xlabel("s", fontsize=8)
        a.tick_params(labelsize=7)
        a.legend(fontsize=6)
        if warm is not None:
            a.axvline(warm, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(f"soak: {sc['runs'][0]['label']} (dotted: end of warm-up)", fontsize=10)
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
