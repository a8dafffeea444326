"""Every benchmark scenario at a tiny size, through `python -m benchmarks` as a user runs it.

Checks that the suite runs end to end against a real `rally serve` (Redis, Ray, the shards,
the gateway) and the baselines, and that its numbers are sane. Never a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--duration", "1", "--rate", "400", "--channels", "5", "--members", "500",
    "--generators", "1", "--peak-start-rate", "1000", "--peak-max-rate", "1500",
    "--peak-step", "1", "--raid-viewers", "1000", "--raid-over", "1",
    "--watch-sizes", "500", "--batch-sizes", "1,100", "--batch-duration", "1",
    "--memory-members", "1000", "--soak-seconds", "3", "--soak-rate", "1000",
    "--soak-sample", "1", "--soak-warmup", "1",
    "--overload-seconds", "2", "--overload-lag", "0.5",
    "--draw-tickets", "20000", "--draw-members", "2000", "--draw-repeats", "1",
    "--kpis-rows", "20000", "--kpis-sink-rows", "10000",
    "--feed-clients", "20", "--feed-messages", "10",
    "--spend-rate", "50", "--spend-credit-rate", "400", "--spend-members", "20",
    "--payouts", "200", "--payout-batch", "50", "--import-members", "2000",
]  # fmt: skip

pytestmark = pytest.mark.timeout(660)


@pytest.fixture(scope="module")
def bench(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "RALLY_REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--out", str(out),
         "--results-md", str(out / "md" / "RESULTS.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return done, out


@pytest.fixture(scope="module")
def results(bench: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    done, out = bench
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_every_scenario_ran_or_said_why_not(results: dict[str, Any]) -> None:
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, sc in results["scenarios"].items():
        assert sc["status"] in ("ok", "unavailable"), (name, sc.get("reason"))
        if sc["status"] == "unavailable":
            assert sc["reason"], name


def test_files_are_written(bench: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = bench
    for name in ("results.json", "throughput.png", "latency.png", "soak.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "throughput.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "md" / "RESULTS.md").read_text()
    assert "![throughput](results/throughput.png)" in md
    assert "CPU per applied event: " in md
    assert (out / "md" / "results" / "latency.png").exists()
    assert "targets" in done.stdout


def _rally_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        run
        for sc in results["scenarios"].values()
        for run in sc.get("runs", [])
        if run["target"] == "rally"
    ]


def test_load_runs_are_sane(results: dict[str, Any]) -> None:
    runs = [run for sc in results["scenarios"].values() for run in sc.get("runs", [])]
    assert runs
    for run in runs:
        label = run["label"]
        assert run["errors"] == 0, (label, run["last_error"])
        assert run["probes_lost"] == 0, label
        assert not run["failures"], label
        assert 0 < run["events_accepted"] <= run["events_sent"], label
        assert run["accepted_eps"] > 0, label
        assert run["credited_eps"] > 0, label
        for key in ("latency_ack_ms", "latency_e2e_ms"):
            lat = run[key]
            assert lat is not None, (label, key)
            assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], (label, key, lat)
        assert run["processes"], label
        assert all(p["cpu_s"] >= 0 and p["rss_max_mb"] > 0 for p in run["processes"]), label


def test_rally_credits_what_it_accepted(results: dict[str, Any]) -> None:
    for run in _rally_runs(results):
        label = run["label"]
        assert run["events_in"] >= run["events_accepted"], label
        assert run["events_applied"] + run["events_dup"] == run["events_in"], label
        assert run["events_dup"] == 0, label
        assert run["credits_applied"] > 0, label
        srv = run["latency_ingest_to_credit_ms"]
        assert srv is not None, label
        assert 0 <= srv["p50"] <= srv["p99"] <= srv["max"], (label, srv)
        roles = {p["role"] for p in run["processes"]}
        assert {"gateway", "redis-server"} <= roles, (label, roles)
        assert any(r.startswith("ray::") for r in roles), (label, roles)
        cpu = run["cpu_us_per_event"]  # the run's CPU, until its last event was applied
        assert cpu["all"] > 0, (label, cpu)
        assert {"gateway", "redis-server"} <= cpu.keys(), (label, cpu)
        assert not any(r.startswith(("loadgen", "baseline")) for r in cpu), (label, cpu)
        assert cpu["all"] >= sum(v for r, v in cpu.items() if r != "all") - 0.01 * len(cpu)


def test_scenario_summaries(results: dict[str, Any]) -> None:
    sc = results["scenarios"]
    assert sc["steady"]["summary"]["ratio_vs_naive"] > 0
    assert sc["peak"]["summary"]["best_step_credited_eps"] > 0
    assert sc["payouts"]["summary"]["webhook"]["lost"] == 0
    assert sc["payouts"]["summary"]["embedded"]["gas_per_payout"] > 0
    raid = sc["raid"]["summary"]
    assert raid["all_present_after_s"] is not None
    assert raid["present_peak"] >= 1000
    for w in sc["watch-tick"]["watch"]:
        assert w["payout_s"] is not None, w
        assert w["payout_s"] > 0, w
        assert w["verified"] == w["viewers"], w
    over = sc["overload"]["summary"]
    assert abs(over["offered_target_eps"] - 2 * over["capacity_eps"]) <= 1
    assert 0 < over["events_accepted"] <= over["events_in"] == over["events_credited"]
    assert over["events_shed"] + over["events_accepted"] <= over["events_sent"]
    assert over["ingest_to_credit_p99_ms"] is not None
    spend = sc["spend"]["summary"]
    assert spend["spends"] > 0
    assert spend["spends_ok"] == spend["spends"]
    assert spend["spend_errors"] == 0
    assert 0 < spend["spend_latency_ms_p50"] <= spend["spend_latency_ms_p99"]
    mem = sc["batches"]["memory"]
    assert mem["memory_new_members"] >= 1000
    assert mem["redis_bytes_per_member_by_family"]["mstate"] > 0
    assert mem["redis_durable_bytes_per_member"] > 0
    kpis = sc["kpis"]["summary"]
    assert kpis["snapshot_rows"]["ledger"] == kpis["ledger"] == 20_000
    assert kpis["ledger_rows_per_s"] > 0
    assert kpis["event_rows_per_s"] > 0
    labels = [run["label"] for run in sc["batches"]["runs"]]
    assert {"rally websocket 1/frame", "rally websocket 1/frame, bulk acks"} <= set(labels)
    assert {"naive batch 1", "strong batch 100"} <= set(labels)
    draw = sc["draw"]["summary"]
    assert (draw["tickets"], draw["members"]) == (20_000, 2_000)
    for place in ("winners_1", "winners_10"):
        assert 0 < draw[place]["close_s"] <= draw[place]["close_and_draw_s"]
    imp = sc["import"]["summary"]
    assert (imp["members"], imp["first_imported"], imp["rerun_unchanged"]) == (2000, 2000, 2000)
    feed = sc["feed"]["summary"]
    assert feed["delivered"] == 200
    assert feed["messages_per_s"] > 0
    goals = {g["goal"]: g for g in results["goals"]}
    assert len(goals) == 12  # issue 8's eleven and the bot's reply latency (issue 12)
    assert sc["steady"]["summary"]["lateness_s"] == 2.0  # the demo settings' default
    (steady,) = [g for g in goals.values() if g["goal"].startswith("ingest→credit p99")]
    assert "held for the allowed lateness, 2 s" in steady["measured"]
    slow = sc["steady"]["runs"][0]["redis_slow"]
    assert slow["over_10ms"] >= 0
    assert all(g["met"] in (True, False, None) for g in goals.values())


def test_soak_samples_memory_disk_processes_and_lag(results: dict[str, Any]) -> None:
    soak = results["scenarios"]["soak"]
    samples = soak["runs"][0]["soak_samples"]
    assert len(samples) >= 3
    assert samples[-1]["final"]
    for s in samples:
        assert s["used_memory"] > 0
        assert s["aof_bytes"] > 0
        assert {"gateway", "redis-server"} <= set(s["rss"]), s["rss"]
        assert any(role.startswith("ray::") for role in s["rss"])
        assert set(s["streams"]) == {"ingest", "credits", "ledgerlog"}
        assert s["lag_events"] >= 0
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    summary = soak["summary"]
    assert summary["events_after_warmup"] > 0
    assert summary["bytes_per_event"] is not None
    # drained, then trimmed: what the soak appended is gone. An idle deployment still appends
    # a few entries a stream with every watch-clock tick (the clock, the partitions' marks,
    # a stage-A mark), trimmed a second later: up to ~4 a stream of the six wait at any time
    assert sum(summary["streams_end"].values()) <= 24
