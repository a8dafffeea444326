"""`rally analytics report`: PNG charts of a KPI report and one HTML page embedding them."""

from __future__ import annotations

import datetime as dt
import html
import time
from pathlib import Path
from typing import Any

DAY_S = 86_400
EPOCH = dt.date(1970, 1, 1)


def _day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))


def _date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=day)


def retention_curves(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """The retention of all cohorts together: for k = 0 and each k of the matrix whose share
    is known for some cohort, the members active k days after joining over the members of
    those cohorts (day 0: everyone)."""
    xs, ys = [0], [1.0]
    for k in (int(c[4:]) for c in (rows[0] if rows else {}) if c.startswith("day_")):
        known = [r for r in rows if r[f"day_{k}"] is not None]
        n = sum(r["members"] for r in known)
        if n:
            xs.append(k)
            ys.append(sum(r[f"day_{k}"] * r["members"] for r in known) / n)
    return xs, ys


def write_report(rep: dict[str, Any], out: str | Path) -> Path:
    """Write active.png, retention.png, tiers.png, points.png and index.html into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    days = [_date(r["day"]) for r in rep["daily"]]

    def dated(ax: Any) -> None:
        locator = mdates.AutoDateLocator(maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))

    def save(fig: Any, name: str) -> str:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        return name

    charts = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(days, [r["active"] for r in rep["daily"]], marker=".", label="active members")
    ax.plot(days, [r["chatters"] for r in rep["daily"]], marker=".", label="chatters")
    ax.set_title("Daily active members")
    ax.set_ylim(bottom=0)
    dated(ax)
    ax.legend()
    charts.append(("Active members over time", save(fig, "active.png")))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    known = [r for r in rep["retention"] if any(r[k] is not None for k in r if k[:4] == "day_")]
    for row in known[-8:]:
        ks = [k for k in row if k.startswith("day_") and row[k] is not None]
        ax.plot([0] + [int(k[4:]) for k in ks], [1.0] + [row[k] for k in ks], marker="o",
                alpha=0.6, label=f"{_day(row['cohort'])} ({row['members']:,})")  # fmt: skip
    if known:
        xs, ys = retention_curves(rep["retention"])
        ax.plot(xs, ys, color="black", linewidth=2.5, marker="o", label="all cohorts")
        ax.legend(fontsize="x-small", ncol=2, title="joined (members)", title_fontsize="x-small")
    else:
        ax.text(0.5, 0.5, "no cohort of the period has been a member for a day yet",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.set_title("Retention by join day (share active k days after joining)")
    ax.set_xlabel("days after joining")
    ax.set_xticks([0, 1, 7, 14, 30])
    ax.set_xlim(-0.5, 30.5)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    charts.append(("Retention curves", save(fig, "retention.png")))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar([f"tier {r['tier']}" for r in rep["tiers"]], [r["members"] for r in rep["tiers"]])
    ax.bar_label(bars, fmt="{:,.0f}")
    ax.set_title("Members per tier (end of the period)")
    charts.append(("Tier mix", save(fig, "tiers.png")))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(days, [r["issued"] for r in rep["daily"]], label="issued")
    ax.bar(days, [-r["spent"] for r in rep["daily"]], label="spent")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("Points flow per day (spent below zero)")
    dated(ax)
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
        ("points imported", rep["points"]["imported"]),
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
