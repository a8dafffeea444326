"""The overload scenario: twice the pipeline's capacity offered, load shed at a low lag bound.

A second gateway of the deployment under test (`rally gateway`, same Redis, namespace and
key) runs with [limits] max_lag_s = --overload-lag and max_lag_events = what the pipeline
applies in that time. The load generators offer it --overload-rate events/s (default: twice
the capacity: the peak scenario's saturation if it found one, else a closed-loop run's
credited rate) for --overload-seconds, open loop, and do not retry what is shed. It reports
what was accepted, what was credited (both rates and totals), what was shed (the
generators' count and the gateway's counter), the ingest→credit latency of what was
accepted, and the lag the gateway measured over time.
"""

from __future__ import annotations

import shutil
from typing import Any

from benchmarks.bench import Bench
from benchmarks.plan import Phase
from benchmarks.target import ExtraGateway, gateway_settings_text

CAPACITY_PROBE_S = 2.0
"""Shortest closed-loop run that measures the capacity when the peak scenario did not."""
SHED_HTTP = "rally_gateway_shed_total{transport=http}"


def overload(b: Bench) -> dict[str, Any]:
    """--overload-rate (default 2x capacity) for --overload-seconds at a gateway that sheds."""
    o = b.opts
    runs: list[dict[str, Any]] = []
    capacity, source = _capacity(b, runs)
    rate = o.overload_rate or 2 * capacity
    max_lag_events = max(1_000, round(capacity * o.overload_max_lag_s))
    text = gateway_settings_text(
        b.rally.config, b.rally.namespace,
        max_lag_events=max_lag_events, max_lag_s=o.overload_max_lag_s,
    )  # fmt: skip
    data_dir = o.out / "overload-gateway"
    gw = ExtraGateway.start(b.rally.redis_url, text, data_dir, o.out / "overload-gateway.log")
    b.sampler.extra[gw.proc.pid] = "gateway (overload)"
    lag: list[dict[str, Any]] = []

    def watch(t: float, point: dict[str, Any]) -> dict[str, Any]:
        m = gw.metrics()
        sample = {"t": round(t, 2), "lag_events": m.get("rally_pipeline_lag_events", 0),
                  "lag_s": m.get("rally_pipeline_lag_seconds", 0.0),
                  "shedding": m.get("rally_gateway_shedding", 0),
                  "shed_requests": m.get(SHED_HTTP, 0)}  # fmt: skip
        lag.append(sample)
        return sample

    try:
        endpoint = gw.endpoint(b.rally.endpoint())
        run = b.run_load("overload", f"rally overload {rate:,.0f}/s", "rally",
                         (Phase(o.overload_s, rate),), batch=o.batch, on_sample=watch,
                         endpoint=endpoint)  # fmt: skip
        shed_counted = gw.metrics().get(SHED_HTTP, 0)
    finally:
        gw.stop()
        b.sampler.extra.pop(gw.proc.pid, None)
        shutil.rmtree(data_dir, ignore_errors=True)
    runs.append(run)
    summary = _summary(run, lag, capacity, source, rate, max_lag_events, o.overload_max_lag_s)
    summary["gateway_shed_requests"] = round(shed_counted)
    return {"status": "ok", "runs": runs, "summary": summary, "lines": [_line(summary)]}


def _capacity(b: Bench, runs: list[dict[str, Any]]) -> tuple[float, str]:
    """Events/s the pipeline credits, and how that was found."""
    o = b.opts
    peak = b.results["scenarios"].get("peak", {}).get("summary", {})
    saturation = peak.get("saturation_eps")
    if saturation and saturation < o.peak_max_rate:
        return float(saturation), "peak saturation"
    phases = (Phase(max(CAPACITY_PROBE_S, o.overload_s / 4), 0.0),)
    run = b.run_load("overload", f"rally capacity, closed loop batch {o.batch}", "rally",
                     phases, batch=o.batch)  # fmt: skip
    runs.append(run)
    return float(run["credited_eps"]), "closed-loop credited rate"


def _summary(
    run: dict[str, Any],
    lag: list[dict[str, Any]],
    capacity: float,
    source: str,
    rate: float,
    max_lag_events: int,
    max_lag_s: float,
) -> dict[str, Any]:
    latency = run.get("latency_ingest_to_credit_ms") or {}
    credited = run.get("events_applied", 0) + run.get("events_dup", 0)
    sent = max(1, run["events_sent"])
    return {
        "capacity_eps": round(capacity),
        "capacity_from": source,
        "offered_target_eps": round(rate),
        "offered_eps": run["offered_eps"],
        "accepted_eps": run["accepted_eps"],
        "credited_eps": run["credited_eps"],
        "events_sent": run["events_sent"],
        "events_accepted": run["events_accepted"],
        "events_in": run.get("events_in", 0),
        "events_credited": credited,
        "events_shed": run["events_shed"],
        "shed_pct": round(100 * run["events_shed"] / sent, 1),
        "requests_shed": run["requests_shed"],
        "max_lag_s": max_lag_s,
        "max_lag_events": max_lag_events,
        "lag_s_peak": round(max((s["lag_s"] for s in lag), default=0.0), 2),
        "lag_events_peak": round(max((s["lag_events"] for s in lag), default=0)),
        "drained_after_s": run.get("drained_after_s"),
        "ingest_to_credit_p50_ms": latency.get("p50"),
        "ingest_to_credit_p99_ms": latency.get("p99"),
        "ingest_to_credit_max_ms": latency.get("max"),
    }


def _line(s: dict[str, Any]) -> str:
    times = s["offered_eps"] / max(1, s["capacity_eps"])
    return (
        f"offered {s['offered_eps']:,.0f}/s = {times:.1f}x capacity ({s['capacity_eps']:,}/s, "
        f"{s['capacity_from']}): accepted {s['accepted_eps']:,.0f}/s, credited "
        f"{s['credited_eps']:,.0f}/s; {s['events_accepted']:,} accepted, "
        f"{s['events_credited']:,} credited, {s['events_shed']:,} shed ({s['shed_pct']}%, "
        f"{s['requests_shed']:,} requests); ingest→credit p99 {s['ingest_to_credit_p99_ms']} ms, "
        f"max {s['ingest_to_credit_max_ms']} ms; lag peaked at {s['lag_s_peak']} s "
        f"(bound {s['max_lag_s']:g} s)"
    )
