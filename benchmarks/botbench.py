"""The bot scenario: command reply latency through a real IRC server, and lines ingested.

A real InspIRCd on a free loopback port; `rally bot` as its own process (connector + command
bot + the ingest append into the deployment's Redis) joined to CHANNELS channels; one viewer
connection per channel in this process sends chat lines at a fixed total rate, one in
COMMAND_EVERY of them a command (`!hi`, a custom text command). Latency: from the viewer
writing the command line to the bot's reply reaching that viewer (both clocks here), p50/p99,
at each rate. Ingest: the bot's lines per second into the log (Redis stats `events_in`).
The bot's rate limit is lifted for the run (Twitch's 20 / 30 s would measure only the wait).

Standalone (no deployment needed, its own redis-server): `python -m benchmarks.botbench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.keys import Keys
from actors.redisconn import connect
from gateway.ircd_server import InspIRCd
from gateway.redis_server import RedisServer

CHANNELS = 50
COMMAND_EVERY = 10
RATES = (100.0, 5_000.0)
BENCH_SENDQ_BYTES = 10_485_760
"""The bot's connection carries every channel's lines: a larger server buffer per client."""
BOT_CONF = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{redis_url}"
[networks.bench.earn]
[bot]
port = {port}
channels = {channels}
caps = ["message-tags"]
trust_client_tags = true
rate_limit = 10000
rate_limit_moderator = 10000
rate_window_s = 1.0
max_outbound_queue = 100000
[[bot.commands]]
channel = "*"
name = "hi"
response = "hi {{user}} #{{args}}"
"""


LATE_REPLY_S = 1.0
"""How long replies still missing once every line is in are waited for."""


class _Viewer:
    def __init__(self, port: int, nick: str, channel: str) -> None:
        self.port, self.nick, self.channel = port, nick, channel
        self.sent: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.ready = asyncio.Event()
        self.bot_here = asyncio.Event()

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        self.writer.write(f"CAP REQ :message-tags\r\nNICK {self.nick}\r\nUSER {self.nick} 0 * :v\r\n"
                          f"CAP END\r\n".encode())  # fmt: skip
        while True:
            raw = await reader.readline()
            if not raw:
                return
            now = time.perf_counter()
            line = raw.decode(errors="replace")
            if line.startswith("PING"):
                self.writer.write(b"PONG" + raw[4:])
            elif " 001 " in line:
                self.writer.write(f"JOIN #{self.channel}\r\n".encode())
            elif " JOIN " in line and line.startswith(f":{self.nick}!"):
                self.ready.set()
            elif (" JOIN " in line and line.startswith(":rallybot!")) or (
                " 353 " in line and "rallybot" in line
            ):
                self.bot_here.set()
            elif " PRIVMSG " in line and "#q" in line:
                tag = line.rsplit("#q", 1)[1].strip()
                sent = self.sent.pop(tag, None)
                if sent is not None:
                    self.latencies_ms.append((now - sent) * 1000)

    def send(self, text: str, uid: int, tag: str | None) -> None:
        if tag is not None:
            self.sent[tag] = time.perf_counter()
        self.writer.write(f"@+user-id={uid} PRIVMSG #{self.channel} :{text}\r\n".encode())


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


