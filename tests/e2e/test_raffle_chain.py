"""A raffle drawn with a block hash (terms `"beacon": "chain"`), through the real gateway,
raffle actor and the payout actor's embedded EVM: the beacon is the hash of the first block
after close (mined on demand), the admin supplies no value (and may not), the record
verifies and a changed beacon does not; `rally raffle draw ID --beacon chain` does the same;
a gateway without a chain refuses with 409 chain_unavailable."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
import ray

from engine import raffle as eng
from tests.e2e.conftest import Deployment, Gateway, deploy, rally_cli
from tests.e2e.test_raffles import call, fund, member, raffle_config


@pytest.fixture
def dep(ray_cluster, redis_server, namespace, tmp_path) -> Iterator[Deployment]:
    # [chain] rpc "" and payouts enabled: the embedded EVM
    with deploy(raffle_config(tmp_path, namespace, redis_server.url), redis_server.url) as d:
        yield d


def _record(url: str, rid: str) -> dict:
    with urllib.request.urlopen(f"{url}/v1/raffles/{rid}/record?network=tv") as resp:
        return json.loads(resp.read())


def _check_block(d: Deployment, beacon: dict, closed_at: int) -> None:
    """The beacon is a real block of the payout actor's EVM: the first after close."""
    chain_id, number = eng.chain_ref(beacon["ref"])  # type: ignore[misc]
    block = ray.get(d.client.payouts.chain_block.remote(number))
    assert block is not None, beacon
    assert (block["hash"], block["chain_id"]) == (beacon["value"], chain_id)
    assert block["timestamp"] > closed_at
    assert number >= 1  # never genesis
    if number > 1:
        parent = ray.get(d.client.payouts.chain_block.remote(number - 1))
        assert parent["timestamp"] <= closed_at


def test_chain_raffle_draws_the_first_block_after_close(dep: Deployment, tmp_path) -> None:
    d, url = dep, dep.url
    fund(d, ["ann", "ben", "cat"])
    terms = {"id": "onchain", "title": "Block hash draw", "beacon": "chain", "price_points": 10,
             "max_tickets_per_member": 5, "winners": 2}  # fmt: skip
    assert call(url, "POST", "/v1/raffles?network=tv", terms)[0] == 201
    assert call(url, "POST", "/v1/raffles/onchain/open?network=tv")[0] == 200
    for user, n in (("ann", 1), ("ben", 3), ("cat", 2)):
        status, body = call(url, "POST", "/v1/raffles/onchain/tickets?network=tv", {"tickets": n},
                            headers=member(user, f"k-{user}"), signed=False)  # fmt: skip
        assert status == 201, body
    status, body = call(url, "POST", "/v1/raffles/onchain/draw?network=tv")
    assert (status, body["error"]) == (409, "raffle_open")
    assert call(url, "POST", "/v1/raffles/onchain/close?network=tv")[0] == 200

    # an admin value is never taken for a chain raffle
    for beacon in ({"source": "admin", "value": "drand-round-9-abcdef"},
                   {"source": "chain", "value": "0x" + "00" * 32, "ref": "chain 1 block 1"}):  # fmt: skip
        status, body = call(url, "POST", "/v1/raffles/onchain/draw?network=tv", {"beacon": beacon})
        assert (status, body["error"], body["field"]) == (400, "bad_beacon", "beacon"), body

    status, body = call(url, "POST", "/v1/raffles/onchain/draw?network=tv",
                        {"beacon": {"source": "chain"}})  # fmt: skip
    assert status == 200, body
    assert len({w["user_id"] for w in body["winners"]}) == 2
    record = _record(url, "onchain")
    beacon = record["beacon"]
    assert beacon["source"] == "chain"
    assert eng.BLOCK_HASH.fullmatch(beacon["value"]), beacon
    _check_block(d, beacon, record["closed_at"])
    status, body = call(url, "POST", "/v1/raffles/onchain/draw?network=tv")
    assert (status, body["error"]) == (409, "raffle_drawn")

    status, body = call(url, "GET", "/v1/raffles/onchain/verify?network=tv", signed=False)
    assert (status, body["ok"]) == (200, True), body
    saved = tmp_path / "record.json"
    saved.write_text(json.dumps(record))
    done = rally_cli("raffle", "verify", "onchain", "--file", str(saved))
    assert done.returncode == 0, done.stdout + done.stderr
    # any other block hash (or block) fails verification
    for key, value in (("value", "0x" + ("1" if beacon["value"][2] != "1" else "2")
                        + beacon["value"][3:]), ("ref", beacon["ref"] + "0")):  # fmt: skip
        tampered = json.loads(json.dumps(record))
        tampered["beacon"][key] = value
        result = eng.verify(eng.published_decoder.decode(json.dumps(tampered).encode()))
        assert not result.ok
        assert not next(c for c in result.checks if c.name == "draw_key").ok
        saved.write_text(json.dumps(tampered))
        done = rally_cli("raffle", "verify", "onchain", "--file", str(saved))
        assert done.returncode == 1, done.stdout
        assert "FAIL draw_key" in done.stdout

    # the CLI: --beacon chain reads the chain; a value is refused for a chain raffle
    base = ["--config", str(d.config), "--redis-url", d.gateway.redis_url, "--network", "tv"]
    terms_file = tmp_path / "terms.json"
    terms_file.write_text(json.dumps({"id": "cli-chain", "beacon": "chain"}))
    assert rally_cli("raffle", "create", str(terms_file), *base).returncode == 0
    assert rally_cli("raffle", "open", "cli-chain", *base).returncode == 0
    status, _ = call(url, "POST", "/v1/raffles/cli-chain/tickets?network=tv", {"tickets": 1},
                     headers=member("ann", "c1"), signed=False)  # fmt: skip
    assert status == 201
    done = rally_cli("raffle", "draw", "cli-chain", "--beacon", "chain", *base)
    assert done.returncode == 1
    assert "raffle_open" in done.stdout
    assert rally_cli("raffle", "close", "cli-chain", *base).returncode == 0
    done = rally_cli("raffle", "draw", "cli-chain", "--beacon", "drand-round-7-ffee", *base)
    assert done.returncode == 2
    assert "--beacon chain" in done.stderr
    done = rally_cli("raffle", "draw", "cli-chain", "--beacon", "chain", "--ref", "x", *base)
    assert done.returncode == 2
    done = rally_cli("raffle", "draw", "cli-chain", "--beacon", "chain", *base)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [w["user_id"] for w in json.loads(done.stdout)["winners"]] == ["ann"]
    record = _record(url, "cli-chain")
    _check_block(d, record["beacon"], record["closed_at"])
    status, body = call(url, "GET", "/v1/raffles/cli-chain/verify?network=tv", signed=False)
    assert (status, body["ok"]) == (200, True), body
    # an admin raffle is not drawn from the chain
    terms_file.write_text(json.dumps({"id": "cli-admin"}))
    assert rally_cli("raffle", "create", str(terms_file), *base).returncode == 0
    assert rally_cli("raffle", "open", "cli-admin", *base).returncode == 0
    assert rally_cli("raffle", "close", "cli-admin", *base).returncode == 0
    done = rally_cli("raffle", "draw", "cli-admin", "--beacon", "chain", *base)
    assert done.returncode == 2
    assert "admin beacon" in done.stderr


