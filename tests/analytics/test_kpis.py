"""The points KPIs and the spending views over every kind of ledger flow the engine posts:
earning, bonuses, vouchers, gifts, store redemptions and refunds, raffles, payouts and
imported opening balances (each made by the engine's own transfer code)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import msgspec
import pytest
from msgspec.structs import replace

from analytics import kpis, snapshot
from analytics.archive import LedgerArchive
from engine import payout
from engine.ledger import Entry, member_account, treasury_account
from engine.member import MemberState
from engine.spend import Transfer, apply_transfer, gift_leg
from tests.analytics.test_archive import log_entry

NET = "n"
DAY = 20_400
T0 = DAY * kpis.DAY_S + 3_600.0


def earned(user: str, amount: int, ts: float, channel: str = "c1") -> Entry:
    return Entry(f"{user}/earn/{ts}", ts, NET, treasury_account(NET),
                 member_account(NET, user), amount, "chat", channel)  # fmt: skip


def pay(p: payout.Payout, status: payout.Status) -> payout.Payout:
    return replace(p, status=status, refund=status == "voided")


def ledger() -> list[Entry]:
    """Members a, b, c of network n: the entries of one day, as the engine posts them."""
    state = {u: MemberState() for u in ("a", "b", "c")}
    out: list[Entry] = []

    def do(t: Transfer, ts: float) -> Transfer:
        t = replace(t, ts=ts)
        got, entry = apply_transfer(state[t.user_id], t)
        assert got.code == "ok", (t, got)
        if entry is not None:
            out.append(entry)
        return t

    def earn(user: str, amount: int, ts: float) -> None:
        out.append(earned(user, amount, ts))
        state[user].balance += amount

    earn("a", 1_000, T0)
    earn("b", 500, T0 + 1)
    # issued besides the treasury: the weekly bonus / a moderator, a voucher
    do(Transfer("wk", NET, "c", 70, "credit", f"bonus:{NET}", "weekly"), T0 + 2)
    do(Transfer("mod-rm", NET, "c", 20, "debit", f"bonus:{NET}", "moderator"), T0 + 3)
    do(Transfer("voucher:v1", NET, "b", 40, "credit", f"voucher:{NET}:b1", "voucher"), T0 + 4)
    # opening balance imported
    do(Transfer("imp", NET, "c", 300, "credit", f"migration:{NET}", "migration"), T0 + 5)
    # a gift a -> b: both legs, no flow in or out of members
    g = do(Transfer("g1", NET, "a", 100, "debit", f"gift:{NET}", "gift", to_user="b"), T0 + 6)
    do(gift_leg(g), T0 + 6)
    # spent: a store redemption refunded in part, raffle tickets; a prize is issued
    do(Transfer("st1", NET, "a", 200, "debit", f"store:{NET}", "store_redeem"), T0 + 7)
    do(Transfer("st1r", NET, "a", 200, "credit", f"store:{NET}", "refund"), T0 + 8)
    do(Transfer("st2", NET, "b", 50, "debit", f"store:{NET}", "store_redeem"), T0 + 9)
    do(Transfer("rt", NET, "a", 30, "debit", f"raffle:{NET}:r1", "raffle_ticket"), T0 + 10)
    do(Transfer("rp", NET, "b", 25, "credit", f"raffle:{NET}:r1", "raffle_prize"), T0 + 11)
    # payouts: one settled, one voided (refunded), one pending
    for pid, user, points, end in (("p1", "a", 100, "settled"), ("p2", "b", 60, "voided"),
                                   ("p3", "a", 10, "")):  # fmt: skip
        p = payout.Payout(id=pid, network=NET, user_id=user, points=points, units=points,
                          sink="webhook", destination="x", key=pid, digest=b"",
                          created_at=T0)  # fmt: skip
        do(payout.reservation(p), T0 + 12)
        if end == "settled":
            do(payout.payment(pay(p, "settled")), T0 + 13)
        elif end == "voided":
            do(payout.refund(pay(p, "voided")), T0 + 13)
    return out


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    archive = LedgerArchive(tmp_path / "ledger.duckdb")
    archive.create()
    before = [earned("a", 5, T0 - 2 * kpis.DAY_S)]  # outstanding before the period
    archive.append([log_entry(1, before), log_entry(2, ledger())])
    snapshot.take(archive, tmp_path / "snaps", now=T0 + 60)
    with snapshot.connect(tmp_path / "snaps") as c:
        yield c


def test_points_issued_spent_imported_and_outstanding(con: duckdb.DuckDBPyConnection) -> None:
    rep = kpis.report(con, kpis.Scope(DAY, DAY))
    issued = 1_000 + 500 + 70 - 20 + 40 + 25  # treasury, bonus less a removal, voucher, prize
    spent = (200 - 200) + 50 + 30 + 100 + (60 - 60) + 10  # refunds come back off; prizes don't
    assert rep["points"] == {"issued": issued, "spent": spent, "imported": 300,
                             "outstanding": 5 + issued - spent + 300}  # fmt: skip
    members = con.execute("SELECT sum(balance) FROM members").fetchone()
    assert members == (rep["points"]["outstanding"],)
    assert [(r["issued"], r["spent"]) for r in rep["daily"]] == [(issued, spent)]
    day_before = kpis.report(con, kpis.Scope(DAY - 2, DAY - 1))["points"]
    assert day_before == {"issued": 5, "spent": 0, "imported": 0, "outstanding": 5}


def test_channels_count_the_points_issued_there(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("SELECT channel, points_issued FROM channels").fetchall()
    assert rows == [("c1", 1_505)]  # the earning entries; the transfers carry no channel


def test_the_payouts_view_has_one_row_per_payout(con: duckdb.DuckDBPyConnection) -> None:
    got = con.execute(
        "SELECT payout, user_id, points, status, reserved_ts IS NOT NULL,"
        " paid_ts IS NOT NULL, voided_ts IS NOT NULL FROM payouts ORDER BY payout"
    ).fetchall()
    assert got == [
        ("p1", "a", 100, "paid", True, True, False),
        ("p2", "b", 60, "voided", True, False, True),
        ("p3", "a", 10, "pending", True, False, False),
    ]
    rules = con.execute("SELECT DISTINCT rule FROM raffle_entries").fetchall()
    assert rules == [("raffle_ticket",)]


def test_the_report_writes_four_charts_and_a_page(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    from analytics.report import retention_curves, write_report

    rep = kpis.report(con, kpis.Scope(DAY - 29, DAY))
    page = write_report(rep, tmp_path / "out")
    charts = ("active.png", "retention.png", "tiers.png", "points.png")
    for name in charts:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{name}'" in page.read_text()
    assert "points imported" in page.read_text()
    rows = [{"cohort": 1, "members": 3, "day_1": 1 / 3, "day_7": None},
            {"cohort": 2, "members": 1, "day_1": 1.0, "day_7": 0.0}]  # fmt: skip
    assert retention_curves(rows) == ([0, 1, 7], [1.0, 0.5, 0.0])


def test_store_redemptions_name_the_item_and_how_each_ended(tmp_path: Path) -> None:
    from analytics.landing import FeedEntry
    from engine.store import Redemption

    def note(ms: int, kind: str, red: Redemption) -> FeedEntry:
        return FeedEntry("t:notices", f"{ms}-0", {kind.encode(): msgspec.json.encode(red)})

    def red(rid: str, status: str, cost: int = 50) -> Redemption:
        return Redemption(rid, NET, "a", "mug", "A mug", cost, "c1", status, T0, T0 + 1,  # type: ignore[arg-type]
                          f"store:{rid}")  # fmt: skip

    archive = LedgerArchive(tmp_path / "ledger.duckdb")
    archive.create()
    archive.append([], [note(1, "item_redeemed", red("r1", "pending")),
                        note(2, "item_redeemed", red("r2", "pending")),
                        note(3, "item_fulfilled", red("r1", "fulfilled")),
                        note(4, "item_refunded", red("r2", "refunded"))])  # fmt: skip
    snapshot.take(archive, tmp_path / "s", now=T0 + 60)
    with snapshot.connect(tmp_path / "s") as c:
        got = c.execute(
            "SELECT redemption, user_id, item, item_name, cost, channel, voucher,"
            " fulfilled_ts IS NOT NULL, refunded_ts IS NOT NULL"
            " FROM store_redemptions ORDER BY redemption"
        ).fetchall()
    assert got == [("r1", "a", "mug", "A mug", 50, "c1", None, True, False),
                   ("r2", "a", "mug", "A mug", 50, "c1", None, False, True)]  # fmt: skip
