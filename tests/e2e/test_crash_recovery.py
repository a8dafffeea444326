"""kill -9 of the gateway or of a shard while a load runs over HTTP: after the restart,
every acknowledged event is credited exactly once and `rally audit` passes."""

from __future__ import annotations

import threading
import time

import pytest

from engine.reference import Reference
from tests.e2e.conftest import get, post, rally_cli
from tests.e2e.traffic import as_events, batches, day_of_traffic


def post_until_acknowledged(url_of, chunk: list[dict], acked: list[list[dict]]) -> None:
    """What a well-behaved client does: retry the same batch (same ids) until it is acked."""
    for _ in range(600):
        try:
            status, _ = post(url_of(), chunk)
        except OSError:
            time.sleep(0.1)
            continue
        if status == 202:
            acked.append(chunk)
            return
        time.sleep(0.1)
    raise AssertionError("batch never acknowledged")


@pytest.mark.parametrize("victim", ["gateway", "member-0", "channel-1"])
def test_kill9_under_load(deployment, victim: str) -> None:
    wire = day_of_traffic(seed=11, members=90, chats=5_000)
    chunks = batches(wire, 100)
    acked: list[list[dict]] = []
    feeder = threading.Thread(
        target=lambda: [post_until_acknowledged(lambda: deployment.url, c, acked) for c in chunks]
    )
    feeder.start()
    while len(acked) < len(chunks) // 4:
        time.sleep(0.01)
    if victim == "gateway":
        deployment.gateway.kill9()
        time.sleep(0.5)
        deployment.restart_gateway()
    else:
        old = deployment.client.kill9(victim)
        assert old
    feeder.join(timeout=300)
    assert not feeder.is_alive()
    assert len(acked) == len(chunks)
    assert deployment.client.wait_idle(180)

    ref = Reference(deployment.settings.rulebook(), deployment.settings.limits.lateness_s)
    ref.ingest(as_events([e for c in acked for e in c]), 0.0)
    ref.finish()
    for (_, user), expected in ref.members.items():
        status, body = get(deployment.url, f"/v1/members/{user}?network=tv")
        assert status == 200
        assert body["balance"] == expected.balance, user
    done = rally_cli("audit", "--config", str(deployment.config))
    assert done.returncode == 0, done.stdout + done.stderr
