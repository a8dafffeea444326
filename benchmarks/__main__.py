"""`rally bench` / `python -m benchmarks`: run the scenarios, print the table, write the report."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from benchmarks.bench import Bench, Options
from benchmarks.report import (
    goals_table,
    machine,
    markdown,
    plot,
    publish,
    runs_table,
    write_json,
)
from benchmarks.scenarios import SCENARIOS
from benchmarks.target import Rally, TargetError, settings_text
from gateway.cli import positive as _positive


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    d = Options(scenarios=(), out=Path("bench-results"))
    p = argparse.ArgumentParser(
        prog="rally bench",
        description="Benchmark Rallypoint on simulated streaming-network traffic. "
        f"Scenarios: {', '.join(SCENARIOS)} (default: all).",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="which scenarios to run")
    p.add_argument("--out", type=Path, default=d.out, help="where results.json and the PNGs go")
    p.add_argument("--duration", type=_positive(float), default=d.duration_s,
                   help="seconds of load in steady and raid")  # fmt: skip
    p.add_argument("--rate", type=_positive(float), default=d.rate, help="events/s in steady")
    p.add_argument("--channels", type=_positive(int), default=d.channels)
    p.add_argument("--members", type=_positive(int), default=d.members)
    p.add_argument("--batch", type=_positive(int), default=d.batch, help="events per request")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--generators", type=_positive(int), default=d.generators,
                   help="load-generator processes")  # fmt: skip
    p.add_argument("--no-baselines", action="store_true", help="skip the naive/strong baselines")
    p.add_argument("--peak-start-rate", type=_positive(float), default=d.peak_start_rate)
    p.add_argument("--peak-max-rate", type=_positive(float), default=d.peak_max_rate)
    p.add_argument("--peak-step", type=_positive(float), default=d.peak_step_s,
                   help="seconds per step of the peak ramp")  # fmt: skip
    p.add_argument("--raid-viewers", type=_positive(int), default=d.raid_viewers)
    p.add_argument("--raid-over", type=_positive(float), default=d.raid_over_s,
                   help="seconds over which the raid's viewers arrive")  # fmt: skip
    p.add_argument("--watch-sizes", type=_sizes, default=d.watch_sizes,
                   help="present viewers paid in watch-tick, comma-separated")  # fmt: skip
    p.add_argument("--batch-sizes", type=_sizes, default=d.batch_sizes)
    p.add_argument("--batch-duration", type=_positive(float), default=d.batch_duration_s,
                   help="seconds of each saturating run in batches")  # fmt: skip
    p.add_argument("--memory-members", type=_positive(int), default=d.memory_members)
    p.add_argument("--soak-seconds", type=_positive(float), default=d.soak_s,
                   help="seconds of sustained load in soak")  # fmt: skip
    p.add_argument("--soak-rate", type=_positive(float), default=d.soak_rate,
                   help="events/s in soak")  # fmt: skip
    p.add_argument("--soak-sample", type=_positive(float), default=d.soak_sample_s,
                   help="seconds between two soak samples")  # fmt: skip
    p.add_argument("--soak-warmup", type=_positive(float), default=d.soak_warmup_s,
                   help="seconds of soak before retained memory is counted (a quarter of "
                   "the soak if longer than it)")  # fmt: skip
    p.add_argument("--overload-seconds", type=_positive(float), default=d.overload_s,
                   help="seconds of load in overload")  # fmt: skip
    p.add_argument("--overload-rate", type=_positive(float), default=None,
                   help="events/s offered in overload (default: twice the capacity measured)")  # fmt: skip
    p.add_argument("--overload-lag", type=_positive(float), default=d.overload_max_lag_s,
                   help="seconds of pipeline lag beyond which overload's gateway sheds load")  # fmt: skip
    p.add_argument("--draw-tickets", type=_positive(int), default=d.draw_tickets,
                   help="tickets in the draw scenario's raffle")  # fmt: skip
    p.add_argument("--draw-members", type=_positive(int), default=d.draw_members,
                   help="members holding them (at most the tickets)")  # fmt: skip
    p.add_argument("--draw-repeats", type=_positive(int), default=d.draw_repeats,
                   help="timed repetitions of the draw (the best is reported)")  # fmt: skip
    p.add_argument("--kpis-rows", type=_positive(int), default=d.kpis_rows,
                   help="ledger rows generated for the kpis scenario's KPI report")  # fmt: skip
    p.add_argument("--kpis-sink-rows", type=_positive(int), default=d.kpis_sink_rows,
                   help="rows pushed through the ledger sink's append in the kpis scenario")  # fmt: skip
    p.add_argument("--feed-clients", type=_positive(int), default=d.feed_clients,
                   help="WebSockets on GET /v1/feed in the feed scenario")  # fmt: skip
    p.add_argument("--feed-messages", type=_positive(int), default=d.feed_messages,
                   help="notices fanned out to every feed client")  # fmt: skip
    p.add_argument("--spend-rate", type=_positive(float), default=d.spend_rate,
                   help="spends/s submitted in the spend scenario")  # fmt: skip
    p.add_argument("--spend-credit-rate", type=_positive(float), default=d.spend_credit_rate,
                   help="events/s offered for crediting while the spend scenario spends")  # fmt: skip
    p.add_argument("--spend-members", type=_positive(int), default=d.spend_members,
                   help="members who spend in the spend scenario")  # fmt: skip
    p.add_argument("--payouts", type=_positive(int), default=d.payouts,
                   help="payouts in the payouts scenario")  # fmt: skip
    p.add_argument("--payout-batch", type=_positive(int), default=d.payout_batch,
                   help="payouts per mintBatch in the payouts scenario (at most 500)")  # fmt: skip
    p.add_argument("--import-members", type=_positive(int), default=d.import_members,
                   help="opening balances imported by the import scenario")  # fmt: skip
    p.add_argument(
        "--url", help="benchmark a running Rallypoint at this URL instead of starting one"
    )
    p.add_argument("--runtime", type=Path, help="its runtime.json (Redis URL and namespace)")
    p.add_argument("--config", type=Path,
                   help="settings TOML (default: the demo settings); gives the api key and rules")  # fmt: skip
    p.add_argument("--results-md", type=Path,
                   help="also write the Markdown report here, with the plots beside it")  # fmt: skip
    return p


def options(args: argparse.Namespace) -> Options:
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"rally bench: unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SCENARIOS)}")  # fmt: skip
    return Options(
        scenarios=tuple(args.scenarios) or tuple(SCENARIOS),
        out=args.out,
        duration_s=args.duration,
        rate=args.rate,
        channels=args.channels,
        members=args.members,
        batch=args.batch,
        seed=args.seed,
        generators=args.generators,
        baselines=not args.no_baselines,
        peak_start_rate=min(args.peak_start_rate, args.peak_max_rate),
        peak_max_rate=args.peak_max_rate,
        peak_step_s=args.peak_step,
        raid_viewers=args.raid_viewers,
        raid_over_s=args.raid_over,
        watch_sizes=args.watch_sizes,
        batch_sizes=args.batch_sizes,
        batch_duration_s=args.batch_duration,
        memory_members=args.memory_members,
        soak_s=args.soak_seconds,
        soak_rate=args.soak_rate,
        soak_sample_s=args.soak_sample,
        soak_warmup_s=args.soak_warmup,
        overload_s=args.overload_seconds,
        overload_rate=args.overload_rate or 0.0,
        overload_max_lag_s=args.overload_lag,
        draw_tickets=args.draw_tickets,
        draw_members=min(args.draw_members, args.draw_tickets),
        draw_repeats=args.draw_repeats,
        kpis_rows=args.kpis_rows,
        kpis_sink_rows=args.kpis_sink_rows,
        feed_clients=args.feed_clients,
        feed_messages=args.feed_messages,
        spend_rate=args.spend_rate,
        spend_credit_rate=args.spend_credit_rate,
        spend_members=args.spend_members,
        payouts=args.payouts,
        payout_batch=min(args.payout_batch, 500),
        import_members=args.import_members,
        url=args.url,
        runtime=args.runtime,
        config=args.config,
    )


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each target of the issue stands (2 cores; goals, not assertions)."""
    sc = results["scenarios"]
    out: list[dict[str, Any]] = []

    def add(goal: str, value: float | None, ok: bool | None, text: str) -> None:
        out.append({"goal": goal, "value": value, "met": ok if value is not None else None,
                    "measured": text if value is not None else "not measured"})  # fmt: skip

    runs = {r["label"]: r for r in sc.get("batches", {}).get("runs", [])}
    r1000 = runs.get("rally http batch 1000")
    v = r1000 and r1000.get("credited_eps")
    cpu = (r1000 or {}).get("cpu_us_per_event", {}).get("all")
    text = f"{v:,.0f}/s" if v else ""
    if v and cpu:
        text += (
            f"; {cpu:.1f} µs of CPU per event over all processes (250k/s on 2 cores leaves 8 µs)"
        )
    add("≥250k events/s credited at batch 1,000", v, bool(v and v >= 250_000), text)
    r1 = runs.get("rally http batch 1")
    v = r1 and r1.get("credited_eps")
    add(
        "≥15k events/s, single-event HTTP requests",
        v,
        bool(v and v >= 15_000),
        f"{v:,.0f}/s" if v else "",
    )
    ws_modes = {"rally websocket 1/frame": "an ack per frame",
                "rally websocket 1/frame, bulk acks": "bulk acks"}  # fmt: skip
    ws = [(runs[label]["credited_eps"], mode) for label, mode in ws_modes.items()
          if runs.get(label, {}).get("credited_eps")]  # fmt: skip
    v = max((eps for eps, _ in ws), default=None)
    add("≥100k events/s over WebSocket, one event per frame", v, bool(v and v >= 100_000),
        ", ".join(f"{eps:,.0f}/s ({mode})" for eps, mode in ws))  # fmt: skip
    steady = sc.get("steady", {})
    srun = (steady.get("runs") or [None])[0]
    v = srun and (srun.get("latency_ingest_to_credit_ms") or {}).get("p99")
    rate = results["options"]["rate"]
    e2e = srun and (srun.get("latency_e2e_ms") or {}).get("p99")
    late = (steady.get("summary") or {}).get("lateness_s")
    floor = f"; every event is held for the allowed lateness, {late:g} s" if late else ""
    add(f"ingest→credit p99 ≤250 ms at steady 50k events/s (ran at {rate:,.0f}/s)", v,
        (v is not None and v <= 250) if rate >= 50_000 else None,
        f"{v:.0f} ms (scheduled send→visible p99 {e2e:.0f} ms{floor})" if v is not None and e2e
        else f"{v} ms{floor}" if v is not None else "")  # fmt: skip
    slow = (srun or {}).get("redis_slow") or {}
    v = slow.get("longest_ms") if slow else None
    if slow and v is None:
        v = 0.0  # no transaction or script over ~8.5 ms
    add("no Redis script or transaction holding Redis >~10 ms (steady run)", v,
        bool(v is not None and v <= 10),
        f"{slow.get('over_10ms', 0):,} transactions or scripts over ~8.5 ms, longest ≤{v} ms "
        f"({slow.get('longest')}, Redis' latency histogram)"
        if slow.get("over_10ms") else "none over ~8.5 ms (Redis' latency histogram)")  # fmt: skip
    watch = {w["viewers"]: w for w in sc.get("watch-tick", {}).get("watch", []) if "payout_s" in w}
    for viewers, limit in ((100_000, 1.0), (1_000_000, 10.0)):
        w = watch.get(viewers) or {}
        v = w.get("payout_s")
        again = w.get("repeat_payout_s")
        add(f"watch-time payout to {viewers:,} present viewers <{limit:g} s; the repeat tick "
            f"no slower", v, bool(v is not None and v < limit and (again is None or again < limit)),
            f"{v:.2f} s; repeat tick {again:.2f} s" if v is not None and again is not None
            else f"{v:.2f} s" if v is not None else "")  # fmt: skip
    summary = sc.get("batches", {}).get("summary", {})
    for mode, goal in (("naive", 10), ("strong", 2)):
        ratios = {k.rsplit("_", 1)[-1]: r for k, r in summary.items()
                  if k.startswith(f"ratio_vs_{mode}_batch_") and r}  # fmt: skip
        best = ratios.get("1000") or (max(ratios.values()) if ratios else None)
        text = ", ".join(f"batch {k}: {r}x" for k, r in ratios.items())
        add(
            f"≥{goal}x the {mode} baseline (judged at batch 1,000)",
            best,
            bool(best and best >= goal),
            text,
        )
    best = sc.get("draw", {}).get("summary", {}).get("winners_1") or {}
    v = best.get("close_and_draw_s")
    size = sc.get("draw", {}).get("summary", {})
    add(f"raffle draw over 1M tickets / 100k members <1 s incl. the Merkle root (ran "
        f"{size.get('tickets', 0):,} / {size.get('members', 0):,})", v,
        bool(v is not None and v < 1) if size.get("tickets", 0) >= 1_000_000 else None,
        f"{v:.3f} s" if v is not None else "")  # fmt: skip
    mem = sc.get("batches", {}).get("memory", {})
    v = mem.get("rss_bytes_per_member")
    add("≤300 bytes resident memory per member beyond a fixed base", v,
        bool(v is not None and v <= 300),
        f"{v} B/member RSS growth beyond the first {mem.get('first_memory_new_members', 0):,} "
        f"new members, who grew it {mem.get('first_rss_bytes_per_member')} B/member (Redis' "
        f"used_memory: {mem.get('redis_bytes_per_member')} B/member, of which "
        f"{mem.get('redis_durable_bytes_per_member')} B kept for good: member state, "
        f"standings, all-time boards)")  # fmt: skip
    bot = sc.get("bot", {}).get("summary", {})
    v = bot.get("reply_p99_ms_at_5000")
    add("bot command reply p99 ≤50 ms at 5,000 chat lines/s over 50 channels", v,
        bool(v is not None and v <= 50),
        f"p99 {v} ms (p50 {bot.get('reply_p50_ms_at_5000')} ms); one connector ingests "
        f"{bot.get('ingested_lines_per_s_max')} lines/s at most")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    opts = options(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    opts.out.mkdir(parents=True, exist_ok=True)
    config_text = opts.config.read_text() if opts.config else settings_text()
    started = time.time()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": "rally bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "scenarios": {},
    }
    console.print(f"[bold]rally bench[/bold]: {', '.join(opts.scenarios)} → {opts.out}")
    data_dir = Path(tempfile.mkdtemp(prefix="rally-bench-"))
    try:
        failed = _run(opts, console, results, config_text, data_dir)
    except (TargetError, OSError) as err:
        console.print(f"[red]rally bench: {err}[/red]")
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # a run's AOF can take gigabytes
    results["elapsed_s"] = time.time() - started
    return _report(results, opts, console, args.results_md, failed)


