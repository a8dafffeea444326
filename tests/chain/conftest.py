"""Chain backends for the contract suite: the embedded EVM (eth-tester) and a real node
(anvil from npm, installed by scripts/run.sh ensure_chain_npm, started here)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.client import embedded_web3, rpc_web3
from gateway.redis_server import free_port

ANVIL = (
    Path(__file__).resolve().parents[2] / "chain" / "contracts" / "node_modules" / ".bin" / "anvil"
)
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
"""anvil's first funded account (its well-known development key)."""


@contextlib.contextmanager
def start_anvil() -> Iterator[str]:
    """A fresh anvil node on a free port (its URL), stopped on exit."""
    assert ANVIL.exists(), (
        f"no anvil at {ANVIL}: run scripts/run.sh setup (npm install in chain/contracts)"
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                req = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                                             headers={"content-type": "application/json"})  # fmt: skip
                urllib.request.urlopen(req, timeout=1).read()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "anvil did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    with start_anvil() as url:
        yield url


@pytest.fixture(params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """(web3, signer) on each backend."""
    if request.param == "embedded":
        return embedded_web3()
    return rpc_web3(request.getfixturevalue("anvil_url"), ANVIL_KEY)
