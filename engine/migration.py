"""Migration: opening balances imported from another bot, and the rows they come from.

A network that adopts Rallypoint arrives with balances kept by another bot. Each member's
balance becomes one *opening balance*: a spend-path credit (engine/spend.py) from the
network's `migration:{network}` account to the member, rule `opening_balance`, with

- the idempotency key `import:opening` (the entry id is `{network}:{user}/x/import:opening`),
  so submitting the same row again is answered from the member's record;
- a guard `import` with limit 1 kept as long as the member, so a member gets one opening
  balance ever: a second import (of any file, even after the record expired) is refused
  with `limit_reached` and changes nothing;
- `lifetime`: the lifetime points the source knew (else the balance), added to the
  member's lifetime so their tier follows (`retier`).

Sources (parsed here from text; the CLI reads the files):

- `csv`: header `user_id,balance` and optional `lifetime`, `name` columns;
- `streamelements`: the JSON of the points API (`{"users": [{"username", "points",
  "pointsAlltime"?}]}`, or a bare list of such objects), or a CSV export with
  `username,points[,alltime]` columns;
- `phantombot`: rows `(username, points)` of its `phantombot_points` table (the CLI reads
  the SQLite database), or a CSV `username,points`.

StreamElements and PhantomBot key balances by Twitch login name, not by user id. A `names`
mapping (login name, lowercased → user id) resolves them; a name missing from it is a
rejected row. Without a mapping the lowercased login name is the user id, which is right
for networks whose events carry login names as `user_id`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from engine.member import MemberState, TierChange
from engine.rules import TierRules
from engine.spend import MAX_AMOUNT, Guard, Transfer

Source = Literal["csv", "streamelements", "phantombot"]
SOURCES: tuple[Source, ...] = ("csv", "streamelements", "phantombot")
RULE = "opening_balance"
KEY = "import:opening"
GUARD = "import"
MAX_USER_ID = 200


class MigrationError(ValueError):
    """A file that is not a valid export of its source (not a bad row: the whole file)."""


class Row(msgspec.Struct, frozen=True):
    """One member's balance as the source kept it."""

    line: int
    """Where it was in the file (1 = the first data row or object)."""
    user_id: str
    balance: int
    lifetime: int = -1
    """-1: the source does not know it (the balance stands for it)."""
    name: str = ""


class Rejected(msgspec.Struct, frozen=True):
    """A row left out, and why."""

    line: int
    user_id: str
    reason: str


class Parsed(msgspec.Struct):
    rows: list[Row] = msgspec.field(default_factory=list)
    rejected: list[Rejected] = msgspec.field(default_factory=list)
    skipped: int = 0
    """Rows with nothing to import (balance and lifetime 0)."""


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def check_row(
    line: int, user: object, balance: object, lifetime: object = None, name: str = ""
) -> Row | Rejected:
    """A row, or why it is rejected."""
    uid = str(user if user is not None else "").strip()
    if not uid:
        return Rejected(line, "", "empty user id")
    if len(uid) > MAX_USER_ID or not uid.isprintable():
        return Rejected(line, uid[:40], f"user id must be 1-{MAX_USER_ID} printable characters")
    b = _int(balance)
    if b is None:
        return Rejected(line, uid, f"balance is not a whole number: {str(balance)[:40]!r}")
    if not 0 <= b <= MAX_AMOUNT:
        return Rejected(line, uid, f"balance must be 0 to {MAX_AMOUNT}, got {b}")
    life = -1
    if lifetime is not None and str(lifetime).strip() != "":
        got = _int(lifetime)
        if got is None:
            return Rejected(line, uid, f"lifetime is not a whole number: {str(lifetime)[:40]!r}")
        if not 0 <= got <= MAX_AMOUNT:
            return Rejected(line, uid, f"lifetime must be 0 to {MAX_AMOUNT}, got {got}")
        life = got
    return Row(line, uid, b, life, name)


