"""`rally raffle ...`: verify a draw from its published record; run a raffle's lifecycle.

`rally raffle verify ID` fetches the public record (`GET /v1/raffles/{id}/record`) from a
gateway (--url, or the running deployment's runtime.json), or reads it from --file, and
recomputes everything from it alone (engine.raffle.verify): exit 0 when the published
winners follow, 1 on any mismatch, 2 for a usage problem or an unreachable record.
With --rpc it also checks a chain beacon's block against a node of that chain.
The admin commands (create, open, close, draw, cancel, list, show) send commands to the
raffle actor of the deployment named by --config, through its Redis; `draw ID --beacon
chain` first reads a chain raffle's beacon from the chain (actors/chain_beacon.py).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from actors.redisconn import connect
from engine import raffle as eng

FETCH_TIMEOUT_S = 60.0
CHAIN = "chain"
"""`--beacon chain`: the beacon is read from the chain (no admin value is that short)."""


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("raffle", help="verify a raffle draw; create, open, close, draw, cancel")
    rs = p.add_subparsers(dest="action", required=True)
    v = rs.add_parser(
        "verify", help="recompute the winners from the published record; exit 1 on mismatch"
    )
    common(v)
    v.add_argument("raffle_id", metavar="ID")
    v.add_argument("--network", help="the raffle's network (default: the only one configured)")
    v.add_argument("--url", help="a gateway's base URL (default: the running deployment's)")
    v.add_argument("--file", help="a saved record (JSON of GET /v1/raffles/{id}/record)")
    v.add_argument("--json", action="store_true", help="print the verification as JSON")
    v.add_argument(
        "--rpc",
        help="a JSON-RPC node of the chain a chain beacon names: also check the block's hash "
        "and that it is the first block after close",
    )
    c = rs.add_parser("create", help="create a raffle from a JSON terms file")
    c.add_argument("terms", metavar="TERMS_JSON")
    for name in ("open", "close", "cancel", "show"):
        rs.add_parser(name, help=f"{name} a raffle").add_argument("raffle_id", metavar="ID")
    d = rs.add_parser("draw", help="draw a closed raffle with a beacon value fixed after close")
    d.add_argument("raffle_id", metavar="ID")
    d.add_argument(
        "--beacon",
        required=True,
        help="the public value (e.g. a drand round's randomness); 'chain' for a raffle whose "
        'terms say "beacon": "chain": the hash of the first block after close, read from '
        "the chain ([chain] rpc, or the payout actor's embedded EVM)",
    )
    d.add_argument("--ref", default="", help="where it comes from (e.g. 'drand round 123')")
    rs.add_parser("list", help="the network's raffles, newest first")
    for name, sp in rs.choices.items():
        if name != "verify":
            common(sp)
            sp.add_argument("--network", help="the raffle's network (default: the only one)")
            sp.add_argument("--redis-url")


def run(args: argparse.Namespace, settings_of: Any, cli_error: type[Exception]) -> int:
    if args.action == "verify":
        return _verify(args, settings_of, cli_error)
    return _admin(args, settings_of, cli_error)


def _network(args: argparse.Namespace, settings: Any, cli_error: type[Exception]) -> str:
    network = args.network or settings.default_network()
    if network is None:
        raise cli_error("--network is required (several networks are configured)")
    return str(network)


def _fetch(url: str, cli_error: type[Exception]) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise cli_error(f"GET {url}: HTTP {err.code} {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise cli_error(f"GET {url}: {err}") from None
    except ValueError as err:  # not a URL urllib can open ("unknown url type")
        raise cli_error(f"--url: {err} (give e.g. http://127.0.0.1:8080)") from None


def _verify(args: argparse.Namespace, settings_of: Any, cli_error: type[Exception]) -> int:
    if args.file:
        path = Path(args.file)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise cli_error(f"no such file: {path}") from None
        except OSError as err:
            raise cli_error(f"cannot read {path}: {err.strerror or err}") from None
    else:
        settings = settings_of(args)
        base = args.url
        if not base:
            runtime = Path(settings.data_dir) / "runtime.json"
            if not runtime.exists():
                raise cli_error("give --url or --file (no running deployment found)")
            base = json.loads(runtime.read_text())["url"]
        network = _network(args, settings, cli_error)
        rid = urllib.parse.quote(args.raffle_id, safe="")
        query = urllib.parse.urlencode({"network": network})
        raw = _fetch(f"{base.rstrip('/')}/v1/raffles/{rid}/record?{query}", cli_error)
    try:
        record = eng.published_decoder.decode(raw)
    except (msgspec.DecodeError, ValueError) as err:
        print(f"rally: the record is not a valid raffle record: {err}")
        return 1
    result = eng.verify(record)
    if args.rpc:
        result = _on_chain(args.rpc, record, result, cli_error)
    if args.json:
        from gateway.raffles import verification_json

        print(json.dumps(verification_json(record, result), indent=2))
        return 0 if result.ok else 1
    print(f"raffle {record.raffle!r} of network {record.terms.network!r}: {record.status}, "
          f"{record.count} entrants, {record.tickets} tickets, root {record.root[:16]}...")  # fmt: skip
    for check in result.checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"  {mark} {check.name}{': ' + check.detail if check.detail else ''}")
    print(
        "  winners (recomputed): "
        + ", ".join(f"{w.user_id} (ticket {w.ticket})" for w in result.winners)
    )
    print("verified: the published winners follow from the published data" if result.ok
          else "VERIFICATION FAILED")  # fmt: skip
    return 0 if result.ok else 1


def _on_chain(
    rpc: str, record: eng.Published, result: eng.Verification, cli_error: type[Exception]
) -> eng.Verification:
    """`result` with the chain beacon's checks against the node at `rpc` added."""
    from eth_account import Account
    from web3.exceptions import Web3Exception

    from chain.beacon import check_on_chain
    from chain.client import ChainError, rpc_web3

    beacon = record.beacon
    if beacon is None or beacon.source != "chain":
        raise cli_error(f"--rpc checks a chain beacon; raffle {record.raffle!r} has "
                        f"{'none' if beacon is None else 'an admin beacon'}")  # fmt: skip
    try:
        w3, _ = rpc_web3(rpc, Account.create().key.hex())
        found = check_on_chain(w3, beacon, record.closed_at)
    except (OSError, Web3Exception, ChainError) as err:
        raise cli_error(f"--rpc: the chain could not be read: {err}"[:300]) from None
    checks = [*result.checks, *(eng.Check(f"chain:{n}", ok, "" if ok else d) for n, ok, d in found)]
    return eng.Verification(all(c.ok for c in checks), checks, result.winners)


