"""The loyalty token on an EVM, through web3.py: deploy, batched mints, balances and tiers.

Two backends, one client:
- embedded (default): an in-process EVM (eth-tester on py-evm), a fresh chain with funded
  accounts, the token deployed at start. Its state lives in the process.
- rpc: any JSON-RPC node (`[chain] rpc` / RALLY_CHAIN_RPC; anvil in the tests).

One signer per client; its nonces are handed out under a lock from a local counter, read
from the node's pending count at start and again after any failure, so concurrent mints
never reuse a nonce. Reverts are mapped to this package's errors for both backends
(eth-tester raises TransactionFailed with the raw custom-error bytes; a node answers with
web3's ContractCustomError / ContractLogicError).
"""

from __future__ import annotations

import ast
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3Exception

ARTIFACT = Path(__file__).resolve().parent / "contracts" / "RallyToken.json"
DEFAULT_THRESHOLDS = (0, 500, 2_000, 10_000)
TIER_NAMES = ("Bronze", "Silver", "Gold", "Diamond")
DECIMALS = 18
RECEIPT_TIMEOUT_S = 120.0
GAS_PER_MINT = 80_000
GAS_BASE = 150_000
"""The gas limit of a mintBatch sent without an estimate: a fresh holder's mint with its
tier costs ~51k gas; the limit is generous, only gas used is paid."""


class ChainError(Exception):
    """Root of the chain package's errors."""


class ChainUnavailable(ChainError):
    """The node cannot be reached or refused the transaction outright."""


