"""Members' linked wallets, and the index from a wallet back to its member, per network.

Redis (under the namespace):
wallets:{net}        hash; user_id -> JSON list of the member's linked wallets (first: payouts).
walletidx:{net}      hash; lowercase address -> the user_id that linked it, or "" when several
                     members linked it before the index existed (ambiguous: no wallet sign-in).
walletidxok:{net}    string; set once the index holds every wallet of `wallets:{net}`.

One rule: an address belongs to at most one member of a network. `link_wallet` writes the
member's list and the index in one transaction and refuses (WalletTaken) an address the
index gives to another member. Wallets linked before the index existed are indexed by
`build_index` (the gateway runs it at start until `walletidxok` is set); an address two of
those members share is marked ambiguous, never given to either.
"""

from __future__ import annotations

import json

import redis

from actors.keys import Keys

AMBIGUOUS = ""
"""The index's value for an address several members linked before the index existed."""
INDEX_SCAN_COUNT = 500

_INDEX_ONE = """
for i = 1, #ARGV - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[#ARGV])
  elseif cur ~= ARGV[#ARGV] then
    redis.call('HSET', KEYS[1], ARGV[i], '')
  end
end
return 0
"""
"""KEYS: walletidx:{net}; ARGV: lowercase addresses of one member, then its user id. An
address already indexed to another member becomes ambiguous ("")."""


class WalletTaken(Exception):
    """The address is linked to another member of the network already."""

    def __init__(self, address: str) -> None:
        super().__init__(f"wallet {address} is linked to another member of this network")
        self.address = address


def wallets_key(keys: Keys, network: str) -> str:
    return keys.k("wallets", network)


def index_key(keys: Keys, network: str) -> str:
    return keys.k("walletidx", network)


def index_done_key(keys: Keys, network: str) -> str:
    return keys.k("walletidxok", network)


def linked_wallets(r: redis.Redis, keys: Keys, network: str, user_id: str) -> list[str]:
    raw = r.hget(wallets_key(keys, network), user_id)
    return list(json.loads(raw)) if raw else []


def link_wallet(r: redis.Redis, keys: Keys, network: str, user_id: str, address: str) -> list[str]:
    """Add `address` to the member's wallets (kept once, in linking order) and to the index;
    WalletTaken if another member of the network has it (or it is ambiguous)."""
    key, idx, low = wallets_key(keys, network), index_key(keys, network), address.lower()
    while True:
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key, idx)
                owner = pipe.hget(idx, low)
                if owner is not None and owner.decode() != user_id:
                    raise WalletTaken(address)
                raw = pipe.hget(key, user_id)
                have: list[str] = json.loads(raw) if raw else []
                known = low in (a.lower() for a in have)
                if known and owner is not None:
                    return have
                if not known:
                    have.append(address)
                pipe.multi()
                pipe.hset(key, user_id, json.dumps(have))
                pipe.hset(idx, low, user_id)
                pipe.execute()
                return have
            except redis.WatchError:
                continue


def wallet_owner(r: redis.Redis, keys: Keys, network: str, address: str) -> str | None:
    """The member who linked `address` in `network`; None if no one, AMBIGUOUS if several
    did before the index existed."""
    raw = r.hget(index_key(keys, network), address.lower())
    return None if raw is None else raw.decode()


def build_index(r: redis.Redis, keys: Keys, network: str) -> int:
    """Index the wallets linked before the index existed (once per network: a no-op when
    done); returns the members scanned. Safe to run from several processes at once, and
    alongside `link_wallet`."""
    if r.exists(index_done_key(keys, network)):
        return 0
    script = r.register_script(_INDEX_ONE)
    idx = index_key(keys, network)
    seen = 0
    for user, raw in r.hscan_iter(wallets_key(keys, network), count=INDEX_SCAN_COUNT):
        addresses = sorted({a.lower() for a in json.loads(raw)})
        if addresses:
            script(keys=[idx], args=[*addresses, user.decode()])
        seen += 1
    r.set(index_done_key(keys, network), b"1")
    return seen
