"""`rally analytics report`: PNG charts of a KPI report and one HTML page embedding them."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

DAY_S = 86_400


def _day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))


def write_report(rep: dict[str, Any], out: str | Path) -> Path:
    """Write active.png, retention.png, tiers.png, points.png and index.html into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    days = [_day(r["day"]) for r in rep["daily"]]

    def save(fig: Any, name: str) -> str:
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        return name

    charts = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(days, [r["active"] for r in rep["daily"]], label="active members")
    ax.plot(days, [r["chatters"] for r in rep["daily"]], label="chatters")
    ax.set_title("Daily active members")
    ax.legend()
    charts.append(("Active members over time", save(fig, "active.png")))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for row in rep["retention"][-12:]:
        ks = [k for k in row if k.startswith("day_") and row[k] is not None]
        ax.plot([int(k[4:]) for k in ks], [row[k] for k in ks], marker="o",
                label=_day(row["cohort"]))  # fmt: skip
    ax.set_title("Retention by join day (share active k days after joining)")
    ax.set_xlabel("days after joining")
    if rep["retention"]:
        ax.legend(fontsize="x-small", ncol=2)
    charts.append(("Retention curves", save(fig, "retention.png")))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([str(r["tier"]) for r in rep["tiers"]], [r["members"] for r in rep["tiers"]])
    ax.set_title("Members per tier")
    ax.set_xlabel("tier")
    charts.append(("Tier mix", save(fig, "tiers.png")))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(days, [r["issued"] for r in rep["daily"]], label="issued")
    ax.bar(days, [-r["spent"] for r in rep["daily"]], label="spent")
    ax.set_title("Points flow per day")
    ax.legend()
    charts.append(("Points flow", save(fig, "points.png")))

    page = out / "index.html"
    page.write_text(_html(rep, charts))
    return page


def _html(rep: dict[str, Any], charts: list[tuple[str, str]]) -> str:
    s = rep["scope"]
    rows = [
        ("DAU (mean)", rep["active"]["dau"]), ("WAU", rep["active"]["wau"]),
        ("MAU", rep["active"]["mau"]), ("chat DAU (mean)", rep["chat"]["chat_dau"]),
        ("chat MAU", rep["chat"]["chat_mau"]), ("streak continuation", rep["streaks"]["share"]),
        ("points issued", rep["points"]["issued"]), ("points spent", rep["points"]["spent"]),
        ("points outstanding", rep["points"]["outstanding"]),
        ("avg watch time per viewer (s)", rep["watch"]["avg_watch_s"]),
    ]  # fmt: skip
    table = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    imgs = "".join(
        f"<h2>{html.escape(t)}</h2><img src='{html.escape(f)}' alt='{html.escape(t)}'>"
        for t, f in charts
    )
    title = f"Rallypoint KPIs {_day(s['first_day'])} .. {_day(s['last_day'])}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 12px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>network {html.escape(str(s['network'] or 'all'))}"
        f", channel {html.escape(str(s['channel'] or 'all'))}; snapshot "
        f"{html.escape(str(rep.get('snapshot', {}).get('id', '')))}</p>"
        f"<table>{table}</table>{imgs}</body></html>"
    )