def _admin(args: argparse.Namespace, settings_of: Any, cli_error: type[Exception]) -> int:

    from actors.keys import Keys
    from actors.raffle import RaffleKeys, RaffleTimeout, SyncRaffleClient, load_meta, summary
    from gateway.cli import _redis

    settings = settings_of(args)
    network = _network(args, settings, cli_error)
    # a bad terms file or beacon is reported before looking for the deployment
    cmd = None if args.action in ("list", "show") else _command(args, network, cli_error)
    with _redis(settings, own_if_stopped=False) as (url, _own):
        r = connect(url)
        keys = Keys.of(settings.namespace, url)
        if args.action in ("list", "show"):
            rk = RaffleKeys(keys)
            ids = ([args.raffle_id] if args.action == "show"
                   else [i.decode() for i in r.zrevrange(rk.index(network), 0, 199)])  # fmt: skip
            out = []
            for rid in ids:
                raffle = load_meta(r, rk, network, rid)
                if raffle is None:
                    raise cli_error(f"no raffle {rid!r} in network {network!r}")
                out.append(summary(raffle))
            print(json.dumps(out[0] if args.action == "show" else out, indent=2))
            return 0
        if args.action == "draw" and args.beacon == CHAIN:
            cmd = _chain_draw(r, keys, settings, cmd, cli_error)
            if cmd is None:
                return 1
        elif args.action == "draw":
            raffle = load_meta(r, RaffleKeys(keys), network, args.raffle_id)
            if raffle is not None and raffle.terms.beacon == "chain":
                raise cli_error(f"raffle {args.raffle_id!r} draws with the hash of the first "
                                "block after close: give --beacon chain (no value)")  # fmt: skip
        try:
            reply = SyncRaffleClient(r, keys).send(cmd)
        except RaffleTimeout as err:
            raise cli_error(f"{err} (is the deployment running?)") from None
    if not reply.ok:
        print(
            f"rally: {reply.code}: {reply.message}"
            + (f" (field {reply.field})" if reply.field else "")
        )
        return 1
    print(json.dumps(reply.body, indent=2))
    return 0


