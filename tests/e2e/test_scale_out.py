"""Beyond one machine: `rally serve` on a real three-master Redis Cluster and a two-node Ray
cluster, with no code change. The metamorphic test's workload goes through the gateway,
with a reshard halfway that moves the deployment's slot to another master;
balances, tiers, ledgers and boards read back over HTTP are what the engine's model
computes, the shards ran on both Ray nodes, and every key of the deployment sits in the
namespace's hash slot (which every commit, script and multi-stream read needs on a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from ray.cluster_utils import Cluster

from actors.client import wait_idle
from actors.keys import Keys
from actors.redisconn import connect
from gateway.settings import load_settings
from tests.cluster import RedisClusterNodes
from tests.e2e.conftest import KEY, SECRET, wait_runtime_file
from tests.e2e.delivery import chunks, deliver, post_batch
from tests.e2e.readback import (
    differences,
    model_view,
    model_view_of_reference,
    read_snapshot,
    run_reference,
)
from tests.e2e.test_metamorphic import CONFIG, LATENESS_S, RULES
from tests.e2e.workload import DAY_S, generate

pytestmark = pytest.mark.slow

AUTH = (KEY, SECRET)
NETWORK = "scaleout"
"""Read-back normalises the network name out of the JSON: a name that occurs nowhere else."""
READY_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster")).start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def two_ray_nodes() -> Iterator[Cluster]:
    """A head and one more node, one CPU each, as `ray start` on two machines would make."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    yield cluster
    cluster.shutdown()


@contextlib.contextmanager
def serving(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`rally serve` on a free port (its URL in runtime.json), its output in `log` (its tail
    printed when the test fails)."""
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
           "--port", "0"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    except BaseException:
        print(log.read_text(errors="replace")[-20_000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready_report(url: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll /readyz until every shard has reported (with its Ray node); the report."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("rally serve exited")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
                report = msgspec.json.decode(resp.read())
            if all(s["node"] for s in report["shards"]):
                return report
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError("rally serve did not become ready")


def test_a_redis_cluster_and_two_ray_nodes_give_the_engines_balances(
    redis_cluster: RedisClusterNodes, two_ray_nodes: Cluster, tmp_path: Path
) -> None:
    workload = generate((int(time.time() // DAY_S) - 2) * DAY_S)
    events = workload.for_network(NETWORK)
    ns = f"scale{os.getpid()}"
    config = tmp_path / "rally.toml"
    config.write_text(
        CONFIG.format(ns=ns, data_dir=tmp_path / "data", redis_url=redis_cluster.url,
                      lateness=LATENESS_S, key=KEY, secret=SECRET, channel=2, member=2)
        + f'[ray]\naddress = "{two_ray_nodes.address}"\n'
        + RULES.format(net=NETWORK)
    )  # fmt: skip
    settings = load_settings(config, {})
    r = connect(redis_cluster.url)
    keys = Keys.of(ns, redis_cluster.url)
    ns_slot = r.cluster_keyslot(keys.stats)
    moved_to = (redis_cluster.owner(ns_slot) + 1) % len(redis_cluster.nodes)
    with serving(config, tmp_path / "serve.log") as proc:
        url = wait_runtime_file(tmp_path / "data", proc, READY_TIMEOUT_S)["url"]
        report = ready_report(url, proc)
        nodes = {s["shard"]: s["node"] for s in report["shards"]}
        assert len(set(nodes.values())) == 2, f"the shards did not spread over both nodes: {nodes}"

        async def run() -> dict[str, Any]:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def post(_: int, batch: Any) -> None:
                    await post_batch(session, lambda: url, AUTH, batch)

                # half the traffic, then a reshard moves the deployment's slot to another
                # master (every client's slot map is stale), then the other half
                batches = chunks(events, 100)
                half = len(batches) // 2
                await deliver(batches[:half], post, max_inflight=4, span_s=40.0)
                await asyncio.to_thread(redis_cluster.move_slot, ns_slot, moved_to)
                await deliver(batches[half:], post, max_inflight=4, span_s=40.0)
                # a batch with an Idempotency-Key (one script over the key, the stats and
                # the ingest streams), posted twice: the replay is answered from the record
                again = events[:50]
                first = await post_batch(session, lambda: url, AUTH, again, "scale-1")
                assert await post_batch(session, lambda: url, AUTH, again, "scale-1") == first
                cfg = settings.runtime(redis_cluster.url)
                drained = await asyncio.to_thread(wait_idle, r, keys, cfg, DRAIN_TIMEOUT_S)
                assert drained, "the deployment did not drain"
                # every member read at once (and the ledgers after): far more requests in
                # flight than a cluster client's default 100 connections per node
                return await read_snapshot(session, url, AUTH, r, keys, NETWORK, workload.users,
                                           workload.channels, workload.days)  # fmt: skip

        snapshot = asyncio.run(run())
    # read once it has stopped: a background task's error may surface only at shutdown
    log = (tmp_path / "serve.log").read_text(errors="replace")
    problems = [line for line in log.splitlines()
                if "Traceback" in line or "_failed" in line or "unhandled" in line]  # fmt: skip
    assert not problems, "rally serve logged errors:\n" + log[-5_000:]

    book = settings.rulebook()
    expected = model_view_of_reference(run_reference(book, events), book, NETWORK)
    got = model_view(snapshot)
    assert got == expected, "the deployment (first) and the model differ:\n" + "\n".join(
        differences(got, expected)
    )
    assert sum(1 for m in snapshot["members"].values() if m) > 50

    assert keys.tagged
    names = list(r.scan_iter(match=keys.prefix + "*", count=1_000))
    assert len(names) > 20
    assert {r.cluster_keyslot(n) for n in names} == {ns_slot}
    assert redis_cluster.owner(ns_slot) == moved_to
