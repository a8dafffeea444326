"""`rally demo`: the whole system on embedded defaults, fed by a simulated network,
with a live terminal table of top members, tiers and throughput."""

from __future__ import annotations

import asyncio
import time

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from actors.keys import Keys
from actors.latency import histogram_percentiles
from actors.redisconn import connect
from analytics.archive import LedgerArchive
from engine.member import day_of, effective_streak, state_decoder
from gateway.audit import audit
from gateway.runtime import Runtime, start_gateway
from gateway.settings import Settings
from gateway.simulator import PostCounts, SimulatedNetwork, post_forever

REFRESH_S = 0.5


class Dashboard:
    """Reads the committed state from Redis and renders the live table."""

    def __init__(
        self, r: redis.Redis, keys: Keys, settings: Settings, network: str, channels: list[str]
    ) -> None:
        self.r, self.keys, self.settings, self.network = r, keys, settings, network
        self.channels = channels
        self.tiers = settings.rulebook().network(network).tiers
        self.last: tuple[float, dict[str, int]] = (time.monotonic(), {})

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.stats).items()}

    def render(self, backlog: int) -> Group:
        now = time.monotonic()
        stats = self.stats()
        t0, before = self.last
        dt = max(now - t0, 1e-6)
        self.last = (now, stats)

        def rate(field: str) -> str:
            return f"{(stats.get(field, 0) - before.get(field, 0)) / dt:,.0f}/s"

        hist = {k.decode(): float(v) for k, v in self.r.hgetall(self.keys.latency).items()}
        pct = histogram_percentiles(hist, hist.get("max_ms"))
        p50, p99 = (pct["p50"], pct["p99"]) if pct else (None, None)
        head = Table(title="Rallypoint demo", show_header=False)
        head.add_column("metric")
        head.add_column("value", justify="right")
        head.add_column("metric")
        head.add_column("value", justify="right")
        rows = [
            ("events accepted", f"{stats.get('events_in', 0):,}", "accepted", rate("events_in")),
            (
                "events credited",
                f"{stats.get('events_applied', 0):,}",
                "credited",
                rate("events_applied"),
            ),
            ("ledger entries", f"{stats.get('entries', 0):,}", "credits", rate("credits_applied")),
            ("members", f"{self.r.hlen(self.keys.mstate):,}", "backlog", f"{backlog:,}"),
            ("ingest→credit p50", _ms(p50), "ingest→credit p99", _ms(p99)),
        ]
        for row in rows:
            head.add_row(*row)
        return Group(head, self.top_table())

    def top_table(self, n: int = 10) -> Table:
        boards = [self.keys.lb_all(f"{self.network}:{c}") for c in self.channels]
        top = self.r.zunion(boards, withscores=True)[::-1][:n] if boards else []
        table = Table(title=f"Top members of {self.network}")
        for col in ("#", "member", "tier", "balance", "lifetime", "streak"):
            table.add_column(col, justify="right" if col != "member" else "left")
        ids = [u.decode() for u, _ in top]
        raws = self.r.hmget(self.keys.mstate, [f"{self.network}:{u}" for u in ids]) if ids else []
        today = day_of(time.time())
        for i, (uid, raw) in enumerate(zip(ids, raws, strict=True), 1):
            if raw is None:
                continue
            st = state_decoder.decode(raw)
            table.add_row(
                str(i), st.name or uid, self.tiers.names[st.tier], f"{st.balance:,}",
                f"{st.lifetime:,}", str(effective_streak(st, today)),
            )  # fmt: skip
        return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


async def run_demo(settings: Settings, *, seconds: float, rate: float, batch: int) -> int:
    console = Console()
    network = settings.default_network() or "demo"
    api_key = settings.api_keys[0]
    loop = asyncio.get_running_loop()
    console.print(
        f"[bold]rally demo[/bold]: starting Redis, Ray and the actors in {settings.data_dir} ..."
    )
    runtime = Runtime(settings)
    runner = None
    poster: asyncio.Task[PostCounts] | None = None
    try:
        runtime.start()  # in this thread: the redis-server it starts dies with its starter
        assert runtime.client is not None
        runner, port = await start_gateway(settings, runtime.redis_url, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"
        r = connect(runtime.redis_url)
        keys = Keys.of(settings.namespace, runtime.redis_url)
        sim = SimulatedNetwork(
            network=network, channels=5, members=2_000, seed=1, run_id=f"demo{int(time.time())}"
        )
        dash = Dashboard(r, keys, settings, network, list(sim.channel_names))
        console.print(f"gateway on {url}; posting ~{rate:,.0f} events/s for {seconds:.0f} s")
        stop_at = time.time() + seconds
        poster = asyncio.create_task(
            post_forever(
                url, api_key.key, api_key.secrets[0], rate, stop_at, batch, sim=sim, network=network
            )
        )
        with Live(dash.render(0), console=console, refresh_per_second=4) as live:
            while not poster.done():
                await asyncio.sleep(REFRESH_S)
                backlog = await loop.run_in_executor(None, runtime.client.backlog)
                live.update(dash.render(backlog))
            counts = poster.result()
            await loop.run_in_executor(None, runtime.client.wait_idle, 60.0)
            live.update(dash.render(0))
        console.print()
        console.print(
            f"sent {counts.events_sent:,} events in {counts.requests:,} requests: "
            f"{counts.accepted:,} accepted, {counts.rejected:,} rejected, {counts.errors:,} failed"
        )
        archive = LedgerArchive(settings.archive_path())
        report = await loop.run_in_executor(None, audit, r, keys, settings.rulebook(), archive)
        verdict = "[green]passed[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(
            f"audit {verdict}: {report.members:,} members, {report.entries:,} ledger entries "
            f"({report.archived:,} from the archive)"
        )
        for p in report.problems[:20]:
            console.print(f"  [red]{p}[/red]")
        await loop.run_in_executor(None, _kpi_line, console, settings)
        return 0 if report.ok and counts.accepted > 0 else 1
    finally:
        if poster is not None and not poster.done():
            poster.cancel()
        if runner is not None:
            await runner.cleanup()
        await loop.run_in_executor(None, runtime.stop)


def _kpi_line(console: Console, settings: Settings) -> None:
    """A snapshot and one line of KPIs; a failure here only prints a note."""
    from analytics import snapshot
    from analytics.archive import ArchiveError
    from analytics.query import kpi_report

    try:
        snapshot.take(LedgerArchive(settings.archive_path()), settings.snapshot_dir(),
                      time.time(), settings.analytics.snapshots_kept)  # fmt: skip
        rep = kpi_report(settings.snapshot_dir())
    except (snapshot.SnapshotError, ArchiveError, OSError) as err:
        console.print(f"[yellow]analytics snapshot skipped[/yellow]: {err}")
        return
    a, p = rep["active"], rep["points"]
    console.print(
        f"analytics: DAU {a['dau_last_day']:,}, chat MAU {rep['chat']['chat_mau']:,}, "
        f"points issued {p['issued']:,}, outstanding {p['outstanding']:,} "
        f"(rally analytics kpis --data-dir {settings.data_dir} for the rest)"
    )
