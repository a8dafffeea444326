"""`rally status` and `rally deadletter list` as rich tables."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from actors.deadletter import DeadLetter
from actors.health import Health

_STATE_STYLE = {
    "running": "green", "failing": "yellow", "blocked": "red", "fenced": "red", "dead": "red",
    "stopped": "yellow", "absent": "dim",
}  # fmt: skip

SHARD_COLUMNS = (
    "shard", "state", "node", "pid", "starts", "restarts", "errors", "batches", "stream", "group",
    "lag", "behind", "dead letters", "heartbeat", "in state",
)  # fmt: skip
TEXT_COLUMNS = ("shard", "state", "node", "stream", "group")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3_600:.1f} h"


def print_health(console: Console, report: Health) -> None:
    if not report.redis_up:
        console.print("[red]NOT READY[/red]")
        for problem in report.problems:
            console.print(f"[red]-[/red] {problem}")
        return
    shards = Table(title="shards", title_justify="left")
    for name in SHARD_COLUMNS:
        shards.add_column(name, justify="left" if name in TEXT_COLUMNS else "right")
    for sh in report.shards:
        style = _STATE_STYLE.get(sh.state, "")
        shards.add_row(
            sh.shard, f"[{style}]{sh.state}[/{style}]" if style else sh.state,
            (sh.node or "-")[:8], str(sh.pid or "-"), str(sh.starts), str(sh.restarts), str(sh.errors),
            f"{sh.batches:,}", sh.stream, sh.group, f"{sh.lag:,}", _age(sh.behind_s),
            str(sh.dead_letters), _age(sh.heartbeat_age_s), _age(sh.state_s),
        )  # fmt: skip
    console.print(shards)
    streams = Table(title="streams", title_justify="left")
    for name in ("stream", "length", "group", "lag", "pending", "dead letters"):
        streams.add_column(name, justify="left" if name in TEXT_COLUMNS else "right")
    for st in report.streams:
        groups = st.groups or []
        if not groups:
            streams.add_row(st.stream, f"{st.length:,}", "-", "-", "-", str(st.dead_letters))
        for g in groups:
            streams.add_row(st.stream, f"{st.length:,}", g.group, f"{g.lag:,}",
                            f"{g.pending:,}", str(st.dead_letters))  # fmt: skip
    console.print(streams)
    console.print(f"dead letters: {report.dead_letters} (rally deadletter list)")
    if report.ready:
        console.print("[green]READY[/green]")
    else:
        console.print("[red]NOT READY[/red]")
        for problem in report.problems:
            console.print(f"[red]-[/red] {problem}")


def _when(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000)) + "Z"


def print_dead_letters(console: Console, letters: Sequence[DeadLetter]) -> None:
    table = Table(title=f"dead letters ({len(letters)})", title_justify="left")
    for name in ("id", "stream", "entry", "shard", "failures", "when", "fields", "error"):
        table.add_column(name, overflow="fold")
    for dl in letters:
        fields = ", ".join(f"{k.decode(errors='replace')}={len(v)} B" for k, v in dl.fields.items())
        table.add_row(
            dl.id, dl.stream, dl.entry_id, dl.shard, str(dl.failures), _when(dl.ts_ms), fields,
            dl.error,
        )  # fmt: skip
    console.print(table)