class Reverted(ChainError):
    """The contract reverted: `code` names the custom error (or "reverted")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyMinted(Reverted):
    """mintBatch refused a payoutId it has minted before (exactly once on chain)."""


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


ERRORS = {
    _selector("PayoutAlreadyMinted(bytes32)"): "payout_already_minted",
    _selector("LengthMismatch(uint256,uint256)"): "length_mismatch",
    _selector("BatchTooLarge(uint256,uint256)"): "batch_too_large",
    _selector("BadThresholds()"): "bad_thresholds",
    _selector("EnforcedPause()"): "paused",
    _selector("AccessControlUnauthorizedAccount(address,bytes32)"): "unauthorized",
}


def _hexed(value: object) -> str:
    """Revert data as hex: raw bytes (eth-tester puts their repr in its message) or text."""
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    at = text.find("b'") if "b'" in text else text.find('b"')
    if at >= 0:
        try:
            raw = ast.literal_eval(text[at:])
        except (ValueError, SyntaxError):
            return text
        if isinstance(raw, bytes):
            return text[:at] + raw.hex()
    return text


def map_revert(err: BaseException) -> Reverted:
    """The project error for a revert from either backend (its custom-error selector)."""
    text = " ".join(_hexed(a) for a in (*getattr(err, "args", ()), getattr(err, "data", "")))
    text = text.lower()
    for sel, code in ERRORS.items():
        if sel[2:] in text:
            cls = AlreadyMinted if code == "payout_already_minted" else Reverted
            return cls(code, f"the token reverted: {code}")
    return Reverted("reverted", f"the token reverted: {text.strip()[:300]}")


def _is_revert(err: BaseException) -> bool:
    if isinstance(err, ContractCustomError | ContractLogicError):
        return True
    return type(err).__name__ == "TransactionFailed"  # eth_tester.exceptions


@dataclass(frozen=True, slots=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str
    source_sha256: str

    @classmethod
    def load(cls, path: Path = ARTIFACT) -> Artifact:
        raw = json.loads(path.read_text())
        return cls(raw["abi"], raw["bytecode"], raw["compiler"], raw["sourceSha256"])


@dataclass(frozen=True, slots=True)
class Minted:
    """A mined mintBatch: its transaction, block and gas."""

    tx_hash: str
    block: int
    gas_used: int


def embedded_web3() -> tuple[Web3, LocalAccount]:
    """An in-process EVM and its first funded account."""
    from web3 import EthereumTesterProvider

    provider = EthereumTesterProvider()
    key = provider.ethereum_tester.backend.account_keys[0]
    return Web3(provider), Account.from_key(key.to_bytes())


def rpc_web3(url: str, private_key: str, timeout_s: float = 30.0) -> tuple[Web3, LocalAccount]:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    try:
        w3.eth.chain_id  # noqa: B018 - reachability check
    except (OSError, Web3Exception) as err:
        raise ChainUnavailable(f"no JSON-RPC node at {url}: {err}") from err
    return w3, Account.from_key(private_key)


class TokenClient:
    """The RallyToken contract at `address`, driven by `signer`."""

    def __init__(
        self,
        w3: Web3,
        signer: LocalAccount,
        address: str,
        *,
        confirmations: int = 1,
        estimate: bool = True,
    ) -> None:
        self.w3 = w3
        self.signer = signer
        self.artifact = Artifact.load()
        self.contract = w3.eth.contract(address=to_checksum_address(address), abi=self.artifact.abi)
        self.confirmations = max(1, confirmations)
        self.estimate = estimate
        self.block_gas = int(w3.eth.get_block("latest")["gasLimit"])
        """False: mints carry a fixed gas limit instead of an estimate (the embedded EVM,
        where estimating runs the whole batch a second time; its reverts come at send)."""
        self.chain_id = w3.eth.chain_id
        self._lock = threading.Lock()
        self._nonce: int | None = None

    # -- deploy ---------------------------------------------------------------------------
    @classmethod
    def deploy(
        cls,
        w3: Web3,
        signer: LocalAccount,
        *,
        name: str = "Rally Points",
        symbol: str = "RALLY",
        thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        confirmations: int = 1,
        estimate: bool = True,
    ) -> TokenClient:
        art = Artifact.load()
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        units = [t * 10**DECIMALS for t in thresholds]
        ctor = factory.constructor(name, symbol, signer.address, units)
        tx = ctor.build_transaction(
            {
                "from": signer.address,
                "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
                "chainId": w3.eth.chain_id,
            }
        )
        receipt = cls._send_signed(w3, signer, tx)
        return cls(w3, signer, receipt["contractAddress"], confirmations=confirmations,
                   estimate=estimate)  # fmt: skip

    @staticmethod
    def _send_signed(w3: Web3, signer: LocalAccount, tx: dict[str, Any]) -> Any:
        signed = signer.sign_transaction(tx)
        try:
            h = w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(h, timeout=RECEIPT_TIMEOUT_S)
        except Exception as err:
            if _is_revert(err):
                raise map_revert(err) from err
            raise ChainUnavailable(f"transaction failed: {err}") from err
        if receipt["status"] != 1:
            raise Reverted("reverted", f"transaction {h.hex()} reverted")
        return receipt

    @property
    def address(self) -> str:
        return str(self.contract.address)

    # -- writes ---------------------------------------------------------------------------
    def _transact(self, fn: Any, gas: int | None = None) -> Minted:
        """Build, sign and send `fn` with the next nonce; wait for its receipt and the
        confirmations. A revert at estimation or in the block maps to Reverted."""
        with self._lock:
            if self._nonce is None:
                self._nonce = self.w3.eth.get_transaction_count(self.signer.address, "pending")
            try:
                fields = {
                    "from": self.signer.address,
                    "nonce": self._nonce,
                    "chainId": self.chain_id,
                }
                if gas is not None and not self.estimate:
                    fields["gas"] = gas
                tx = fn.build_transaction(fields)
            except Exception as err:
                if _is_revert(err):
                    raise map_revert(err) from err
                raise ChainUnavailable(f"cannot build the transaction: {err}") from err
            try:
                signed = self.signer.sign_transaction(tx)
                h = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as err:
                self._nonce = None  # read it again: the node knows best
                if _is_revert(err):
                    raise map_revert(err) from err
                raise ChainUnavailable(f"the node refused the transaction: {err}") from err
            self._nonce += 1
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(h, timeout=RECEIPT_TIMEOUT_S)
        except Exception as err:
            raise ChainUnavailable(f"no receipt for {h.hex()}: {err}") from err
        if receipt["status"] != 1:
            raise self._why(fn, h.hex())
        self._await_confirmations(receipt["blockNumber"])
        return Minted(h.hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]))

    def _why(self, fn: Any, tx_hash: str) -> Reverted:
        """Why a mined transaction reverted: the call replayed on the latest state."""
        try:
            fn.call({"from": self.signer.address})
        except Exception as err:
            if _is_revert(err):
                return map_revert(err)
        return Reverted("reverted", f"transaction {tx_hash} reverted")

    def _await_confirmations(self, block: int) -> None:
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while self.w3.eth.block_number < block + self.confirmations - 1:
            if time.monotonic() > deadline:
                raise ChainUnavailable(f"block {block} got no {self.confirmations} confirmations")
            time.sleep(0.2)

    def mint_batch(self, payout_id: bytes, to: Sequence[str], amounts: Sequence[int]) -> Minted:
        """Mint amounts[i] to to[i] under `payout_id` (32 bytes): AlreadyMinted if seen."""
        assert len(payout_id) == 32, "a payoutId is 32 bytes"
        fn = self.contract.functions.mintBatch(
            payout_id, [to_checksum_address(a) for a in to], list(amounts)
        )
        return self._transact(fn, gas=min(GAS_PER_MINT * len(to) + GAS_BASE, self.block_gas))

    def pause(self) -> Minted:
        return self._transact(self.contract.functions.pause())

    def unpause(self) -> Minted:
        return self._transact(self.contract.functions.unpause())

    def set_thresholds(self, thresholds: Sequence[int]) -> Minted:
        return self._transact(self.contract.functions.setTierThresholds(list(thresholds)))

    # -- reads ----------------------------------------------------------------------------
    def minted(self, payout_id: bytes) -> bool:
        return bool(self.contract.functions.minted(payout_id).call())

    def balance_of(self, address: str) -> int:
        return int(self.contract.functions.balanceOf(to_checksum_address(address)).call())

    def tier_of(self, address: str) -> int:
        return int(self.contract.functions.tierOf(to_checksum_address(address)).call())

    def thresholds(self) -> list[int]:
        return [int(x) for x in self.contract.functions.tierThresholds().call()]

    def tier_upgrades(self, from_block: int = 0) -> list[tuple[str, int, int]]:
        """(account, from tier, to tier) of every TierUpgraded since `from_block`."""
        logs = self.contract.events.TierUpgraded().get_logs(from_block=from_block)
        return [(e["args"]["account"], e["args"]["fromTier"], e["args"]["toTier"]) for e in logs]


def batch_id(payout_ids: Sequence[str]) -> bytes:
    """The on-chain payoutId of a batch of payouts: keccak of their ids in order."""
    return keccak(text="\n".join(payout_ids))