def _command(args: argparse.Namespace, network: str, cli_error: type[Exception]) -> Any:
    from actors.raffle import Command

    if args.action == "create":
        path = Path(args.terms)
        data = _terms_file(path, cli_error)
        data.setdefault("network", network)
        try:
            terms = msgspec.convert(data, eng.Terms)
        except (msgspec.ValidationError, ValueError) as err:
            raise cli_error(f"invalid terms in {path}: {err}") from None
        if terms.network != network:
            raise cli_error(f"{path}: network {terms.network!r} is not {network!r} (--network)")
        return Command(op="create", network=network, raffle=terms.id, ts=0.0, terms=terms)
    beacon = None
    if args.action == "draw" and args.beacon == CHAIN:
        if args.ref:
            raise cli_error("--ref goes with an admin beacon; a chain beacon names its block")
        beacon = eng.Beacon("chain", CHAIN)  # read from the chain once the raffle is found
    elif args.action == "draw":
        beacon = eng.Beacon("admin", args.beacon, args.ref)
        try:
            eng.check_beacon(beacon)
        except eng.RaffleError as err:
            raise cli_error(err.message) from None
    return Command(op=args.action, network=network, raffle=args.raffle_id, ts=0.0, beacon=beacon)


def _chain_draw(r: Any, keys: Any, settings: Any, cmd: Any, cli_error: type[Exception]) -> Any:
    """The draw command of a chain raffle with its beacon read from the chain, or None
    (the refusal printed) when the chain has none yet or cannot be read."""
    from actors.chain_beacon import BeaconError, resolve
    from actors.raffle import RaffleKeys, load_meta

    raffle = load_meta(r, RaffleKeys(keys), cmd.network, cmd.raffle)
    if raffle is None or raffle.status != "closed":
        return msgspec.structs.replace(cmd, beacon=None)  # the raffle actor says why
    if raffle.terms.beacon != "chain":
        raise cli_error(f"raffle {cmd.raffle!r} draws with an admin beacon: give its value "
                        "with --beacon V (e.g. a drand round's randomness)")  # fmt: skip
    try:
        beacon = resolve(r, keys, raffle.closed_at, rpc=settings.chain.rpc,
                         embedded=settings.payouts.enabled,
                         confirmations=settings.chain.confirmations)  # fmt: skip
    except BeaconError as err:
        print(f"rally: {err.code}: {err.message} (field beacon)")
        return None
    return msgspec.structs.replace(cmd, beacon=beacon)


def _terms_file(path: Path, cli_error: type[Exception]) -> dict[str, Any]:
    """The JSON object of a terms file; cli_error (exit 2) for anything else."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise cli_error(f"no such file: {path}") from None
    except OSError as err:
        raise cli_error(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise cli_error(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise cli_error(f"{path}: the terms must be a JSON object, got {type(data).__name__}")
    return data
