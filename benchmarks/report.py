"""Numbers to words and pictures: percentiles, the live and final tables, results.json, PNGs."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from actors.latency import PERCENTILES
from benchmarks.procs import cpu_model


def percentiles(samples: Iterable[float]) -> dict[str, float] | None:
    """p50/p90/p99/max of raw samples (nearest rank), or None without samples."""
    xs = sorted(samples)
    if not xs:
        return None
    out = {
        f"p{p}": round(xs[min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1)], 2)
        for p in PERCENTILES
    }
    out["max"] = round(xs[-1], 2)
    out["n"] = len(xs)
    return out


def histogram_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


SMOOTH_SAMPLES = 4
"""The throughput plot shows 2 s means: the shards commit in lumps, so 0.5 s rates jump."""


def smooth(xs: Sequence[float], n: int) -> list[float]:
    """Trailing means over up to `n` samples."""
    out = []
    for i in range(len(xs)):
        window = xs[max(0, i - n + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def machine() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "cpu": cpu_model(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(vm.total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_ms(lat: dict[str, float] | None, key: str) -> str:
    if not lat or key not in lat:
        return "—"
    v = lat[key]
    return f"{v / 1e3:.2f}s" if v >= 10_000 else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


RUN_COLUMNS = (
    "scenario", "run", "sent/s", "accepted/s", "credited/s", "credits/s",
    "e2e p50 ms", "e2e p99 ms", "ingest→credit p50/p90/p99/max ms", "errors",
)  # fmt: skip


def run_row(scenario: str, run: dict[str, Any]) -> list[str]:
    srv = run.get("latency_ingest_to_credit_ms")
    srv_txt = "/".join(fmt_ms(srv, k) for k in ("p50", "p90", "p99", "max")) if srv else "—"
    return [
        scenario,
        run["label"],
        "max" if run.get("closed_loop") else fmt_rate(run.get("offered_eps")),
        fmt_rate(run.get("accepted_eps")),
        fmt_rate(run.get("credited_eps")),
        fmt_rate(run.get("credits_per_s")),
        fmt_ms(run.get("latency_e2e_ms"), "p50"),
        fmt_ms(run.get("latency_e2e_ms"), "p99"),
        srv_txt,
        _errors(run),
    ]


def _errors(run: dict[str, Any]) -> str:
    """Requests that failed or were refused; then probes not seen credited in the drain
    window, which is no failed request (a pipeline far behind sheds, or is still catching up)."""
    errors, late = run.get("errors", 0), run.get("probes_lost", 0)
    return f"{errors} ({late} probes late)" if late else str(errors)


def runs_table(results: dict[str, Any], current: list[str] | None = None) -> Table:
    t = Table(title="rally bench", show_lines=False)
    for c in RUN_COLUMNS:
        t.add_column(c, justify="left" if c in ("scenario", "run") else "right")
    for name, sc in results["scenarios"].items():
        if sc["status"] != "ok":
            t.add_row(name, f"[yellow]{sc['status']}: {sc.get('reason', '')}[/yellow]", *[""] * 8)
            continue
        for run in sc.get("runs", []):
            t.add_row(*run_row(name, run))
        for line in sc.get("lines", []):
            t.add_row(name, line, *[""] * 8)
    if current:
        t.add_row(*current, style="cyan")
    return t


def goals_table(goals: Sequence[dict[str, Any]]) -> Table:
    t = Table(title="targets (goals, not assertions)")
    for c in ("goal", "measured", "status"):
        t.add_column(c)
    for g in goals:
        met = g.get("met")
        status = "[green]met[/green]" if met else "[red]not met[/red]" if met is False else "n/a"
        t.add_row(g["goal"], g.get("measured", "—"), status)
    return t


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str))


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """throughput.png (events/s over time per run), latency.png (percentiles per run) and,
    after a soak, soak.png (memory, AOF, RSS, streams and lag over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    runs = [
        (name, run)
        for name, sc in results["scenarios"].items()
        if sc["status"] == "ok"
        for run in sc.get("runs", [])
        if run.get("series")
    ]
    if runs:
        cols = 2
        rows = math.ceil(len(runs) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
        for ax, (name, run) in zip(axes.flat, runs, strict=False):
            s = run["series"]
            t = s["t"]
            for key, label in (("offered", "sent"), ("accepted", "accepted"),
                               ("credited", "credited (applied)"), ("credits", "credits")):  # fmt: skip
                if any(v is not None for v in s.get(key, [])):
                    ax.plot(t, smooth([v or 0 for v in s[key]], SMOOTH_SAMPLES), label=label,
                            linewidth=1.2)  # fmt: skip
            ax.set_title(f"{name}: {run['label']}", fontsize=9)
            ax.set_xlabel("s", fontsize=8)
            ax.set_ylabel("events/s (2 s mean)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(runs) :]:
            ax.axis("off")
        fig.tight_layout()
        path = out / "throughput.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    lat = [
        (f"{name}: {run['label']}", run.get("latency_e2e_ms") or run.get("latency_ack_ms"))
        for name, sc in results["scenarios"].items()
        if sc["status"] == "ok"
        for run in sc.get("runs", [])
    ]
    lat = [(label, v) for label, v in lat if v]
    if lat:
        fig, ax = plt.subplots(figsize=(12, 0.35 * len(lat) + 1.5))
        y = range(len(lat))
        h = 0.25
        for i, key in enumerate(("p50", "p90", "p99")):
            ax.barh(
                [v + (i - 1) * h for v in y],
                [max(0.1, x[key]) for _, x in lat],
                height=h,
                label=key,
            )
        ax.set_yticks(list(y))
        ax.set_yticklabels([label for label, _ in lat], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (scheduled send → credited; log scale)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    from benchmarks.soak import plot_soak

    soak = plot_soak(results, out)
    if soak is not None:
        written.append(soak)
    return written


def markdown(results: dict[str, Any], images: Sequence[str]) -> str:
    """RESULTS.md: the machine, the options, the table, the targets, the plots."""
    m = results["machine"]
    lines = [
        "# Rallypoint benchmark results",
        "",
        f"Run {results['started_at']} with `{results['command']}` ({results['elapsed_s']:.0f} s). "
        "Reproduce with `rally bench --results-md benchmarks/RESULTS.md` (`rally bench --help`).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}. Load generators, baselines and Rallypoint share these cores"
        f" (load average at the start: {m.get('load_average_at_start', '?')}).",
        "",
        "Columns: sent = events/s the load generators sent (max = closed loop; an open-loop run "
        "sends at its target rate unless the target's answers hold its connections back); "
        "accepted = events/s acknowledged (202); credited = events/s applied end to end "
        "(the channel shards' `events_applied`, until the pipeline drained); credits/s = "
        "credits applied to member state; e2e = latency from the scheduled send time until a "
        "probe member's state is visible in Redis (baselines: until their reply, which comes "
        "after the write); ingest→credit = the shards' own histogram; errors = requests that "
        "failed or were refused (4xx, 5xx), and in brackets the probes not seen credited "
        "before the drain window closed.",
        "",
        "| " + " | ".join(RUN_COLUMNS) + " |",
        "|" + "---|" * len(RUN_COLUMNS),
    ]
    for name, sc in results["scenarios"].items():
        if sc["status"] != "ok":
            lines.append(f"| {name} | {sc['status']}: {sc.get('reason', '')} |" + " |" * 8)
            continue
        for run in sc.get("runs", []):
            lines.append("| " + " | ".join(run_row(name, run)) + " |")
        for line in sc.get("lines", []):
            lines.append(f"| {name} | {line} |" + " |" * 8)
    lines += ["", "## Targets", "", "| goal | measured | status |", "|---|---|---|"]
    for g in results.get("goals", []):
        met = g.get("met")
        lines.append(f"| {g['goal']} | {g.get('measured', '—')} | "
                     f"{'met' if met else 'not met' if met is False else 'n/a'} |")  # fmt: skip
    lines += ["", "## Scenario notes", ""]
    for name, sc in results["scenarios"].items():
        summary = sc.get("summary")
        if summary:
            lines.append(f"- **{name}**: " + "; ".join(f"{k} = {v}" for k, v in summary.items()))
    lines += ["", "## Processes (CPU and memory per run)", ""]
    for name, sc in results["scenarios"].items():
        for run in sc.get("runs", []):
            procs = run.get("processes") or []
            if not procs:
                continue
            parts = [f"{p['role']} {p['cpu_pct']:.0f}% {p['rss_max_mb']:.0f} MB" for p in procs]
            lines.append(f"- {name} / {run['label']}: " + ", ".join(parts))
            if run.get("cpu_us_per_event"):
                lines.append(f"  - CPU per applied event: {cpu_line(run['cpu_us_per_event'])}")
    lines += [""]
    for img in images:
        lines += [f"![{Path(img).stem}]({img})", ""]
    return "\n".join(lines)


def cpu_line(us: dict[str, float]) -> str:
    """`cpu_us_per_event` (benchmarks/bench.py cpu_per_event) as one line, all first."""
    parts = [f"{role} {v:.2f}" for role, v in us.items() if role != "all"]
    return f"{us.get('all', 0):.2f} µs over all processes (" + ", ".join(parts) + ")"


def publish(results: dict[str, Any], images: Sequence[Path], md: Path) -> None:
    """RESULTS.md with its plots in a folder `results/` beside it."""
    folder = md.parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for img in images:
        (folder / img.name).write_bytes(img.read_bytes())
        names.append(f"results/{img.name}")
    md.write_text(markdown(results, names))
