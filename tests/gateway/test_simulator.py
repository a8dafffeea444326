"""The simulated network: seeded, valid wire events, realistic shape; and the load plumbing."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac

import msgspec
import pytest
from aiohttp import web

from actors.latency import histogram_percentiles
from benchmarks.plan import CYCLE_TOKEN, Endpoint, Phase, Plan, Schedule, Templates, Traffic
from benchmarks.report import percentiles
from engine.events import decode_json_batch
from engine.reference import Reference
from engine.rules import NetworkRules, RuleBook
from gateway.simulator import SimulatedNetwork, peak_factor, post_forever, zipf_sizes

NOW = 1_763_800_000.0


def traffic(sim: SimulatedNetwork, calls: int = 50, n: int = 400) -> list[dict]:
    out: list[dict] = []
    for i in range(calls):
        out += sim.events(NOW + i, n)
    return out


def test_same_seed_same_traffic() -> None:
    a = traffic(SimulatedNetwork(seed=7), 10)
    b = traffic(SimulatedNetwork(seed=7), 10)
    c = traffic(SimulatedNetwork(seed=8), 10)
    assert a == b
    assert a != c


def test_events_are_valid_unique_and_exactly_n() -> None:
    sim = SimulatedNetwork(channels=5, members=2_000, seed=1)
    batch = sim.events(NOW, 123)
    assert len(batch) == 123
    events = traffic(sim)
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    decoded = decode_json_batch(msgspec.json.encode({"events": events}))
    assert len(decoded) == len(events)


def test_the_mix_is_realistic() -> None:
    sim = SimulatedNetwork(channels=20, members=5_000, seed=3)
    events = traffic(sim, 100, 500)
    kinds = collections.Counter(e["kind"] for e in events)
    assert kinds["online"] == 20
    assert kinds["chat"] > 0.5 * len(events)
    assert kinds["join"] > 0
    assert kinds["leave"] > 0
    assert 0.5 < kinds["join"] / kinds["leave"] < 2, "presence churns around a steady level"
    for kind in ("viewers", "follow", "sub", "cheer", "gift_bomb"):
        assert kinds[kind] > 0, kind
    per_channel = collections.Counter(e["channel"] for e in events if e["kind"] == "chat")
    top, *_, last = [c for _, c in per_channel.most_common()]
    assert top > 5 * last, "Zipf: a few channels carry most of the chat"
    chatters = collections.Counter(e["user_id"] for e in events if e["kind"] == "chat")
    counts = sorted(chatters.values(), reverse=True)
    assert sum(counts[: len(counts) // 10]) > 0.3 * sum(counts), "a few members chat a lot"


def test_zipf_sizes() -> None:
    sizes = zipf_sizes(100_000, 1_000, 1.1)
    assert sum(sizes) == 100_000
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes) >= 1
    assert sizes[0] > 50 * sizes[-1]


def test_raid_moves_viewers_and_gift_bomb_gifts_subs() -> None:
    sim = SimulatedNetwork(channels=4, members=4_000, seed=2)
    sim.events(NOW, 5_000)
    sim.take_pending()
    src = sim.channels[1]
    before = len(src.present)
    out = sim.raid(NOW, target=0, source=1)
    assert out[0]["kind"] == "raid"
    assert out[0]["viewers"] == before
    assert sum(e["kind"] == "leave" and e["channel"] == src.name for e in out) == before
    assert len(src.present) == 0
    big = sim.raid(NOW, target=0, source=2, viewers=1_000)
    assert sum(e["kind"] == "join" for e in big) == 1_000
    assert len(sim.take_pending()) == len(out) - 1 + len(big) - 1
    bomb = sim.gift_bomb(NOW, ci=0, count=20)
    assert bomb[0]["kind"] == "gift_bomb"
    assert bomb[0]["count"] == 20
    assert [e.get("gifted") for e in bomb[1:]] == [True] * 20


def test_reference_credits_the_traffic() -> None:
    sim = SimulatedNetwork(channels=5, members=1_000, seed=4)
    ref = Reference(RuleBook({"demo": NetworkRules()}), lateness_s=2.0)
    for i in range(20):
        ref.ingest(decode_json_batch(msgspec.json.encode(sim.events(NOW + i * 10, 500))), NOW)
    ref.finish()
    assert len(ref.members) > 500
    assert all(s.balance >= 0 for s in ref.members.values())


def test_peak_factor_peaks_at_the_peak_hour() -> None:
    at = 20 * 3_600.0
    assert peak_factor(at) == pytest.approx(1.0)
    assert 0.25 <= peak_factor(at + 12 * 3_600) < 0.3
    assert peak_factor(at + 3_600) < 1.0


def test_post_forever_signs_and_paces() -> None:
    secret = "s" * 32
    got: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers["X-Rally-Timestamp"]
        mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert request.headers["X-Rally-Signature"] == mac
        got.append(len(decode_json_batch(body)))
        return web.json_response({"accepted": got[-1]}, status=202)

    async def main() -> object:
        app = web.Application()
        app.router.add_post("/v1/events", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        try:
            return await post_forever(f"http://127.0.0.1:{port}", "k", secret, rate_per_s=400,
                                      stop_at=loop.time() + 1.0, batch_size=50,
                                      sim=SimulatedNetwork(seed=5), clock=loop.time)  # fmt: skip
        finally:
            await runner.cleanup()

    counts = asyncio.run(main())
    assert counts.errors == 0
    assert counts.accepted == counts.events_sent == sum(got)
    assert 250 <= counts.events_sent <= 450


def test_templates_render_unique_ids_and_real_timestamps() -> None:

    ep = Endpoint("127.0.0.1", 1, "k", "s", "redis://x", "h")
    plan = Plan(ep, Traffic(channels=5, members=500, run_id="t"), (Phase(1, 1_000),),
                batch_size=50, cycle_events=1_000)  # fmt: skip
    t = Templates(plan, 50, 10_000)
    assert len(t.bodies) == 20
    bodies = [t.render(k, NOW + k)[0] for k in range(45)]
    events = [e for b in bodies for e in msgspec.json.decode(b"[" + b + b"]")]
    assert len({e["id"] for e in events}) == len(events) == 45 * 50
    assert all(CYCLE_TOKEN.decode() not in e["id"] for e in events)
    assert events[0]["ts"] == NOW
    assert events[-1]["ts"] == NOW + 44


def test_schedule_follows_the_rate_profile() -> None:
    s = Schedule((Phase(2, 100), Phase(1, 1_000)), share=0.5)
    assert s.total_events == 100 + 500
    assert s.due(0) == 0
    assert s.due(50) == pytest.approx(1.0)
    assert s.due(100) == pytest.approx(2.0)
    assert s.due(350) == pytest.approx(2.5)


def test_percentiles() -> None:
    assert percentiles([]) is None
    p = percentiles(range(1, 101))
    assert p is not None
    assert (p["p50"], p["p99"], p["max"]) == (50, 99, 100)
    hist = {"10": 50.0, "20": 40.0, "100": 9.0, "inf": 1.0, "sum_ms": 1_500.0, "count": 100.0}
    h = histogram_percentiles(hist, max_ms=300.0)
    assert h is not None
    assert h["p50"] == pytest.approx(10.0)
    assert 20 < h["p99"] <= 100
    assert h["max"] == 300.0
    assert h["n"] == 100
