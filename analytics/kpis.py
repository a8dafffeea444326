"""The KPIs of a loyalty program, as SQL over a snapshot's views (docs/ANALYTICS.md).

Each KPI is a pure function returning (sql, params) for a `Scope` (a period of UTC days,
optionally one network and one channel); `report` runs them all on a DuckDB connection to
a snapshot (analytics/snapshot.py) and returns plain values (dicts and lists). Days are
integers: days since the epoch (UTC), `day = floor(ts / 86400)`.

Activity: a member is active on a day when an accepted event of that day names them
(chat, join, follow, sub, cheer, custom, ...: any event with a user id; viewers snapshots
do not name viewers in the archive), or when they were paid a watch tick that day (a
ledger entry of rule 'watch'). Every KPI that counts members counts distinct
(network, user id) pairs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import duckdb

DAY_S = 86_400
RETENTION_DAYS = (1, 7, 14, 30)
STREAK_MIN_DAYS = 7
TOP_CHANNELS = 10
DEFAULT_WATCH_S = 300

Params = dict[str, Any]

SOURCES = ("treasury", "bonus", "voucher")
"""Accounts the program issues points from: the treasury (earning rules), `bonus:` (the
weekly bonus, moderators' !addpoints / !bonusall) and `voucher:` (voucher points)."""
SINKS = ("store", "raffle", "payout")
"""Accounts members spend points on: the store, raffles (tickets, entries), payouts."""
IMPORTS = ("migration",)
"""Accounts opening balances come from (`rally import`)."""


def _kinds(col: str, kinds: tuple[str, ...]) -> str:
    return f"split_part({col}, ':', 1) IN ({', '.join(repr(k) for k in kinds)})"


def net_flow(kinds: tuple[str, ...]) -> str:
    """The signed amount of a ledger entry between members and accounts of `kinds`: +amount
    from a member to them, -amount from them to a member, else 0 (a gift between members
    passes `gift:` and is no flow of any kind)."""
    to_them = f"starts_with(debit, 'member:') AND {_kinds('credit', kinds)}"
    from_them = f"starts_with(credit, 'member:') AND {_kinds('debit', kinds)}"
    return f"(CASE WHEN {to_them} THEN amount WHEN {from_them} THEN -amount ELSE 0 END)"


PRIZE = "(rule = 'raffle_prize' AND starts_with(credit, 'member:'))"
"""A raffle prize: the terms' `prize_points`, a reward the program gives (not ticket points
given back), though it passes the raffle's account."""
ISSUED = f"(CASE WHEN {PRIZE} THEN amount ELSE -{net_flow(SOURCES)} END)"
"""Points issued by one ledger entry: from a source to a member (less a moderator's
!removepoints, member -> bonus:), and raffle prizes."""
SPENT = f"(CASE WHEN {PRIZE} THEN 0 ELSE {net_flow(SINKS)} END)"
"""Points spent by one ledger entry: from a member to a sink (less what a sink gives back:
refunds, voided payouts)."""
IMPORTED = f"(-{net_flow(IMPORTS)})"


@dataclass(frozen=True)
class Scope:
    """The days [first_day, last_day] (inclusive), one network or all, one channel or all."""

    first_day: int
    last_day: int
    network: str | None = None
    channel: str | None = None
    watch_intervals: tuple[tuple[str, str, int], ...] = ()
    """(network, channel or '' for the network's default, seconds): the length of one paid
    watch tick ([networks.*.earn] watch_interval_s and its channel overrides); DEFAULT_WATCH_S
    where none is given."""
    materialized: bool = False
    """The scope's activity is in the temporary table MATERIALIZED (see `report`)."""

    def params(self) -> Params:
        return {"d0": self.first_day, "d1": self.last_day, "net": self.network,
                "chan": self.channel}  # fmt: skip


def _where(alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    return f"($net IS NULL OR {a}network = $net) AND ($chan IS NULL OR {a}channel = $chan)"


ACTIVITY_SELECT = f"""
    SELECT DISTINCT network, channel, user_id, network || chr(31) || user_id AS member,
           CAST(floor(ts / {DAY_S}) AS BIGINT) AS day, kind
    FROM (
        SELECT network, channel, user_id, ts, kind FROM events_raw WHERE user_id <> ''
        UNION ALL
        SELECT network, channel, substr(credit, length('member:' || network || ':') + 1),
               ts, 'watch' FROM ledger WHERE rule = 'watch' AND starts_with(credit, 'member:'))
    WHERE {_where()}"""
"""Who was active where, on which day, doing what: one row per distinct (network, channel,
user, day, kind); `member` = network and user id in one value (for counting members).
It reads `events_raw`: a re-sent event id is the same event, and DISTINCT drops it (the
`events` view's per-id window over every event would cost more than all the KPIs)."""
MATERIALIZED = "kpi_activity"
"""The temporary table `report` fills with ACTIVITY_SELECT once for all KPIs of a scope."""


def _activity(s: Scope) -> str:
    """The `activity` CTE of the KPIs of `s`."""
    body = f"SELECT * FROM {MATERIALIZED}" if s.materialized else ACTIVITY_SELECT
    return f"activity AS ({body})"


def active_members(s: Scope) -> tuple[str, Params]:
    """DAU (mean over the period's days, and on its last day), WAU (the 7 days ending on
    the last day), MAU (the 30 days ending on the last day), and DAU/MAU."""
    sql = f"""
    WITH {_activity(s)},
    daily AS (
        SELECT d.day, count(DISTINCT a.member) FILTER (WHERE a.day IS NOT NULL) AS n
        FROM range($d0, $d1 + 1) d(day) LEFT JOIN activity a ON a.day = d.day GROUP BY d.day)
    SELECT
        (SELECT avg(n) FROM daily) AS dau,
        (SELECT n FROM daily WHERE day = $d1) AS dau_last_day,
        (SELECT count(DISTINCT member) FROM activity
         WHERE day BETWEEN $d1 - 6 AND $d1) AS wau,
        (SELECT count(DISTINCT member) FROM activity
         WHERE day BETWEEN $d1 - 29 AND $d1) AS mau"""
    return sql, s.params()


def chat_active(s: Scope) -> tuple[str, Params]:
    """Chat DAU (mean over the period's days of members who chatted that day) and chat MAU
    (members who chatted in the 30 days ending on the last day)."""
    sql = f"""
    WITH {_activity(s)},
    chat AS (SELECT * FROM activity WHERE kind = 'chat'),
    daily AS (
        SELECT d.day, count(DISTINCT c.member) FILTER (WHERE c.day IS NOT NULL) AS n
        FROM range($d0, $d1 + 1) d(day) LEFT JOIN chat c ON c.day = d.day GROUP BY d.day)
    SELECT (SELECT avg(n) FROM daily) AS chat_dau,
           (SELECT count(DISTINCT member) FROM chat
            WHERE day BETWEEN $d1 - 29 AND $d1) AS chat_mau"""
    return sql, s.params()


def retention(s: Scope) -> tuple[str, Params]:
    """Retention by join cohort: a member's join day is their first active day (in the
    scope's network/channel, over all time); cohorts are the join days within the period.
    For k in RETENTION_DAYS: the share of the cohort active on join day + k, for cohorts
    whose join day + k is not after the period's last day (else NULL)."""
    ks = ", ".join(map(str, RETENTION_DAYS))
    cols = ", ".join(
        f"CASE WHEN z.cohort + {k} <= $d1 THEN"
        f" coalesce(max(r.n) FILTER (WHERE r.k = {k}), 0) / z.members END AS day_{k}"
        for k in RETENTION_DAYS
    )
    sql = f"""
    WITH {_activity(s)},
    joined AS (SELECT member, min(day) AS cohort FROM activity GROUP BY member),
    cohorts AS (SELECT * FROM joined WHERE cohort BETWEEN $d0 AND $d1),
    days AS (SELECT DISTINCT member, day FROM activity WHERE day BETWEEN $d0 AND $d1),
    back AS (SELECT c.cohort, d.day - c.cohort AS k FROM cohorts c JOIN days d USING (member)
             WHERE d.day - c.cohort IN ({ks})),
    r AS (SELECT cohort, k, count(*) AS n FROM back GROUP BY ALL),
    z AS (SELECT cohort, count(*) AS members FROM cohorts GROUP BY cohort)
    SELECT z.cohort, z.members, {cols}
    FROM z LEFT JOIN r USING (cohort) GROUP BY z.cohort, z.members ORDER BY z.cohort"""
    return sql, s.params()


def tier_distribution(s: Scope) -> tuple[str, Params]:
    """Members per tier at the end of the last day: each member's tier is the new tier of
    their last tier change on or before it (0 without one); the members counted are those
    active (in scope) on any day up to the last day."""
    sql = f"""
    WITH {_activity(s)},
    who AS (SELECT DISTINCT network, user_id FROM activity WHERE day <= $d1),
    tier AS (SELECT network, user_id, arg_max(new_tier, ts) AS tier FROM tier_changes
             WHERE floor(ts / {DAY_S}) <= $d1 GROUP BY ALL)
    SELECT coalesce(t.tier, 0) AS tier, count(*) AS members
    FROM who LEFT JOIN tier t USING (network, user_id) GROUP BY ALL ORDER BY tier"""
    return sql, s.params()


def tier_upgrades(s: Scope) -> tuple[str, Params]:
    """Tier changes to a higher tier per calendar month (UTC) of the period."""
    sql = f"""
    SELECT strftime(make_timestamp(CAST(ts * 1e6 AS BIGINT)), '%Y-%m') AS month,
           count(*) AS upgrades
    FROM tier_changes
    WHERE new_tier > old_tier AND floor(ts / {DAY_S}) BETWEEN $d0 AND $d1
      AND ($net IS NULL OR network = $net)
      AND ($chan IS NULL OR (network, user_id) IN (
          SELECT (network, user_id) FROM events_raw WHERE channel = $chan))
    GROUP BY ALL ORDER BY month"""
    return sql, s.params()


def streaks(s: Scope) -> tuple[str, Params]:
    """Streak continuation: of the members active in the 30 days ending on the last day,
    the share whose streak is STREAK_MIN_DAYS or more. A member's streak is the number of
    consecutive active days ending on the last day, or on the day before it (a streak not
    yet continued today is still alive)."""
    sql = f"""
    WITH {_activity(s)},
    days AS (SELECT DISTINCT member, day FROM activity WHERE day BETWEEN $d1 - 400 AND $d1),
    runs AS (SELECT member, day, day - row_number() OVER
                 (PARTITION BY member ORDER BY day) AS run FROM days),
    last_run AS (SELECT member, max(day) AS last_day, count(*) AS streak
                 FROM runs GROUP BY member, run),
    cur AS (SELECT member, max(streak) FILTER (WHERE last_day >= $d1 - 1) AS streak
            FROM last_run GROUP BY ALL),
    mau AS (SELECT DISTINCT member FROM days WHERE day >= $d1 - 29)
    SELECT count(*) AS members,
           count(*) FILTER (WHERE coalesce(c.streak, 0) >= {STREAK_MIN_DAYS}) AS streak_7,
           count(*) FILTER (WHERE coalesce(c.streak, 0) >= {STREAK_MIN_DAYS})
               / nullif(count(*), 0) AS share
    FROM mau LEFT JOIN cur c USING (member)"""
    return sql, s.params()


def points(s: Scope) -> tuple[str, Params]:
    """Points issued (net, from SOURCES to members), spent (net, from members to SINKS) and
    imported (opening balances) within the period; outstanding: what members hold at the
    end of the last day (everything credited to members minus everything debited from
    them, all time), so that outstanding(last day) = outstanding(day before the period) +
    issued - spent + imported. Channel scope: entries of that channel."""
    sql = f"""
    SELECT
      coalesce(sum({ISSUED}) FILTER (WHERE dn BETWEEN $d0 AND $d1), 0) AS issued,
      coalesce(sum({SPENT}) FILTER (WHERE dn BETWEEN $d0 AND $d1), 0) AS spent,
      coalesce(sum({IMPORTED}) FILTER (WHERE dn BETWEEN $d0 AND $d1), 0) AS imported,
      coalesce(sum(amount) FILTER (WHERE starts_with(credit, 'member:') AND dn <= $d1), 0)
      - coalesce(sum(amount) FILTER (WHERE starts_with(debit, 'member:') AND dn <= $d1), 0)
          AS outstanding
    FROM (SELECT *, floor(ts / {DAY_S}) AS dn FROM ledger) WHERE {_where()}"""
    return sql, s.params()


def top_channels(s: Scope) -> tuple[str, Params]:
    """Channels of the period by engaged members (distinct members active in the channel)
    and by points issued there (as in `points`); the TOP_CHANNELS first by engaged members."""
    sql = f"""
    WITH {_activity(s)},
    eng AS (SELECT network, channel, count(DISTINCT user_id) AS engaged FROM activity
            WHERE day BETWEEN $d0 AND $d1 GROUP BY ALL),
    pts AS (SELECT network, channel, sum({ISSUED}) AS points FROM ledger
            WHERE channel <> '' AND floor(ts / {DAY_S}) BETWEEN $d0 AND $d1 AND {_where()}
            GROUP BY ALL HAVING sum({ISSUED}) <> 0)
    SELECT network, channel, coalesce(engaged, 0) AS engaged, coalesce(points, 0) AS points
    FROM eng FULL JOIN pts USING (network, channel)
    ORDER BY engaged DESC, points DESC, network, channel LIMIT {TOP_CHANNELS}"""
    return sql, s.params()


def watch_time(s: Scope) -> tuple[str, Params]:
    """Average watch time per viewer in the period, in seconds: the paid watch ticks (ledger
    entries of rule 'watch'), each counted as its channel's watch interval, summed and
    divided by the members paid at least one tick."""
    sql = f"""
    WITH iv AS (SELECT unnest($iv_net) AS network, unnest($iv_chan) AS channel,
                       unnest($iv_s) AS secs)
    SELECT count(*) AS ticks,
           count(DISTINCT l.credit) AS viewers,
           sum(coalesce(c.secs, n.secs, {DEFAULT_WATCH_S}))
               / nullif(count(DISTINCT l.credit), 0) AS avg_watch_s
    FROM ledger l
    LEFT JOIN iv c ON c.network = l.network AND c.channel = l.channel
    LEFT JOIN iv n ON n.network = l.network AND n.channel = ''
    WHERE l.rule = 'watch' AND starts_with(l.credit, 'member:')
      AND floor(l.ts / {DAY_S}) BETWEEN $d0 AND $d1 AND {_where("l")}"""
    iv = s.watch_intervals or (("", "", DEFAULT_WATCH_S),)
    return sql, {**s.params(), "iv_net": [x[0] for x in iv], "iv_chan": [x[1] for x in iv],
                 "iv_s": [x[2] for x in iv]}  # fmt: skip


def attendance(s: Scope) -> tuple[str, Params]:
    """Event attendance: per custom action, the distinct members who took it and the
    events, in the period."""
    sql = f"""
    SELECT action, count(DISTINCT network || chr(31) || user_id) AS members,
           count(DISTINCT network || chr(31) || id) AS events
    FROM events_raw WHERE kind = 'custom' AND user_id <> ''
      AND floor(ts / {DAY_S}) BETWEEN $d0 AND $d1 AND {_where()}
    GROUP BY action ORDER BY members DESC, action"""
    return sql, s.params()


def daily(s: Scope) -> tuple[str, Params]:
    """Per day of the period: active members, chatters, points issued and spent (as in
    active_members, chat_active and points)."""
    sql = f"""
    WITH {_activity(s)},
    act AS (SELECT day, count(DISTINCT member) AS active,
                   count(DISTINCT member) FILTER (WHERE kind = 'chat') AS chatters
            FROM activity WHERE day BETWEEN $d0 AND $d1 GROUP BY day),
    pts AS (SELECT CAST(floor(ts / {DAY_S}) AS BIGINT) AS day,
                   sum({ISSUED}) AS issued, sum({SPENT}) AS spent
            FROM ledger WHERE floor(ts / {DAY_S}) BETWEEN $d0 AND $d1 AND {_where()}
            GROUP BY 1)
    SELECT d.day, coalesce(active, 0) AS active, coalesce(chatters, 0) AS chatters,
           coalesce(issued, 0) AS issued, coalesce(spent, 0) AS spent
    FROM range($d0, $d1 + 1) d(day) LEFT JOIN act USING (day) LEFT JOIN pts USING (day)
    ORDER BY d.day"""
    return sql, s.params()


SINGLE = {"active": active_members, "chat": chat_active, "streaks": streaks,
          "points": points, "watch": watch_time}  # fmt: skip
TABLES = {"retention": retention, "tiers": tier_distribution, "tier_upgrades": tier_upgrades,
          "top_channels": top_channels, "attendance": attendance, "daily": daily}  # fmt: skip


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Params) -> list[dict[str, Any]]:
    cur = con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _activity_table(s: Scope) -> tuple[str, Params]:
    """Fill the temporary table MATERIALIZED with the activity of `s` (a connection's own)."""
    return f"CREATE OR REPLACE TEMP TABLE {MATERIALIZED} AS {ACTIVITY_SELECT}", s.params()


def report(con: duckdb.DuckDBPyConnection, s: Scope) -> dict[str, Any]:
    """Every KPI of `s` on `con` (a snapshot): one dict per single-row KPI, lists of rows
    for the tables."""
    sql, params = _activity_table(s)
    con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
    s = dataclasses.replace(s, materialized=True)
    scope = {"first_day": s.first_day, "last_day": s.last_day}
    out: dict[str, Any] = {"scope": {**scope, "network": s.network, "channel": s.channel}}
    for name, fn in SINGLE.items():
        out[name] = _rows(con, *fn(s))[0]
    for name, fn in TABLES.items():
        out[name] = _rows(con, *fn(s))
    return out


def data_days(con: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
    """The first and last day any event or ledger entry of the snapshot falls on."""
    got = con.execute(
        f"SELECT min(d), max(d) FROM (SELECT floor(ts / {DAY_S}) AS d FROM ledger"
        f" UNION ALL SELECT floor(ts / {DAY_S}) FROM events_raw)"
    ).fetchone()
    if got is None or got[0] is None:
        return None
    return int(got[0]), int(got[1])
