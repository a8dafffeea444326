"""Analytics end to end: weeks of traffic for a known population through the gateway,
Redis, Ray and the ledger sink into DuckDB; a snapshot by `rally analytics snapshot`; every
KPI of the gateway's analytics routes and of `rally analytics kpis --json` equals a
plain-Python computation over the same events (tests/e2e/kpi_model.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from analytics.archive import LedgerArchive
from engine.reference import Reference
from tests.e2e.conftest import get, post, rally_cli
from tests.e2e.kpi_model import DAYS, FIRST_DAY, Model, weeks_of_traffic
from tests.e2e.traffic import as_events, batches


def poll(condition, timeout_s: float = 120.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def same(got: Any, want: Any, where: str = "") -> None:
    """Equal, floats within 1e-9."""
    if isinstance(want, dict):
        assert isinstance(got, dict), (where, got, want)
        assert set(got) >= set(want), (where, got, want)
        for k, v in want.items():
            same(got[k], v, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), (where, got, want)
        assert len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9), (where, got, want)
    else:
        assert got == want, (where, got, want)


def day_text(d: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(d * 86_400))


def test_every_kpi_matches_plain_python(deployment) -> None:
    url, config = deployment.url, str(deployment.config)
    status, body = get(url, "/v1/analytics/kpis?network=tv")
    assert (status, body["error"]) == (404, "no_snapshot")
    wire = weeks_of_traffic()
    for chunk in batches(wire, 1_000):
        assert post(url, chunk) == (202, {"accepted": len(chunk)})
    assert deployment.client.wait_idle(120)

    book = deployment.settings.rulebook()
    ref = Reference(book, deployment.settings.limits.lateness_s)
    ref.ingest(as_events(wire), 0.0)
    ref.finish()
    ledger = [e for entries in ref.ledger.values() for e in entries]
    archive = LedgerArchive(deployment.settings.archive_path())
    poll(lambda: archive.scalar("SELECT count(*) FROM events") == len(wire)
         and archive.count()[0] == len(ledger)
         and archive.scalar("SELECT count(*) FROM tier_changes") == len(ref.tier_changes),
         what="the sink to land every event, entry and tier change")  # fmt: skip
    assert ref.tier_changes, "the traffic moves some members up a tier"

    done = rally_cli("analytics", "snapshot", "--config", config)
    assert done.returncode == 0, done.stderr
    model = Model(wire, ledger, ref.tier_changes)
    last = FIRST_DAY + DAYS - 1

    status, got = get(url, "/v1/analytics/kpis?network=tv")  # default: 30 days to the last
    assert status == 200, got
    same(got, model.report(last - 29, last, "tv", None), "kpis")
    first_id = got["snapshot"]["id"]
    assert any(r["day_7"] for r in got["retention"])
    assert got["streaks"]["streak_7"] > 0
    assert got["watch"]["ticks"] > 0
    assert got["attendance"]

    first = FIRST_DAY + 5
    path = f"/v1/analytics/kpis?network=tv&from={day_text(first)}&to={day_text(last - 3)}"
    status, got = get(url, path)
    assert status == 200, got
    same(got, model.report(first, last - 3, "tv", None), "period")

    status, got = get(url, "/v1/analytics/channels/c1?network=tv")
    assert status == 200, got
    same(got["kpis"], model.report(last - 29, last, "tv", "c1"), "channel c1")
    assert got["channel"]["members"] == len({e["user_id"] for e in wire
                                             if e["channel"] == "c1" and e["user_id"]})  # fmt: skip
    assert get(url, "/v1/analytics/channels/nope?network=tv")[0] == 404
    # reports are kept per snapshot: the same again, until a newer snapshot exists
    assert get(url, "/v1/analytics/kpis?network=tv")[1]["snapshot"]["id"] == first_id
    assert rally_cli("analytics", "snapshot", "--config", config).returncode == 0
    status, again = get(url, "/v1/analytics/kpis?network=tv")
    assert again["snapshot"]["id"] != first_id
    same(again, model.report(last - 29, last, "tv", None), "kpis again")
    assert get(url, "/v1/analytics/kpis?network=tv&from=2026-02-30")[1]["field"] == "from"
    assert get(url, "/v1/analytics/kpis?network=tv", headers={})[0] == 401

    done = rally_cli("analytics", "kpis", "--config", config, "--channel", "c2", "--json")
    assert done.returncode == 0, done.stderr
    same(json.loads(done.stdout), model.report(last - 29, last, None, "c2"), "cli c2")
    done = rally_cli("analytics", "kpis", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "MAU" in done.stdout
    done = rally_cli("analytics", "sql", "--config", config, "--json",
                     "SELECT count(*) AS n FROM events WHERE kind = 'chat'")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == [[sum(e["kind"] == "chat" for e in wire)]]
    done = rally_cli("analytics", "sql", "--config", config, "DELETE FROM ledger")
    assert done.returncode == 2
    assert "only SELECT" in done.stderr