def test_no_chain_configured_refuses_a_chain_draw(dep: Deployment, tmp_path) -> None:
    d = dep
    # a second gateway on the same deployment whose config runs no payout actor: no chain
    config = tmp_path / "nochain.toml"
    config.write_text(d.config.read_text() + "\n[payouts]\nenabled = false\n")
    gw = Gateway(config, d.gateway.redis_url).start()
    try:
        url = gw.url
        terms = {"id": "nochain", "beacon": "chain"}
        assert call(url, "POST", "/v1/raffles?network=tv", terms)[0] == 201
        assert call(url, "POST", "/v1/raffles/nochain/open?network=tv")[0] == 200
        assert call(url, "POST", "/v1/raffles/nochain/close?network=tv")[0] == 200
        status, body = call(url, "POST", "/v1/raffles/nochain/draw?network=tv")
        assert (status, body["error"], body["field"]) == (409, "chain_unavailable", "beacon")
        status, body = call(url, "GET", "/v1/raffles/nochain?network=tv", signed=False)
        assert body["status"] == "closed"
    finally:
        gw.stop()


@pytest.fixture
def own_anvil() -> Iterator[str]:
    """An anvil of this test's own (its clock untouched by other tests)."""
    from tests.chain.conftest import start_anvil

    with start_anvil() as url:
        yield url


def test_chain_raffle_on_a_node(ray_cluster, redis_server, namespace, tmp_path, own_anvil) -> None:  # type: ignore[no-untyped-def]
    """[chain] rpc: the gateway reads the node; 409 beacon_not_ready until a block after
    close is mined; `rally raffle verify --rpc` checks the published block on the node."""
    from chain.client import rpc_web3
    from tests.chain.conftest import ANVIL_KEY

    config = raffle_config(tmp_path, namespace, redis_server.url,
                           f'\n[chain]\nrpc = "{own_anvil}"\nprivate_key = "{ANVIL_KEY}"\n')  # fmt: skip
    w3, _ = rpc_web3(own_anvil, ANVIL_KEY)
    with deploy(config, redis_server.url) as d:
        url = d.url
        assert (
            call(url, "POST", "/v1/raffles?network=tv", {"id": "node", "beacon": "chain"})[0] == 201
        )
        assert call(url, "POST", "/v1/raffles/node/open?network=tv")[0] == 200
        status, _ = call(url, "POST", "/v1/raffles/node/tickets?network=tv", {"tickets": 1},
                         headers=member("ann", "n1"), signed=False)  # fmt: skip
        assert status == 201
        assert call(url, "POST", "/v1/raffles/node/close?network=tv")[0] == 200
        closed_at = _record(url, "node")["closed_at"]
        assert w3.eth.get_block("latest")["timestamp"] <= closed_at  # anvil mines on demand
        status, body = call(url, "POST", "/v1/raffles/node/draw?network=tv",
                            {"beacon": {"source": "chain"}})  # fmt: skip
        assert (status, body["error"], body["field"]) == (409, "beacon_not_ready", "beacon"), body
        assert "retry after the next block" in body["message"]
        w3.provider.make_request("evm_mine", [closed_at + 1])  # type: ignore[arg-type]
        status, body = call(url, "POST", "/v1/raffles/node/draw?network=tv")
        assert status == 200, body
        beacon = _record(url, "node")["beacon"]
        number = w3.eth.block_number
        assert beacon == {"source": "chain", "ref": f"chain {w3.eth.chain_id} block {number}",
                          "value": w3.to_hex(w3.eth.get_block(number)["hash"])}  # fmt: skip
        done = rally_cli("raffle", "verify", "node", "--network", "tv", "--url", url,
                         "--config", str(d.config), "--rpc", own_anvil)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok   chain:block_after_close" in done.stdout
        assert "ok   chain:block_hash" in done.stdout
