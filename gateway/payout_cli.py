"""`rally payouts list | show | retry | void`: payouts of the running deployment, in Redis.

The same moves as the HTTP admin routes (gateway/routes/payouts.py), by compare-and-swap on
the payout (actors/payout.py), so a CLI move and the payout actor never overwrite each other.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from actors.redisconn import connect
from engine import payout as eng


def add_parser(sub: Any, common: Callable[[Any], None]) -> None:
    p = sub.add_parser("payouts", help="list, show, retry or void payouts")
    ps = p.add_subparsers(dest="action", required=True)
    ls = ps.add_parser("list", help="payouts, newest first (and how many are in each status)")
    ls.add_argument("--status", choices=eng.STATUSES, help="only payouts in this status")
    ls.add_argument("--limit", type=int, default=50, help="most payouts shown (1-1000)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = ps.add_parser("show", help="one payout, as JSON")
    show.add_argument("ids", nargs=1, metavar="ID")
    retry = ps.add_parser("retry", help="send dead payouts again")
    void = ps.add_parser("void", help="void reserved or dead payouts: their points go back")
    for sp in (retry, void):
        sp.add_argument("ids", nargs="*", metavar="ID")
        sp.add_argument("--all-dead", action="store_true", help="every dead payout")
    for sp in ps.choices.values():
        common(sp)


def run(args: argparse.Namespace, settings: Any, redis_url: str, cli_error: type[Exception]) -> int:

    from actors.keys import Keys
    from actors.payout import PayoutNotFound, PayoutStore
    from gateway.routes.payouts import view

    if args.action == "list" and not 1 <= args.limit <= 1_000:
        raise cli_error("rally payouts list: --limit must be from 1 to 1000")
    r = connect(redis_url, socket_timeout=30)
    store = PayoutStore(r, Keys.of(settings.namespace, redis_url), settings.payouts.rules())
    if args.action == "list":
        got = [view(p) for p in store.list(args.status or "", args.limit)]
        if args.json:
            print(json.dumps({"payouts": got, "counts": store.counts()}, indent=1))
            return 0
        for p in got:
            print(f"{p['id']}  {p['status']:<9} {p['network']}:{p['user_id']}  {p['points']} pts"
                  f"  attempts {p['attempts']}  {p['reason']}")  # fmt: skip
        counts = store.counts()
        print("  ".join(f"{s}: {counts.get(s, 0)}" for s in eng.STATUSES))
        return 0
    if args.action == "show":
        p = store.get(args.ids[0])
        if p is None:
            raise cli_error(f"no payout {args.ids[0]!r}")
        print(json.dumps(view(p), indent=1))
        return 0
    if args.all_dead == bool(args.ids):
        raise cli_error(f"rally payouts {args.action}: give payout IDs or --all-dead (not both)")
    ids = [p.id for p in store.list("dead", 1_000)] if args.all_dead else args.ids
    change = eng.retried if args.action == "retry" else eng.voided
    failed = 0
    for pid in ids:
        try:
            p = store.update(pid, change, time.time())
        except (PayoutNotFound, eng.PayoutError) as err:
            print(f"{pid}: {err}")
            failed += 1
            continue
        print(
            f"{pid}: {p.status}"
            + (" (refund owed: the payout actor credits it)" if p.refund else "")
        )
    return 1 if failed else 0