def _csv_rows(text: str, user_cols: tuple[str, ...], balance_cols: tuple[str, ...],
              lifetime_cols: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:  # fmt: skip
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise MigrationError("empty file: expected a header line")
    reader.fieldnames = header
    for wanted, what in ((user_cols, "user"), (balance_cols, "balance")):
        if not any(c in header for c in wanted):
            raise MigrationError(
                f"no {what} column: expected one of {', '.join(wanted)} in the header "
                f"(got {', '.join(header)})"
            )
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for i, rec in enumerate(reader, start=1):
            if None in rec:
                raise MigrationError(f"row {i}: more fields than the header names")
            rows.append((i, {k: (v or "") for k, v in rec.items()}))
    except csv.Error as err:
        raise MigrationError(f"not valid CSV: {err}") from err
    return rows


def _first(rec: Mapping[str, str], cols: tuple[str, ...]) -> str | None:
    for c in cols:
        if c in rec:
            return rec[c]
    return None


def _from_csv(text: str, user_cols: tuple[str, ...], balance_cols: tuple[str, ...],
              lifetime_cols: tuple[str, ...], lower: bool) -> list[Row | Rejected]:  # fmt: skip
    out: list[Row | Rejected] = []
    for i, rec in _csv_rows(text, user_cols, balance_cols, lifetime_cols):
        user = _first(rec, user_cols) or ""
        user = user.strip().lower() if lower else user
        out.append(
            check_row(
                i, user, _first(rec, balance_cols), _first(rec, lifetime_cols), rec.get("name", "")
            )
        )
    return out


def _from_se_json(text: str) -> list[Row | Rejected]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise MigrationError(f"not valid JSON: {err}") from err
    users = doc.get("users") if isinstance(doc, dict) else doc
    if not isinstance(users, list):
        raise MigrationError('expected {"users": [...]} or a list of {"username", "points"}')
    out: list[Row | Rejected] = []
    for i, u in enumerate(users, start=1):
        if not isinstance(u, dict):
            out.append(Rejected(i, "", "not an object"))
            continue
        name = str(u.get("username", "")).strip()
        life = u.get("pointsAlltime", u.get("alltime"))
        out.append(check_row(i, name.lower(), u.get("points"), life, name))
    return out


def parse(source: Source, text: str) -> list[Row | Rejected]:
    """The rows of a text export of `source`, each checked; raises MigrationError when
    the text is not such an export at all."""
    if source == "csv":
        return _from_csv(text, ("user_id",), ("balance",), ("lifetime",), lower=False)
    if source == "streamelements":
        if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
            return _from_se_json(text)
        return _from_csv(
            text, ("username",), ("points", "current points"),
            ("alltime", "pointsalltime", "all time points"), lower=True,
        )  # fmt: skip
    if source == "phantombot":
        return _from_csv(text, ("username",), ("points",), (), lower=True)
    raise MigrationError(f"unknown source {source!r}: one of {', '.join(SOURCES)}")


def phantombot_rows(pairs: Iterable[tuple[object, object]]) -> list[Row | Rejected]:
    """Rows from PhantomBot's `phantombot_points` table: (variable = login, value = points)."""
    return [
        check_row(i, str(user or "").strip().lower(), points)
        for i, (user, points) in enumerate(pairs, start=1)
    ]


def resolve(checked: Iterable[Row | Rejected], names: Mapping[str, str] | None) -> Parsed:
    """Map login names to user ids (when `names` is given), reject duplicates (the first
    row of a member wins), count rows with nothing to import."""
    out = Parsed()
    seen: set[str] = set()
    for item in checked:
        if isinstance(item, Rejected):
            out.rejected.append(item)
            continue
        row = item
        if names is not None:
            uid = names.get(row.user_id.lower())
            if uid is None:
                out.rejected.append(Rejected(row.line, row.user_id, "name not in the names map"))
                continue
            row = msgspec.structs.replace(row, user_id=uid, name=row.name or row.user_id)
        if row.user_id in seen:
            out.rejected.append(
                Rejected(row.line, row.user_id, "duplicate: member already in file")
            )
            continue
        seen.add(row.user_id)
        if row.balance == 0 and row.lifetime <= 0:
            out.skipped += 1
            continue
        out.rows.append(row)
    return out


def opening_transfer(network: str, row: Row, ts: float = 0.0) -> Transfer:
    """The spend-path credit carrying `row`'s opening balance (see the module doc)."""
    return Transfer(
        key=KEY,
        network=network,
        user_id=row.user_id,
        amount=row.balance,
        direction="credit",
        account=f"migration:{network}",
        rule=RULE,
        guards=(Guard(GUARD, limit=1),),
        ts=ts,
        lifetime=max(row.lifetime, row.balance),
    )


def retier(
    state: MemberState, network: str, user_id: str, tiers: TierRules, ts: float
) -> TierChange | None:
    """Move the member to the tier its lifetime points give (after an opening balance)."""
    tier = tiers.tier_for(state.lifetime)
    if tier == state.tier:
        return None
    change = TierChange(network, user_id, state.tier, tier, ts, state.lifetime)
    state.tier = tier
    return change
