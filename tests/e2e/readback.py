"""What a deployment computed, read back as a user reads it (the HTTP API: members,
ledgers, the all-time leaderboards and the board of each UTC day), with the network name taken out so that
deployments fed the same events under different network names compare byte for byte; and
the same view computed by the in-memory model (engine/reference.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgspec
import redis

from actors.keys import Keys
from engine.reference import Reference
from engine.rules import RuleBook
from gateway.analytics_cli import day_text
from gateway.reads import entry_json
from gateway.signing import signed_headers
from tests.e2e.traffic import as_events

DAY_S = 86_400
PAGE = 500
NET = "N"
"""What every network name becomes in a normalised snapshot."""


async def api_get(
    session: aiohttp.ClientSession, url: str, path: str, auth: tuple[str, str]
) -> tuple[int, Any]:
    """Every read of the test goes through here: a GET, signed with the API key."""
    headers = signed_headers(*auth, target=path)
    async with session.get(url + path, headers=headers) as resp:
        return resp.status, json.loads(await resp.read() or b"null")


async def _ok(session: aiohttp.ClientSession, url: str, path: str, auth: tuple[str, str]) -> Any:
    status, body = await api_get(session, url, path, auth)
    assert status == 200, (path, status, body)
    return body


async def read_snapshot(
    session: aiohttp.ClientSession,
    url: str,
    auth: tuple[str, str],
    r: redis.Redis,
    keys: Keys,
    network: str,
    users: tuple[str, ...],
    channels: tuple[str, ...],
    days: tuple[int, ...],
) -> dict[str, Any]:
    """Members (balance, tier, standings...), every ledger entry, leaderboards (all time and
    each UTC day), channel stats and the treasury, normalised."""
    q = f"network={network}"

    async def member(u: str) -> Any:
        status, body = await api_get(session, url, f"/v1/members/{u}?{q}", auth)
        if status == 404:
            return None
        assert status == 200, (u, status, body)
        body.pop("streak")  # as of the wall clock's day, which may change while the test runs
        return body

    async def ledger(u: str) -> list[Any]:
        entries: list[Any] = []
        cursor: int | None = 0
        while cursor is not None:
            path = f"/v1/members/{u}/ledger?{q}&limit={PAGE}&cursor={cursor}"
            page = await _ok(session, url, path, auth)
            entries += page["entries"]
            cursor = page["next_cursor"]
        return entries

    async def board(c: str) -> Any:
        path = f"/v1/channels/{c}/leaderboard?{q}&period=all&limit={PAGE}"
        return (await _ok(session, url, path, auth))["entries"]

    async def stats(c: str) -> Any:
        body = await _ok(session, url, f"/v1/channels/{c}/stats?{q}", auth)
        return {k: body[k] for k in ("live", "viewers_present", "events_total")}

    async def members_and_ledgers() -> tuple[list[Any], list[str], list[list[Any]]]:
        members = await asyncio.gather(*map(member, users))
        present = [u for u, m in zip(users, members, strict=True) if m is not None]
        return members, present, await asyncio.gather(*map(ledger, present))

    async def day_board(c: str, d: int) -> list[list[Any]]:
        path = f"/v1/channels/{c}/leaderboard?{q}&period=day&day={day_text(d)}&limit={PAGE}"
        return [
            [e["user_id"], e["points"]] for e in (await _ok(session, url, path, auth))["entries"]
        ]

    # every read at once: the ledgers (one request per member) take the longest, and the
    # boards, stats and day boards need not wait for them
    pairs = [(c, d) for c in channels for d in days]
    (members, present, ledgers), boards, chan_stats, got = await asyncio.gather(
        members_and_ledgers(),
        asyncio.gather(*map(board, channels)),
        asyncio.gather(*map(stats, channels)),
        asyncio.gather(*(day_board(c, d) for c, d in pairs)),
    )
    day_boards: dict[str, dict[str, list[list[Any]]]] = {c: {} for c in channels}
    for (c, d), b in zip(pairs, got, strict=True):
        day_boards[c][day_text(d)] = b
    snap = {
        "members": dict(zip(users, members, strict=True)),
        "ledgers": dict(zip(present, ledgers, strict=True)),
        "boards": dict(zip(channels, boards, strict=True)),
        "day_boards": day_boards,
        "channels": dict(zip(channels, chan_stats, strict=True)),
        "treasury": int(r.hget(keys.treasury, network) or 0),
    }
    return normalise(snap, network)


def normalise(snapshot: Any, network: str) -> Any:
    """The snapshot with the network name replaced by NET in every key and string (network
    names are chosen so that they occur in nothing else)."""
    return json.loads(json.dumps(snapshot, sort_keys=True).replace(network, NET))


def canonical(snapshot: Any) -> bytes:
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()


# ---- the model ---------------------------------------------------------------------------


def run_reference(book: RuleBook, wire: list[dict]) -> Reference:
    """The model fed the workload: deduplicated events in (ts, id) order (the semantics of
    README "Event time"); adapt here if the model's entry points change."""
    ref = Reference(book)
    ref.ingest(as_events(sorted(wire, key=lambda e: (e["ts"], e["id"]))), 0.0)
    ref.finish()  # what wait_idle does: the newest event too is applied
    return ref