def _run(
    opts: Options, console: Console, results: dict[str, Any], config_text: str, data_dir: Path
) -> bool:
    """Start (or reach) the target, run the scenarios into `results`; True if one failed."""
    if opts.url:
        rally = Rally.attach(opts.url, opts.runtime, config_text)
    else:
        console.print(f"starting Rallypoint (rally serve) under {data_dir} ...")
        rally = Rally.start(data_dir, config_text, opts.out / "serve.log")
    console.print(f"target {rally.url} (redis {rally.redis_url}, namespace {rally.namespace})")
    bench = Bench(opts, rally, console, results)
    failed = False
    try:
        with Live(runs_table(results), console=console, refresh_per_second=4) as live:
            bench.live = live
            for name in opts.scenarios:
                t0 = time.time()
                try:
                    outcome = SCENARIOS[name](bench)
                except Exception as err:  # one scenario failing must not lose the others
                    failed = True
                    outcome = {"status": "failed", "reason": f"{type(err).__name__}: {err}",
                               "traceback": traceback.format_exc(), "runs": []}  # fmt: skip
                outcome["elapsed_s"] = round(time.time() - t0, 1)
                results["scenarios"][name] = outcome
                bench.show()
                write_json(opts.out / "results.json", results)
    finally:
        try:
            bench.close()
        finally:
            rally.stop()
    return failed


def _report(
    results: dict[str, Any], opts: Options, console: Console, results_md: Path | None, failed: bool
) -> int:
    """Goals, plots, results.json, report.md (and RESULTS.md); the final tables; exit code."""
    results["goals"] = goals(results)
    images = plot(results, opts.out)
    write_json(opts.out / "results.json", results)
    (opts.out / "report.md").write_text(markdown(results, [p.name for p in images]))
    if results_md:
        publish(results, images, results_md)
    console.print(runs_table(results))
    console.print(goals_table(results["goals"]))
    for name, sc in results["scenarios"].items():
        if sc["status"] == "failed":
            console.print(f"[red]{name} failed: {sc['reason']}[/red]")
    console.print(f"wrote {opts.out / 'results.json'} and {', '.join(p.name for p in images)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