async def _drive(port: int, rates: tuple[float, ...], seconds: float, channels: int,
                 events_in: Any, bot: subprocess.Popen[bytes]) -> list[dict[str, Any]]:  # fmt: skip
    viewers = [_Viewer(port, f"v{i}", f"c{i}") for i in range(channels)]
    tasks = [asyncio.create_task(v.run()) for v in viewers]
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 60)
    deadline = time.monotonic() + 60
    while not all(v.bot_here.is_set() for v in viewers):
        if bot.poll() is not None:
            raise RuntimeError(f"rally bot exited with {bot.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("rally bot did not join every channel in time")
        for v in viewers:
            if not v.bot_here.is_set():
                v.writer.write(f"NAMES #{v.channel}\r\n".encode())
        await asyncio.sleep(0.2)
    out = []
    n = 0
    for rate in rates:
        for v in viewers:
            v.latencies_ms.clear()
            v.sent.clear()
        before = events_in()
        start = time.perf_counter()
        tick = 0.01
        sent = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(rate * elapsed) - sent
            for _ in range(max(0, due)):
                v = viewers[n % channels]
                is_cmd = n % COMMAND_EVERY == 0
                v.send(f"!hi #q{n}" if is_cmd else f"hello number {n}", 1000 + n % 5000,
                       str(n) if is_cmd else None)  # fmt: skip
                n += 1
                sent += 1
            await asyncio.sleep(tick)
        took = time.perf_counter() - start
        # until every line sent is in the log (polls Redis)
        while events_in() - before < sent and time.perf_counter() - start < took + 30:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        all_in = time.perf_counter() - start
        late_until = time.perf_counter() + LATE_REPLY_S  # late replies: until all came
        while any(v.sent for v in viewers) and time.perf_counter() < late_until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        ingested = events_in() - before
        lat = [x for v in viewers for x in v.latencies_ms]
        lost = sum(len(v.sent) for v in viewers)
        out.append({
            "offered_lines_per_s": rate, "sent_lines": sent, "sent_lines_per_s": round(sent / took),
            "commands": len(lat) + lost, "replies": len(lat), "no_reply": lost,
            "reply_p50_ms": _pct(lat, 0.50), "reply_p99_ms": _pct(lat, 0.99),
            "ingested_lines": ingested, "all_ingested_after_s": round(all_in, 2),
            "ingested_lines_per_s": round(ingested / all_in),
        })  # fmt: skip
    for t in tasks:
        t.cancel()
    return out


def measure(redis_url: str, namespace: str, work_dir: Path, *, rates: tuple[float, ...] = RATES,
            seconds: float = 10.0, channels: int = CHANNELS) -> dict[str, Any]:  # fmt: skip
    """Start InspIRCd and `rally bot`, drive it, stop both; the figures."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ircd = InspIRCd(work_dir, sendq_bytes=BENCH_SENDQ_BYTES).start()
    port = ircd.port
    conf = work_dir / "bot.toml"
    chans = json.dumps([f"c{i}" for i in range(channels)])
    conf.write_text(BOT_CONF.format(ns=namespace, data_dir=work_dir, redis_url=redis_url,
                                    port=port, channels=chans))  # fmt: skip
    log = (work_dir / "bot.log").open("wb")
    bot = subprocess.Popen([sys.executable, "-m", "gateway.cli", "bot", "--config", str(conf)],
                           stdout=log, stderr=log)  # fmt: skip
    r = connect(redis_url)
    stats = Keys.of(namespace, redis_url).stats

    def events_in() -> int:
        return int(r.hget(stats, "events_in") or 0)

    try:
        runs = asyncio.run(_drive(port, rates, seconds, channels, events_in, bot))
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(30)
        except subprocess.TimeoutExpired:
            bot.kill()
        ircd.stop()
        r.close()
        log.close()
    return {"channels": channels, "command_every": COMMAND_EVERY, "seconds": seconds,
            "cpus": os.cpu_count(), "runs": runs}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description="bot reply latency and ingest (standalone)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rates", default=",".join(str(int(x)) for x in RATES))
    p.add_argument("--channels", type=int, default=CHANNELS)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            rates = tuple(float(x) for x in a.rates.split(","))
            res = measure(server.url, "botbench", Path(tmp) / "bot", rates=rates,
                          seconds=a.seconds, channels=a.channels)  # fmt: skip
        finally:
            server.stop()
    print(json.dumps(res, indent=2))
    if res["runs"]:
        print(statistics.mean(r["sent_lines_per_s"] for r in res["runs"]), file=sys.stderr)


if __name__ == "__main__":
    main()
