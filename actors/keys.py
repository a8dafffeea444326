"""The Redis key layout, in one place. Every key starts with the deployment namespace,
`ns:` (Keys.prefix). On a Redis Cluster the namespace is a hash tag, `{ns}:`: all of a
deployment's keys then share one hash slot, so every script, transaction and multi-stream
read works unchanged (Keys.of, actors/redisconn.py). Below, `{p}`, `{m}` and the like are
placeholders, not hash tags.

ingest:{p}            stream; one entry per accepted (part of a) batch: field `e` = msgpack list[Event],
                      or field `clock` = now (a watch-clock tick from the scheduler). p = partition of channel.
credits:{m}           stream; one entry per channel-shard commit: field `c` = msgpack list[Credit];
                      or one spend command: field `s` = msgpack engine.spend.Transfer, `r` = reply stream.
offsets               hash; stream name -> last applied entry id (committed with the state it produced).
seenh:{p}:{b}:{k}     string; packed little-endian uint64 hashes of the event ids (network:id) that channel
                      partition p applied with ts in minute b (ts // 60), chunk k (engine/dedupe.py).
seenidx:{p}           hash; minute b -> how many hashes partition p stores for it (dedupe buckets held).
idem:{n}:{api}:{key}  string; the first response to a batch posted by api key `api` (n = its length)
                      with that Idempotency-Key: each api key has its own Idempotency-Keys.
wsnonce:{n}:{api}:{nonce}  string; a WebSocket handshake nonce already used (TTL: the skew window).
cstate                hash; network:channel -> msgpack ChannelState.
presence:{nc}         hash; user_id -> display name, viewers present in channel nc (network:channel).
chatlog:{nc}          string; user_id -> ts of last chat in channel nc, as appended frames (engine/timelog.py).
logins:{n}            hash; login -> platform user id of network n's chatters, learnt by the bot
                      from tagged chat lines (resolves JOIN/PART and `!give <user>`).
seenlog:{nc}          string; user_id -> ts of the last sign of life (join, chat, snapshot) of a
                      viewer present in channel nc (the presence timeout, engine/channel.py), as
                      appended frames (engine/timelog.py).
chatters:{nc}, pseen:{nc}  zsets; the two maps above as a channel stored them until 2026-12 (read
                      when its log is missing; its shard replaces them at the channel's next change).
mstate                hash; network:user -> msgpack MemberState.
reflinked:{m}         set; network:user of the members of member shard m linked by a referral and waiting for
                      their first earn (referral status "linked"): what its stage A must load (engine/referral.py).
ledgerlog:{m}         stream; one entry per member-shard commit: field `l` = msgpack list[Entry] (the ledger of record).
treasury              hash; network -> balance of the network treasury (negative of points issued).
lb:{nc}:all           zset; user_id -> points earned in channel nc, all time.
                      (The boards of a day, week or month are read from the ledger archive.)
mch:{nu}              zset; network:channel -> points member nu earned there, as the ledger projector
                      kept them until 2026-12 (no longer written: MemberState.earned_in keeps them;
                      the member read adds the two).
notices               stream (capped, and trimmed behind its consumers: actors/trim.py); tier
                      changes and other member notices.
noticemarks           list; "{entries added} {entry id}" of the notices stream as the trimmer saw
                      it, newest first: where the newest [feed] backlog_max entries begin.
sched:jobs            hash; job id -> msgpack Job.   sched:due zset; job id -> due time.
sched:lease:{id}      string; owner of a running job, with a TTL (the lease).
stats                 hash; counters: events_in (gateway), events_applied, events_dup, events_expired,
                      events_late (channel shards), credits_applied, entries (member shards), batches_in.
latency               hash; ingest->credit latency histogram: field = bucket upper bound in ms
                      (see LATENCY_BUCKETS_MS) or "inf" -> count; "sum_ms", "count", "max_ms".
epoch:{kind}:{i}      string; fencing epoch of shard i: a commit from an older instance is refused.
chanidx:{p}           set; network:channel of every channel hosted by channel partition p.
wmark                 hash; "channel:{p}" / "member:{m}" -> msgpack event-time progress of that shard
                      (watermark, newest time seen; a member shard: every partition's watermark).
spendrec:{n}:{nu}:{key}  string; the record (engine.spend.Record: payload digest + result) of the
                      transfer `key` of member nu (n = len(nu)), written by its member shard in the
                      commit that applied it; TTL [limits] spend_record_ttl_s.
spendreply:{id}       stream; results of transfers submitted by one SpendClient (field rs = msgpack
                      list of (record key, Result)), written in the member shard's commit; expires when unused.
accounts              hash; account ("store:{net}", "raffle:{net}:{id}", ...) -> balance, for every
                      account other than members and treasuries, kept in the member shards' commits.
store:...             the reward store's keys (gateway/store.py StoreKeys): per network the items
                      (hash id -> JSON), stock, last redemption time, the reservations held, each
                      redemption (string JSON) and its indexes (all, per member, still reserving).
vbatch:{net}          hash; voucher batch id -> msgpack engine.voucher.Batch, written once when minted.
vclaim:{net}:{batch}  hash; serial -> JSON claim {"u": user_id, "t": claimed at, "s": "pending"|"done",
                      "e": ledger entry id} of each code scanned with success (actors/vouchers.py);
                      expires 30 days after the batch does.
vredeemed:{net}       hash; voucher batch id -> codes redeemed.
vpending              zset; JSON [network, batch, serial] -> claim time, of every voucher claim not
                      yet finished (the gateways' sweepers finish the stale ones).
vattempts:{net}       stream (capped, [vouchers] attempts_kept); every voucher scan: field `o` = outcome,
                      `a` = msgpack engine.voucher.Attempt.
pending:{kind}:{i}    stream; what shard i holds back until its watermark passes it (events of a
                      channel shard, credits of a member shard), appended per commit with the id of
                      the input entry it came from; the shard trims what it has released.
portaljti:{iss}:{jti} string; a member portal login JWT (issuer api key, token id) already used;
                      expires with the token (gateway/routes/web.py).
wallets:{net}, walletidx:{net}, walletidxok:{net}  members' linked wallets and the index from a
                      wallet to its member (actors/wallets.py).
siwenonce:{nonce}     string; "net:user" a wallet-link nonce was issued to (TTL [wallets] nonce_ttl_s).
siweused:{nonce}      string; a wallet sign-in nonce already used (TTL: until the nonce expires;
                      gateway/routes/wallets.py).
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_BUCKETS_MS: tuple[int, ...] = (
    1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 400, 600, 1000, 2000, 5000, 10000, 30000,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str = "rally"
    tagged: bool = False
    """The namespace is a Redis Cluster hash tag (`{ns}:`), as on a cluster it must be."""

    @classmethod
    def of(cls, ns: str, redis_url: str) -> Keys:
        """The keys of namespace `ns` on the server at `redis_url`: tagged on a cluster."""
        from actors.redisconn import is_cluster

        return cls(ns, tagged=is_cluster(redis_url))

    @property
    def prefix(self) -> str:
        """What every key of the deployment starts with."""
        return f"{{{self.ns}}}:" if self.tagged else f"{self.ns}:"

    def k(self, *parts: object) -> str:
        return self.prefix + ":".join(map(str, parts))

    def ingest(self, p: int) -> str:
        return self.k("ingest", p)

    def credits(self, m: int) -> str:
        return self.k("credits", m)

    @property
    def offsets(self) -> str:
        return self.k("offsets")

    def seen(self, p: int, bucket: int, chunk: int) -> str:
        return self.k("seenh", p, bucket, chunk)

    def seen_index(self, p: int) -> str:
        return self.k("seenidx", p)

    def idem(self, api_key: str, key: str) -> str:
        return self.k("idem", len(api_key), api_key, key)  # the length: api keys may hold ':'

    def ws_nonce(self, api_key: str, nonce: str) -> str:
        return self.k("wsnonce", len(api_key), api_key, nonce)

    @property
    def cstate(self) -> str:
        return self.k("cstate")

    def presence(self, nc: str) -> str:
        return self.k("presence", nc)

    def chat_log(self, nc: str) -> str:
        return self.k("chatlog", nc)

    def seen_log(self, nc: str) -> str:
        return self.k("seenlog", nc)

    def chatters(self, nc: str) -> str:
        """Legacy (a zset): see chat_log."""
        return self.k("chatters", nc)

    def logins(self, network: str) -> str:
        return self.k("logins", network)

    def present_seen(self, nc: str) -> str:
        """Legacy (a zset): see seen_log."""
        return self.k("pseen", nc)

    @property
    def mstate(self) -> str:
        return self.k("mstate")

    def ref_linked(self, m: int) -> str:
        return self.k("reflinked", m)

    def ledgerlog(self, m: int) -> str:
        return self.k("ledgerlog", m)

    @property
    def treasury(self) -> str:
        return self.k("treasury")

    def lb_all(self, nc: str) -> str:
        return self.k("lb", nc, "all")

    def member_channels(self, nu: str) -> str:
        return self.k("mch", nu)

    def spend_record(self, nu: str, key: str) -> str:
        return self.k("spendrec", len(nu), nu, key)  # the length: user ids may hold ':'

    def spend_reply(self, client_id: str) -> str:
        return self.k("spendreply", client_id)

    @property
    def accounts(self) -> str:
        return self.k("accounts")

    def voucher_batches(self, network: str) -> str:
        return self.k("vbatch", network)

    def voucher_claims(self, network: str, batch: str) -> str:
        return self.k("vclaim", network, batch)  # batch ids hold no ':'

    def voucher_redeemed(self, network: str) -> str:
        return self.k("vredeemed", network)

    def voucher_attempts(self, network: str) -> str:
        return self.k("vattempts", network)

    @property
    def voucher_pending(self) -> str:
        return self.k("vpending")

    @property
    def notices(self) -> str:
        return self.k("notices")

    @property
    def notice_marks(self) -> str:
        return self.k("noticemarks")

    def chanidx(self, p: int) -> str:
        return self.k("chanidx", p)

    @property
    def wmark(self) -> str:
        return self.k("wmark")

    def pending(self, kind: str, i: int) -> str:
        return self.k("pending", kind, i)

    @property
    def sched_jobs(self) -> str:
        return self.k("sched", "jobs")

    @property
    def sched_due(self) -> str:
        return self.k("sched", "due")

    def sched_lease(self, job_id: str) -> str:
        return self.k("sched", "lease", job_id)

    @property
    def stats(self) -> str:
        return self.k("stats")

    @property
    def latency(self) -> str:
        return self.k("latency")