def _ranked(points: dict[str, int]) -> list[list[Any]]:
    """Best first; ties as Redis orders them (ZREVRANGE: member descending)."""
    return [[u, p] for u, p in sorted(points.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def model_view_of_reference(ref: Reference, book: RuleBook, network: str) -> dict[str, Any]:
    """What the model says, in the shape of `model_view`."""
    names = book.network(network).tiers.names
    members = {
        user: {
            "balance": s.balance,
            "lifetime_points": s.lifetime,
            "tier": names[s.tier],
            "name": s.name,
        }
        for (net, user), s in ref.members.items()
        if net == network
    }
    ledgers = {
        user: [entry_json(e) for e in reversed(entries)]
        for (net, user), entries in ref.ledger.items()
        if net == network and entries
    }
    boards = {c: _ranked(b) for (net, c), b in ref.leaderboards.items() if net == network}
    days: dict[str, dict[str, dict[str, int]]] = {}
    for entries in ref.ledger.values():
        for e in entries:
            if e.network == network:
                day = days.setdefault(e.channel, {}).setdefault(day_text(int(e.ts // DAY_S)), {})
                user = e.credit.rsplit(":", 1)[1]
                day[user] = day.get(user, 0) + e.amount
    view = {
        "members": members,
        "ledgers": ledgers,
        "boards": boards,
        "day_boards": {c: {d: _ranked(p) for d, p in ds.items()} for c, ds in days.items()},
        "treasury": -sum(m["balance"] for m in members.values()),
    }
    return normalise(view, network)


def model_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of a normalised snapshot that the model computes too."""
    return {
        "members": {
            u: {k: m[k] for k in ("balance", "lifetime_points", "tier", "name")}
            for u, m in snapshot["members"].items()
            if m is not None
        },
        "ledgers": {u: es for u, es in snapshot["ledgers"].items() if es},
        "boards": {
            c: [[e["user_id"], e["points"]] for e in b] for c, b in snapshot["boards"].items() if b
        },
        "day_boards": {
            c: {d: b for d, b in ds.items() if b}
            for c, ds in snapshot["day_boards"].items()
            if any(ds.values())
        },
        "treasury": snapshot["treasury"],
    }


_FIRST = {"members": 0, "ledgers": 1, "boards": 2, "day_boards": 3}
"""Where a difference is reported first: balances explain the rest."""


def differences(a: Any, b: Any, path: str = "", limit: int = 12) -> list[str]:
    """The first `limit` places where a and b differ, as readable lines."""
    out: list[str] = []

    def walk(x: Any, y: Any, at: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=lambda k: (_FIRST.get(k, 9), str(k))):
                if k not in x or k not in y:
                    out.append(f"{at}/{k}: only in {'first' if k in x else 'second'}")
                else:
                    walk(x[k], y[k], f"{at}/{k}")
                if len(out) >= limit:
                    return
        elif isinstance(x, list) and isinstance(y, list) and x != y:
            if len(x) != len(y):
                out.append(f"{at}: {len(x)} vs {len(y)} items")
            for i, (p, q) in enumerate(zip(x, y, strict=False)):
                if p != q:
                    walk(p, q, f"{at}[{i}]")
                    return
        elif x != y:
            out.append(
                f"{at}: {msgspec.json.encode(x)[:200]!r} vs {msgspec.json.encode(y)[:200]!r}"
            )

    walk(a, b, path)
    return out
