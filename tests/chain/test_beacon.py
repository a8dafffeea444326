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
    assert number >= 1  # never genesis
    assert number == 1 or w3.eth.get_block(number - 1)["timestamp"] <= after


def test_an_embedded_chain_started_after_close_does_not_give_its_genesis() -> None:
    after = int(time.time()) - 5
    w3, _ = embedded_web3()  # genesis stamped now, after close: its hash is predictable
    assert w3.eth.block_number == 0
    beacon = mine_after(w3, after)
    assert chain_ref(beacon.ref) == (w3.eth.chain_id, 1)
    _check(w3, beacon, after)


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
    assert chain_ref(first.ref) == (w3.eth.chain_id, 1)  # genesis is never a beacon
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


def test_a_published_chain_beacon_checks_against_the_node(anvil_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from chain.beacon import check_on_chain
    from engine import raffle as eng
    from tests.e2e.conftest import rally_cli

    w3, _ = rpc_web3(anvil_url, ANVIL_KEY)
    seed = "5eed" * 16
    closed_at = max(int(time.time()), w3.eth.get_block("latest")["timestamp"]) + 100
    r = eng.create(eng.Terms(id="onchain", network="tv", beacon="chain"), 1.0)
    eng.open_raffle(r, eng.commitment_of(seed), 2.0)
    eng.add_tickets(r, "ann", eng.Purchase(1, 0, 100))
    eng.close(r, closed_at)
    w3.provider.make_request("evm_mine", [closed_at - 1])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [closed_at])  # type: ignore[arg-type]
    with pytest.raises(BeaconError):
        read_node(anvil_url, closed_at)  # both stamped at or before close: not ready
    w3.provider.make_request("evm_mine", [closed_at + 1])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [closed_at + 2])  # type: ignore[arg-type]
    beacon = read_node(anvil_url, closed_at)
    assert all(ok for _, ok, _ in check_on_chain(w3, beacon, closed_at))
    number = chain_ref(beacon.ref)[1]  # type: ignore[index]
    later = eng.chain_beacon_of(w3.eth.chain_id, number + 1,
                                w3.to_hex(w3.eth.get_block(number + 1)["hash"]))  # fmt: skip
    failed = {n for n, ok, _ in check_on_chain(w3, later, closed_at) if not ok}
    assert failed == {"first_block_after_close"}
    earlier = eng.chain_beacon_of(w3.eth.chain_id, number - 1,
                                  w3.to_hex(w3.eth.get_block(number - 1)["hash"]))  # fmt: skip
    assert {n for n, ok, _ in check_on_chain(w3, earlier, closed_at) if not ok} == {
        "block_after_close"}  # fmt: skip
    forged = eng.Beacon("chain", "0x" + "ab" * 32, beacon.ref)
    assert {n for n, ok, _ in check_on_chain(w3, forged, closed_at) if not ok} == {"block_hash"}
    other = eng.Beacon("chain", beacon.value, f"chain 1 block {number}")
    assert {n for n, ok, _ in check_on_chain(w3, other, closed_at) if not ok} == {"chain_id"}

    # rally raffle verify --rpc: a record drawn with a later block verifies from its own
    # data (exit 0 without --rpc) but not against the node (exit 1)
    for b, code in ((beacon, 0), (later, 1)):
        raffle = eng.create(r.terms, 1.0)
        eng.open_raffle(raffle, eng.commitment_of(seed), 2.0)
        eng.add_tickets(raffle, "ann", eng.Purchase(1, 0, 100))
        eng.close(raffle, closed_at)
        eng.draw(raffle, seed, b, closed_at + 5)
        saved = tmp_path / "record.json"
        saved.write_bytes(eng.published_encoder.encode(eng.publish(raffle)))
        assert rally_cli("raffle", "verify", "onchain", "--file", str(saved)).returncode == 0
        done = rally_cli("raffle", "verify", "onchain", "--file", str(saved), "--rpc", anvil_url)
        assert done.returncode == code, done.stdout + done.stderr
        assert ("FAIL chain:first_block_after_close" in done.stdout) == bool(code)
    done = rally_cli("raffle", "verify", "onchain", "--file", str(saved), "--rpc",
                     "http://127.0.0.1:9")  # fmt: skip
    assert done.returncode == 2
    assert "could not be read" in done.stderr
