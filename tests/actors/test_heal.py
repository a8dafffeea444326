"""Shards heal themselves and say how they are, on real Redis and Ray:
a poison entry is dead-lettered and its partition moves on; `rally deadletter list|retry`;
shard health on /readyz, /metrics and `rally status`, through a kill -9 and a dead shard.
(Transient failures and the dead-letter streak limit: tests/actors/test_deadletter.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from prometheus_client.parser import text_string_to_metric_families

from actors import health
from actors.client import RallyClient
from actors.deadletter import iter_dead_letters
from actors.keys import Keys
from engine.events import Chat, Event
from gateway.cli import main
from gateway.ingest import split_by_partition
from gateway.settings import Settings, load_settings
from tests.actors.conftest import append, assert_credited
from tests.gateway.helpers import serve

T0 = 1_795_000_000.0
MAX_FAILURES = 3
CONFIG = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{url}"
[shards]
channel = 2
member = 2
[clock]
watch_interval_s = 0
streak_rollover = false
[limits]
max_entry_failures = {failures}
"""


def poll(cond: Callable[[], object], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


Deployment = tuple[RallyClient, Settings, Path]


@pytest.fixture
def deployment(
    ray_cluster: None, redis_server, namespace: str, tmp_path: Path
) -> Iterator[Deployment]:
    config = tmp_path / "rally.toml"
    config.write_text(
        CONFIG.format(ns=namespace, data_dir=tmp_path, url=redis_server.url, failures=MAX_FAILURES)
    )
    settings = load_settings(config, {})
    client = RallyClient(settings.runtime(redis_server.url)).start(scheduler=False)
    yield client, settings, config
    client.stop()


def chats(prefix: str, channel: str, n: int, t0: float) -> list[Event]:
    return [
        Chat(id=f"{prefix}{i}", network="n", channel=channel, user_id=f"{prefix}u{i}", ts=t0 + i)
        for i in range(n)
    ]


def partition(cfg: Any, channel: str) -> int:
    probe = Chat(id="probe", network="n", channel=channel, user_id="x", ts=T0)
    return next(iter(split_by_partition([probe], cfg.channel_shards)))


def rally(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_poison_entry_is_dead_lettered_and_the_partition_moves_on(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    client, settings, config = deployment
    r = redis.Redis.from_url(client.cfg.redis_url)
    keys = Keys(settings.namespace)
    p = partition(client.cfg, "c")
    before, after = chats("a", "c", 5, T0), chats("b", "c", 5, T0 + 10)
    append(r, client.cfg, before)
    poison = b"\xc1 this is not msgpack"
    r.xadd(keys.ingest(p), {"e": poison, "n": 1})
    append(r, client.cfg, after)
    assert client.wait_idle(120)

    assert_credited(r, keys, before + after)  # the events after the poison entry too
    [dl] = list(iter_dead_letters(r, keys))
    assert (dl.stream, dl.shard, dl.failures) == (f"ingest:{p}", f"channel-{p}", MAX_FAILURES)
    assert dl.fields == {b"e": poison, b"n": b"1"}
    assert "Decode" in dl.error, dl.error
    assert int(r.hget(keys.stats, "dead_letters")) == 1
    assert not r.exists(health.failures_key(keys))  # the counter went with the entry

    def shard() -> health.ShardHealth:
        report = health.read_health(r, keys, health.expected_shards(2, 2))
        assert report.ready  # a dead letter is shown, not an outage
        assert report.dead_letters == 1
        return next(s for s in report.shards if s.shard == f"channel-{p}")

    assert shard().dead_letters == 1
    poll(lambda: shard().errors >= MAX_FAILURES)  # heartbeats trail by up to a second

    code, out = rally(capsys, "deadletter", "list", "--config", str(config))
    assert code == 0
    assert dl.id in out
    assert f"ingest:{p}" in out
    assert "Decode" in out
    code, out = rally(capsys, "deadletter", "list", "--config", str(config), "--stream", "x:9")
    assert code == 0
    assert dl.id not in out

    # retry re-appends the original entry once, however often it is asked; being poison,
    # it fails again and comes back as a new dead letter
    length = r.xlen(keys.ingest(p))
    code, out = rally(capsys, "deadletter", "retry", dl.id, "--config", str(config))
    assert code == 0
    assert "re-appended" in out
    code, out = rally(capsys, "deadletter", "retry", dl.id, "--config", str(config))
    assert code == 0
    assert "no such dead letter" in out
    assert r.xlen(keys.ingest(p)) == length + 1
    assert client.wait_idle(120)
    [again] = list(iter_dead_letters(r, keys))
    assert again.id != dl.id
    assert again.entry_id != dl.entry_id
    assert again.fields == dl.fields
    assert int(r.hget(keys.stats, "dead_letters")) == 2
    code, _ = rally(capsys, "deadletter", "retry", "--config", str(config))
    assert code == 2  # neither ids nor --all
    code, _ = rally(capsys, "deadletter", "retry", "nonsense", "--config", str(config))
    assert code == 2


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _readyz_and_metrics(settings: Settings, url: str) -> tuple[int, dict[str, Any], str]:
    async with serve(settings, url) as http:
        async with http.get("/readyz") as resp:
            status, body = resp.status, await resp.json()
        async with http.get("/metrics") as resp:
            return status, body, await resp.text()


def test_health_on_readyz_metrics_and_status_through_kill9_and_a_dead_shard(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "DEAD_AFTER_S", 4.0)  # the readers' bound, to keep this short
    client, settings, config = deployment
    url = client.cfg.redis_url
    r = redis.Redis.from_url(url)
    keys = Keys(settings.namespace)
    shards = health.expected_shards(2, 2)
    append(r, client.cfg, chats("a", "c", 20, T0))
    assert client.wait_idle(120)

    def report() -> health.Health:
        return health.read_health(r, keys, shards)

    poll(lambda: report().ready and all(s.state == "running" for s in report().shards))
    status, body, text = asyncio.run(_readyz_and_metrics(settings, url))
    assert status == 200
    assert body["status"] == "ready"
    assert body["redis_up"]
    names = [s["shard"] for s in body["shards"]]
    assert names[: len(shards)] == shards
    # then whatever else beats: the raffle actor
    assert {n.rpartition("-")[0] for n in names[len(shards) :]} == {"raffle"}
    assert {s["starts"] for s in body["shards"]} == {1}
    assert {s["stream"] for s in body["shards"][: len(shards)]} == {
        "ingest:0", "ingest:1", "credits:0", "credits:1", "ledgerlog:0", "ledgerlog:1",
    }  # fmt: skip
    m = _metrics(text)
    assert m[("rally_ready", ())] == 1
    assert m[("rally_shard_up", (("shard", "member-0"),))] == 1
    assert m[("rally_shard_restarts", (("shard", "member-0"),))] == 0
    assert m[("rally_shard_fenced", (("shard", "ledger-1"),))] == 0
    assert m[("rally_shard_lag_entries", (("shard", "ledger-0"),))] == 0
    lag = ("rally_stream_group_lag", (("group", "projector"), ("stream", "ledgerlog:0")))
    assert m[lag] == 0
    assert m[("rally_dead_letters_held", (("stream", "ingest:0"),))] == 0

    code, out = rally(capsys, "status", "--config", str(config))
    assert code == 0, out
    assert "member-0" in out
    assert "running" in out
    assert "ledgerlog:1" in out
    assert "READY" in out

    old_pid = client.kill9("member-0")
    poll(lambda: {s.shard: s for s in report().shards}["member-0"].restarts == 1)
    poll(lambda: report().ready and {s.shard: s for s in report().shards}["member-0"].alive)
    code, out = rally(capsys, "status", "--config", str(config), "--json")
    assert code == 0, out  # the report is the last line (Ray's log lines reach stdout too)
    member0 = next(
        s for s in json.loads(out.splitlines()[-1])["shards"] if s["shard"] == "member-0"
    )
    assert (member0["state"], member0["starts"], member0["restarts"]) == ("running", 2, 1)
    assert member0["pid"] != old_pid
    append(r, client.cfg, chats("b", "c", 20, T0 + 100))  # the restarted shard still credits
    assert client.wait_idle(120)

    ray.kill(client.member_shards[1], no_restart=True)  # gone for good
    poll(lambda: not report().ready)
    status, body, text = asyncio.run(_readyz_and_metrics(settings, url))
    assert status == 503
    assert body["status"] == "not_ready"
    assert any("member-1 is dead" in p for p in body["problems"])
    assert _metrics(text)[("rally_shard_up", (("shard", "member-1"),))] == 0
    code, out = rally(capsys, "status", "--config", str(config))
    assert code == 1
    assert "dead" in out
    assert "NOT READY" in out


def test_status_without_redis_says_so_and_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gateway.redis_server import free_port

    config = tmp_path / "rally.toml"
    url = f"redis://127.0.0.1:{free_port()}/0"
    config.write_text(CONFIG.format(ns="x", data_dir=tmp_path, url=url, failures=5))
    code, out = rally(capsys, "status", "--config", str(config))
    assert code == 1
    assert "redis unreachable" in out
    assert "NOT READY" in out
