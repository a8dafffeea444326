"""The chain beacon on real chains: the embedded EVM (mined on demand) and anvil (read,
not_ready until a block after close exists), and the payout actor's Redis request/reply."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from actors.chain_beacon import BeaconError, ask_actor, queue_key, read_node, resolve, serve
from actors.keys import Keys
from chain.beacon import block_after, mine_after
from chain.client import embedded_web3, rpc_web3
from engine.raffle import chain_ref
from tests.chain.conftest import ANVIL_KEY


def _check(w3, beacon, after: int) -> None:  # type: ignore[no-untyped-def]
    """The beacon names a real block after `after` whose parent is not after it."""
    chain_id, number = chain_ref(beacon.ref)  # type: ignore[misc]
    assert chain_id == w3.eth.chain_id
    block = w3.eth.get_block(number)
    assert beacon.value == w3.to_hex(block["hash"])
    assert block["timestamp"] > after
    assert number == 0 or w3.eth.get_block(number - 1)["timestamp"] <= after


def test_embedded_mines_one_block_after_close_then_keeps_it() -> None:
    w3, _ = embedded_web3()
    start = w3.eth.block_number
    after = int(time.time())  # a raffle closing now: no block is after it yet
    assert block_after(w3, after) is None
    beacon = mine_after(w3, after)
    assert w3.eth.block_number == start + 1
    _check(w3, beacon, after)
    assert mine_after(w3, after) == beacon  # found again, nothing mined
    assert w3.eth.block_number == start + 1
    # blocks mined later do not change it; an earlier close finds an earlier block
    w3.provider.ethereum_tester.mine_blocks(3)  # type: ignore[attr-defined]
    assert block_after(w3, after) == beacon
    first = block_after(w3, 0)
    assert first is not None
    assert chain_ref(first.ref) == (w3.eth.chain_id, 0)
    assert block_after(w3, after, confirmations=10) is None  # 4 blocks on top, not 10


def test_node_is_read_and_not_ready_until_a_block_after_close(anvil_url: str) -> None:
    w3, _ = rpc_web3(anvil_url, ANVIL_KEY)
    latest = w3.eth.get_block("latest")["timestamp"]
    after = max(int(time.time()), latest)
    with pytest.raises(BeaconError) as err:
        read_node(anvil_url, after)
    assert (err.value.code, err.value.status) == ("beacon_not_ready", 409)
    assert "retry after the next block" in err.value.message
    w3.provider.make_request("evm_mine", [after + 5])  # type: ignore[arg-type]
    beacon = read_node(anvil_url, after)
    _check(w3, beacon, after)
    w3.provider.make_request("evm_mine", [after + 6])  # type: ignore[arg-type]
    assert read_node(anvil_url, after) == beacon
    with pytest.raises(BeaconError) as err:
        read_node("http://127.0.0.1:9", after)
    assert (err.value.code, err.value.status) == ("chain_unavailable", 503)


def test_payout_actor_protocol_answers_from_its_embedded_chain(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    w3, _ = embedded_web3()
    stop = threading.Event()

    def actor() -> None:  # the payout actor's loop step, polled
        while not stop.is_set():
            if not serve(redis_client, keys, lambda after: mine_after(w3, after)):
                time.sleep(0.05)

    t = threading.Thread(target=actor, daemon=True)
    t.start()
    try:
        after = int(time.time())
        beacon = resolve(redis_client, keys, after, rpc="", embedded=True, timeout_s=20)
        _check(w3, beacon, after)
        assert ask_actor(redis_client, keys, after, 20) == beacon
    finally:
        stop.set()
        t.join(10)
    # nobody serves: a clear 503 after the timeout; no chain at all: 409 chain_unavailable
    with pytest.raises(BeaconError) as err:
        ask_actor(redis_client, keys, after, 1.0)
    assert (err.value.code, err.value.status) == ("chain_unavailable", 503)
    redis_client.delete(queue_key(keys))
    with pytest.raises(BeaconError) as err:
        resolve(redis_client, keys, after, rpc="", embedded=False)
    assert (err.value.code, err.value.status) == ("chain_unavailable", 409)
