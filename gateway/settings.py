"""Settings: one pydantic object built once at start from one TOML file plus the environment.

Only `load_settings` reads the environment (RALLY_REDIS_URL, RALLY_RAY_ADDRESS, RALLY_CHAIN_RPC); everything else receives plain values from the `Settings` it builds.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from actors.config import PayoutConfig, RuntimeConfig
from engine.dedupe import default_window_s, min_window_s
from engine.payout import PayoutRules
from engine.rules import EarnRules, NetworkRules, RuleBook

ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "RALLY_REDIS_URL": ("redis", "url"),
    "RALLY_RAY_ADDRESS": ("ray", "address"),
    "RALLY_CHAIN_RPC": ("chain", "rpc"),
}
"""Environment variable -> (section, key) it overrides."""

_NAME = r"^[A-Za-z0-9_.:\-]+$"
_MSGSPEC_PATH = re.compile(r"\s*-\s*at `\$((?:\.[A-Za-z0-9_\-]+|\[\d+\])*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`")

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=_NAME)]


class SettingsError(Exception):
    """The settings file or environment is invalid; the message names each bad key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    workers: int = Field(default=1, ge=1, le=64)
    """Gateway processes sharing the port (SO_REUSEPORT); each handles ~10k requests/s."""


class RedisSettings(_Section):
    url: str = ""
    """Empty: the project starts its own redis-server under data_dir. Else a single server,
    or any node of a Redis Cluster (detected; actors/redisconn.py)."""


class RaySettings(_Section):
    address: str = ""
    """Empty: a local Ray cluster (ray.init())."""


class ShardSettings(_Section):
    channel: int = Field(default=2, ge=1, le=4_096)
    member: int = Field(default=2, ge=1, le=4_096)


class LimitSettings(_Section):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1_024)
    max_batch_events: int = Field(default=10_000, ge=1)
    max_ws_frame_bytes: int = Field(default=1024 * 1024, ge=1_024)
    max_ws_inflight_frames: int = Field(default=256, ge=1)
    """Frames of one WebSocket accepted but not yet acknowledged."""
    coalesce_window_ms: float = Field(default=2.0, ge=0, le=1_000)
    max_coalesce_events: int = Field(default=20_000, ge=1)
    max_queue_events: int = Field(default=200_000, ge=1)
    """Events waiting for the ingest writer; beyond this requests get 503 + Retry-After."""
    signature_skew_s: int = Field(default=300, ge=1)
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    read_count: int = Field(default=2_000, ge=1)
    read_block_ms: int = Field(default=50, ge=1)
    read_linger_ms: float = Field(default=0.0, ge=0, le=1_000)
    """A shard whose read drained its stream with a small batch waits this long for more."""
    max_entry_failures: int = Field(default=5, ge=1, le=1_000)
    """A stream entry that fails this many times goes to the dead-letter stream."""
    lateness_s: float = Field(default=2.0, ge=0, le=3_600)
    """Allowed lateness of events: applied in event-time order once the watermark passes them."""
    max_event_age_s: float = Field(default=3_600.0, gt=0)
    """Events older than this (server clock) are rejected with 400."""
    max_future_s: float = Field(default=60.0, ge=0)
    """Events dated more than this ahead of the server clock are rejected with 400."""
    dedupe_window_s: float = Field(default=0.0, ge=0)
    """How long after its event time an event id is remembered (engine/dedupe.py); at least
    max_event_age_s + max_future_s; 0 = that plus 60 s."""
    max_lag_events: int = Field(default=2_000_000, ge=0)
    """Events accepted but not yet applied by the channel shards beyond which the gateway
    sheds ingest (503 + Retry-After; a WebSocket "slow_down" frame); 0 = no bound."""
    max_lag_s: float = Field(default=30.0, ge=0)
    """Age of the oldest ingest or credits entry not yet applied beyond which the gateway
    sheds ingest the same way; 0 = no bound."""
    page_max: int = Field(default=500, ge=1)
    trim_interval_s: float = Field(default=1.0, ge=0)
    """How often streams are trimmed to what every consumer has committed; 0 = never."""
    member_cache_max: int = Field(default=2_000_000, ge=1)

    @field_validator("dedupe_window_s", mode="after")
    @classmethod
    def _window_covers_accepted(cls, value: float, info: ValidationInfo) -> float:
        age, future = info.data.get("max_event_age_s"), info.data.get("max_future_s")
        if value and age is not None and future is not None and value < min_window_s(age, future):
            raise PydanticCustomError(
                "dedupe_window",
                "must be 0 or at least max_event_age_s + max_future_s ({least}): duplicates "
                "of an accepted event must still be known",
                {"least": min_window_s(age, future)},
            )
        return value

    def dedupe_window(self) -> float:
        """The dedupe window in force."""
        if self.dedupe_window_s:
            return self.dedupe_window_s
        return default_window_s(self.max_event_age_s, self.max_future_s)


class ClockSettings(_Section):
    watch_interval_s: float = Field(default=1.0, ge=0)
    """How often the scheduler advances channel clocks; 0 = off."""
    streak_rollover: bool = True


class AnalyticsSettings(_Section):
    archive: str = ""
    """The DuckDB ledger archive (the ledger of record once ledgerlog is trimmed); a path
    relative to data_dir, or absolute; "" = analytics/ledger.duckdb."""
    chat_text: bool = False
    """Land chat messages' text in the archive's events (else only kind, channel, member, time)."""
    snapshots: str = ""
    """Where snapshots go; relative to data_dir, or absolute; "" = analytics/snapshots."""
    snapshot_interval_s: float = Field(default=3_600.0, ge=0)
    """How often the ledger sink takes a snapshot; 0 = only `rally analytics snapshot`."""
    snapshots_kept: int = Field(default=3, ge=1, le=1_000)
    """How many snapshots are kept (the oldest are deleted)."""


class SpendSettings(_Section):
    record_ttl_s: int = Field(default=7 * 86_400, ge=60)
    """How long a member shard remembers a spend's key and result (retries within it are safe)."""
    timeout_s: float = Field(default=30.0, gt=0, le=3_600)
    """How long the gateway waits for a spend's result (then 503; retrying is safe)."""


class StoreSettings(_Section):
    failed_ttl_s: int = Field(default=86_400, ge=60)
    """How long a refused redemption is remembered (a retry of its Idempotency-Key)."""
    sweep_interval_s: float = Field(default=5.0, ge=0)
    """How often each gateway process drives redemptions left half done; 0 = never."""
    stale_after_s: float = Field(default=60.0, gt=0)
    """A redemption still `reserving` after this long is driven by the sweeper."""


class AuthSettings(_Section):
    token_secret: str = ""
    """Signs member tokens (POST /v1/members/{id}/token, `rally token`); "" = no tokens."""
    token_ttl_s: int = Field(default=3_600, ge=1, le=30 * 86_400)
    """How long a member token is valid."""
    public_networks: list[Name] = []
    """Networks whose leaderboards and channel stats anyone may read, unsigned."""

    @field_validator("token_secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("must be empty (no member tokens) or at least 16 characters")
        return value


class FeedSettings(_Section):
    backlog_max: int = Field(default=1_000, ge=1, le=100_000)
    """Most notices replayed to a client that resumes (?after=ID); further behind, it is told.
    Also the newest notices stream entries kept once every consumer group has the rest
    (actors/trim.py)."""
    max_clients: int = Field(default=10_000, ge=1)
    """Most feed WebSockets one gateway process serves at once (then 503)."""
    client_queue_max: int = Field(default=1_000, ge=1)
    """Notices waiting for one slow client before it is disconnected (it resumes)."""
    block_ms: int = Field(default=1_000, ge=10, le=60_000)
    """How long one read of the notices stream waits for new entries."""


class PortalSettings(_Section):
    session_secret: str = ""
    """Signs portal and dashboard session cookies; "" = derived from the API key secrets."""
    session_ttl_s: int = Field(default=3_600, ge=60, le=7 * 86_400)
    """How long a portal or dashboard session lasts."""
    jwt_audience: str = Field(default="rallypoint-portal", min_length=1)
    """The `aud` a network's login JWT must carry."""
    jwt_max_ttl_s: int = Field(default=600, ge=10, le=86_400)
    """Longest lifetime (exp - iat) accepted for a login JWT."""
    secure_cookies: bool = False
    """Mark session cookies Secure (serve the gateway behind HTTPS)."""

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("must be empty (derived) or at least 16 characters")
        return value


class VoucherSettings(_Section):
    signing_key: str = ""
    """Ed25519 seed (base64url, 32 bytes; `rally vouchers keygen`) that signs voucher codes;
    "" = one generated once and kept in data_dir/vouchers/signing.key."""
    verify_keys: list[Annotated[str, Field(min_length=43, max_length=44)]] = []
    """Public keys (base64url) of earlier signing keys: the codes they signed still verify."""
    max_batch_codes: int = Field(default=10_000, ge=1, le=100_000)
    """Most codes minted in one batch."""
    attempts_kept: int = Field(default=10_000, ge=100)
    """Redemption attempts kept per network (GET /v1/vouchers/attempts), newest first."""
    resume_after_s: float = Field(default=30.0, gt=0)
    """A scan that claimed a code and never finished (its process died) may be finished by
    its member's next scan, or by a gateway's sweeper, after this long; until then that
    member's scans get voucher_pending."""
    sweep_interval_s: float = Field(default=10.0, ge=0)
    """How often each gateway process finishes claims pending longer than resume_after_s;
    0 = never (only the member's next scan does)."""

    @field_validator("signing_key")
    @classmethod
    def _seed(cls, value: str) -> str:
        if value and len(value) not in (43, 44):
            raise ValueError("must be empty (generated) or 32 bytes in base64url (43 characters)")
        return value


class PayoutSettings(_Section):
    enabled: bool = True
    """Run the payout actor (rally serve); false: payouts are refused (503)."""
    units_per_point_num: int = Field(default=1, ge=1)
    units_per_point_den: int = Field(default=1, ge=1)
    """Conversion: a payout of p points pays p * num // den units (cents, token base units)."""
    min_points: int = Field(default=100, ge=1)
    """Smallest payout, in points."""
    daily_limit_points: int = Field(default=100_000, ge=0)
    """Most points one member may request per UTC day; 0 = no limit."""
    max_attempts: int = Field(default=8, ge=1, le=100)
    """Deliveries tried before a payout is dead (listed with its reason for an admin)."""
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    """Retry n waits min(max, base * 2^(n-1)), half of it fixed and half random (jitter)."""
    lease_s: float = Field(default=60.0, gt=0)
    """A payout sent without an outcome for this long (its sender died) is sent again."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most payouts claimed and sent in one round."""
    parallelism: int = Field(default=32, ge=1, le=1_024)
    """Most deliveries in flight at once."""
    webhook_secret: str = ""
    """Signs cashback webhooks (whsec_ + base64, >= 16 bytes); "" = webhook payouts refused."""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A receiver's 2xx must arrive within this; otherwise the attempt failed."""
    max_request_payouts: int = Field(default=10_000, ge=1, le=100_000)
    """Most payouts in one POST /v1/payouts."""
    retention_s: float = Field(default=30 * 86_400, ge=0)
    """A final payout (settled, or voided and refunded) is kept this long, then dropped (its
    key may then be used again); 0 = kept forever."""

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value:
            from engine.webhook import WebhookError, secret_bytes

            try:
                secret_bytes(value)
            except WebhookError as err:
                raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _lease_outlives_timeout(self) -> PayoutSettings:
        if self.lease_s <= self.webhook_timeout_s:
            raise _path_error("lease_s", "must be longer than webhook_timeout_s")
        return self

    def rules(self) -> PayoutRules:
        return PayoutRules(
            units_per_point_num=self.units_per_point_num,
            units_per_point_den=self.units_per_point_den,
            min_points=self.min_points,
            daily_limit_points=self.daily_limit_points,
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            lease_s=self.lease_s,
            batch_size=self.batch_size,
        )

    def runtime(self) -> PayoutConfig:
        return PayoutConfig(
            enabled=self.enabled,
            rules=msgspec.to_builtins(self.rules()),
            parallelism=self.parallelism,
            webhook_secret=self.webhook_secret,
            webhook_timeout_s=self.webhook_timeout_s,
            retention_s=self.retention_s,
        )


class EventSettings(_Section):
    """Event webhooks (engine/event_hooks.py), sent by the payout actor on the [payouts]
    schedule and signed with [payouts] webhook_secret unless a subscription has its own."""

    subscriptions: list[dict[str, Any]] = Field(default=[], max_length=1_000)
    """engine.event_hooks.Subscription fields: id, network, url, events ([] = all), secret."""
    retention_s: float = Field(default=86_400.0, gt=0, le=90 * 86_400)
    """A delivered event webhook is kept this long (read back by id), then dropped."""
    max_subscriptions: int = Field(default=100, ge=1, le=10_000)
    """Most subscriptions admins may add over HTTP (configured ones not counted)."""

    @field_validator("subscriptions")
    @classmethod
    def _check_subscriptions(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from engine.event_hooks import HookError, Subscription, validate
        from engine.webhook import WebhookError, secret_bytes

        seen: set[str] = set()
        for i, item in enumerate(value):
            try:
                sub = validate(msgspec.convert(item, Subscription))
                if sub.secret:
                    secret_bytes(sub.secret)
            except msgspec.ValidationError as err:
                sub_path, problem = _msgspec_problem(err)
                raise _path_error(f"{i}.{sub_path}".rstrip("."), problem) from err
            except HookError as err:
                raise _path_error(f"{i}.{err.field}", str(err)) from err
            except WebhookError as err:
                raise _path_error(f"{i}.secret", str(err)) from err
            if sub.id in seen:
                raise _path_error(f"{i}.id", f"duplicate subscription id {sub.id!r}")
            seen.add(sub.id)
        return value


class ChainSettings(_Section):
    rpc: str = ""
    """A JSON-RPC node (RALLY_CHAIN_RPC); "" = the embedded EVM in the payout actor."""
    private_key: str = ""
    """The minter's key (0x + 64 hex) on `rpc`; the embedded EVM uses its own funded account."""
    token_address: str = ""
    """The deployed RallyToken; "" = deployed at start (remembered in Redis per chain)."""
    confirmations: int = Field(default=1, ge=1, le=64)
    """Blocks a mint waits for before its payouts settle."""
    batch_size: int = Field(default=200, ge=1, le=500)
    """Most payouts one mintBatch carries (500 new holders use ~26M gas, near a 30M block)."""

    @model_validator(mode="after")
    def _key_for_rpc(self) -> ChainSettings:
        if self.rpc and not re.fullmatch(r"0x[0-9a-fA-F]{64}", self.private_key):
            raise _path_error("private_key", "a JSON-RPC node needs the minter's key (0x + 64 hex)")
        if self.token_address and not re.fullmatch(r"0x[0-9a-fA-F]{40}", self.token_address):
            raise _path_error("token_address", "must be 0x + 40 hex")
        return self


class WalletSettings(_Section):
    domain: str = Field(default="localhost", min_length=1, max_length=253)
    """The domain a Sign-In with Ethereum message must name (the member portal's host)."""
    uri: str = Field(default="http://localhost", min_length=1)
    """The URI the message names."""
    chain_id: int = Field(default=31_337, ge=1)
    """The chain id members sign for (the chain payouts mint on)."""
    nonce_ttl_s: int = Field(default=300, ge=10, le=86_400)
    """A nonce (and the message signed with it) expires after this long; each is used once."""


class BotWebSocket(_Section):
    """A network that pushes chat as JSON frames over a WebSocket (`[[bot.websockets]]`):
    its frames become events by `mapping` (engine.wsmap.FrameMapping fields). Ingest only:
    such networks take no replies over the same socket."""

    url: Annotated[str, Field(pattern=r"^wss?://[^\s]+$", max_length=2_048)]
    channels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default=[], max_length=10_000
    )
    """Pusher channels subscribed to once connected (with `pusher`)."""
    pusher: bool = False
    subscribe_frames: list[Annotated[str, Field(max_length=65_536)]] = Field(
        default=[], max_length=1_000
    )
    """Raw JSON texts sent once connected (networks without the Pusher protocol)."""
    max_frame_bytes: int = Field(default=1 << 20, ge=1_024, le=64 << 20)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3_600)
    mapping: dict[str, Any] = {}

    @field_validator("mapping")
    @classmethod
    def _check_mapping(cls, value: dict[str, Any]) -> dict[str, Any]:
        from engine.wsmap import FrameMapping

        try:
            msgspec.convert(value, FrameMapping)
        except msgspec.ValidationError as err:
            sub, problem = _msgspec_problem(err)
            raise _path_error(sub, problem) from err
        return value


class BotSettings(_Section):
    """The chat bot (`rally bot`; also run by `rally serve` when `enabled`)."""

    enabled: bool = False
    network: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=6667, ge=1, le=65_535)
    nick: str = Field(default="rallybot", min_length=1, max_length=30)
    password: str = ""
    channels: list[Annotated[str, Field(pattern=r"^#?[A-Za-z0-9_]{1,64}$")]] = Field(
        default=[], max_length=10_000
    )
    caps: list[str] = ["twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership"]
    trust_client_tags: bool = False
    moderator: bool = False
    rate_limit: int = Field(default=20, ge=1, le=10_000)
    rate_limit_moderator: int = Field(default=100, ge=1, le=10_000)
    rate_window_s: float = Field(default=30.0, gt=0, le=3_600)
    max_outbound_queue: int = Field(default=1_000, ge=1, le=1_000_000)
    max_pending_events: int = Field(default=10_000, ge=1, le=10_000_000)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3_600)
    idle_ping_s: float = Field(default=60.0, gt=0, le=3_600)
    names_interval_s: float = Field(default=600.0, ge=0, le=86_400)
    prefix: str = Field(default="!", min_length=1, max_length=4)
    give_max_points: int = Field(default=10_000, ge=0, le=1_000_000_000)
    give_daily_max_points: int = Field(default=50_000, ge=1, le=1_000_000_000)
    give_cooldown_s: float = Field(default=10.0, ge=0, le=86_400)
    moderator_max_points: int = Field(default=1_000_000, ge=1, le=1_000_000_000)
    bonusall_max_viewers: int = Field(default=10_000, ge=1, le=1_000_000)
    commands: list[dict[str, Any]] = Field(default=[], max_length=10_000)
    """Command specs (engine.commands.CommandSpec fields) plus `channel` ("*" = every one)."""
    websockets: list[BotWebSocket] = Field(default=[], max_length=100)
    """WebSocket chat connectors run next to the IRC one (`[[bot.websockets]]`)."""

    @field_validator("commands")
    @classmethod
    def _check_commands(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from engine.commands import CommandConfigError, specs_from_config

        for i, item in enumerate(value):
            spec = {k: v for k, v in item.items() if k != "channel"}
            try:
                specs_from_config([spec])
            except msgspec.ValidationError as err:
                sub, problem = _msgspec_problem(err)
                raise _path_error(f"{i}.{sub.removeprefix('[0].')}".rstrip("."), problem) from err
            except CommandConfigError as err:
                raise _path_error(f"{i}.{err.field}", str(err)) from err
        return value


class ApiKey(_Section):
    key: Name
    secrets: list[Annotated[str, Field(min_length=16, max_length=256)]] = Field(min_length=1)
    """Current secret first, then previous ones (still accepted while clients rotate)."""
    networks: list[Annotated[str, Field(pattern=r"^(\*|[A-Za-z0-9_.:\-]+)$")]] = Field(min_length=1)
    """Networks this key may write and read; ["*"] = all."""

    def may_write(self, network: str) -> bool:
        return "*" in self.networks or network in self.networks


def _path_error(path: str, problem: str) -> PydanticCustomError:
    return PydanticCustomError("rules", "{problem}", {"path": path, "problem": problem})


def _msgspec_problem(err: msgspec.ValidationError) -> tuple[str, str]:
    """('earn.chat_points', 'Expected int, got str') from a msgspec error."""
    text = str(err)
    path = ""
    m = _MSGSPEC_PATH.search(text)
    if m is not None:
        path = m.group(1).lstrip(".")
        text = text[: m.start()]
    unknown = _UNKNOWN.match(text)
    if unknown is not None:
        path = f"{path}.{unknown.group(1)}".lstrip(".")
        text = "Extra inputs are not permitted"
    return path, text.replace("`", "")


def convert_network(raw: object) -> NetworkRules:
    """Validate one [networks.NAME] table, channel overrides included."""
    if isinstance(raw, NetworkRules):
        return raw
    try:
        rules = msgspec.convert(raw, NetworkRules)
    except msgspec.ValidationError as err:
        raise _path_error(*_msgspec_problem(err)) from err
    base = msgspec.to_builtins(rules.earn)
    channels: dict[str, dict[str, Any]] = {}
    for channel, override in rules.channels.items():
        if not re.match(_NAME, channel):
            raise _path_error(f"channels.{channel}", "not a valid channel id")
        try:
            merged = msgspec.convert({**base, **override}, EarnRules)
        except msgspec.ValidationError as err:
            sub, problem = _msgspec_problem(err)
            raise _path_error(f"channels.{channel}.{sub}".rstrip("."), problem) from err
        channels[channel] = {k: getattr(merged, k) for k in override}
    return msgspec.structs.replace(rules, channels=channels)


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    redis: RedisSettings = RedisSettings()
    ray: RaySettings = RaySettings()
    data_dir: Path = Path(".rally")
    namespace: Name = "rally"
    shards: ShardSettings = ShardSettings()
    limits: LimitSettings = LimitSettings()
    clock: ClockSettings = ClockSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    auth: AuthSettings = AuthSettings()
    spend: SpendSettings = SpendSettings()
    store: StoreSettings = StoreSettings()
    vouchers: VoucherSettings = VoucherSettings()
    payouts: PayoutSettings = PayoutSettings()
    events: EventSettings = EventSettings()
    chain: ChainSettings = ChainSettings()
    wallets: WalletSettings = WalletSettings()
    feed: FeedSettings = FeedSettings()
    portal: PortalSettings = PortalSettings()
    bot: BotSettings = BotSettings()
    networks: dict[Name, Any] = {}
    """Network name -> engine.rules.NetworkRules (validated with msgspec)."""
    api_keys: list[ApiKey] = []

    @field_validator("networks", mode="after")
    @classmethod
    def _check_networks(cls, value: dict[str, Any]) -> dict[str, NetworkRules]:
        out: dict[str, NetworkRules] = {}
        for name, raw in value.items():
            try:
                out[name] = convert_network(raw)
            except PydanticCustomError as err:
                ctx = err.context or {}
                path = f"{name}.{ctx.get('path', '')}".rstrip(".")
                raise _path_error(path, str(ctx.get("problem", err))) from None
        return out

    @field_validator("api_keys", mode="after")
    @classmethod
    def _unique_keys(cls, value: list[ApiKey]) -> list[ApiKey]:
        seen: set[str] = set()
        for i, key in enumerate(value):
            if key.key in seen:
                raise _path_error(f"{i}.key", f"duplicate api key {key.key!r}")
            seen.add(key.key)
        return value

    @model_validator(mode="after")
    def _public_networks_exist(self) -> Settings:
        for i, name in enumerate(self.auth.public_networks):
            if name not in self.networks:
                raise _path_error(f"auth.public_networks.{i}", f"no network {name!r} is configured")
        for i, sub in enumerate(self.events.subscriptions):
            if sub["network"] not in self.networks:
                raise _path_error(f"events.subscriptions.{i}.network",
                                  f"no network {sub['network']!r} is configured")  # fmt: skip
        return self

    def key_for(self, api_key: str) -> ApiKey | None:
        return next((k for k in self.api_keys if k.key == api_key), None)

    def rulebook(self) -> RuleBook:
        return RuleBook(dict(self.networks))

    def default_network(self) -> str | None:
        """The only configured network, if exactly one is configured."""
        return next(iter(self.networks)) if len(self.networks) == 1 else None

    def archive_path(self) -> Path:
        """The DuckDB ledger archive file."""
        return Path(self.data_dir) / (self.analytics.archive or "analytics/ledger.duckdb")

    def snapshot_dir(self) -> Path:
        """Where analytics snapshots go."""
        return Path(self.data_dir) / (self.analytics.snapshots or "analytics/snapshots")

    def runtime(self, redis_url: str) -> RuntimeConfig:
        """The plain values the actors run with."""
        lim = self.limits
        return RuntimeConfig(
            redis_url=redis_url,
            namespace=self.namespace,
            channel_shards=self.shards.channel,
            member_shards=self.shards.member,
            read_count=lim.read_count,
            block_ms=lim.read_block_ms,
            linger_ms=lim.read_linger_ms,
            max_entry_failures=lim.max_entry_failures,
            dedupe_window_s=lim.dedupe_window(),
            lateness_s=lim.lateness_s,
            max_event_age_s=lim.max_event_age_s,
            max_future_s=lim.max_future_s,
            watch_clock_interval_s=self.clock.watch_interval_s,
            streak_rollover=self.clock.streak_rollover,
            member_cache_max=lim.member_cache_max,
            archive_path=str(self.archive_path().resolve()),
            archive_chat_text=self.analytics.chat_text,
            snapshot_dir=str(self.snapshot_dir().resolve()),
            snapshot_interval_s=self.analytics.snapshot_interval_s,
            snapshots_kept=self.analytics.snapshots_kept,
            trim_interval_s=lim.trim_interval_s,
            notices_kept=self.feed.backlog_max,
            spend_record_ttl_s=self.spend.record_ttl_s,
            rules=self.rulebook().to_builtins(),
            payouts=msgspec.structs.replace(
                self.payouts.runtime(),
                chain_rpc=self.chain.rpc,
                chain_private_key=self.chain.private_key,
                token_address=self.chain.token_address,
                confirmations=self.chain.confirmations,
                chain_batch=self.chain.batch_size,
                event_subscriptions=list(self.events.subscriptions),
                event_retention_s=self.events.retention_s,
            ),
        )


def _format(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = [str(part) for part in e["loc"]]
        ctx = e.get("ctx") or {}
        if e["type"] == "rules":
            loc += [p for p in str(ctx.get("path", "")).split(".") if p]
            msg = str(ctx.get("problem", e["msg"]))
        else:
            msg = e["msg"]
        problems.append(f"{'.'.join(loc) or '<root>'}: {msg}")
    return problems


def settings_from_dict(raw: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    data: dict[str, Any] = dict(raw)
    for var, (section, key) in ENV_OVERRIDES.items():
        if var in env:
            table = data.get(section)
            data[section] = {**(table if isinstance(table, dict) else {}), key: env[var]}
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise SettingsError(_format(err)) from None


def load_settings(path: Path | None, env: Mapping[str, str]) -> Settings:
    """Settings from the TOML file at `path` (None: defaults) and the environment overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise SettingsError([f"{path}: cannot read: {err.strerror or err}"]) from err
        except tomllib.TOMLDecodeError as err:
            raise SettingsError([f"{path}: not valid TOML: {err}"]) from err
    return settings_from_dict(raw, env)


DEMO_SECRET = "rk_demo_7c1f3a9e5b2d48c6a0e9f4b17d3c5e82"


def demo_settings_toml(
    data_dir: str = ".rally",
    *,
    key_networks: tuple[str, ...] = ("demo",),
) -> str:
    """A complete settings file for `rally demo`: network "demo", api key "demo-key" (for
    `key_networks`: `rally bench` adds a network of its own)."""
    return f"""\
# Written by `rally demo`. Edit and restart to change the demo's rules.
data_dir = {json.dumps(data_dir)}
namespace = "rally"

[server]
host = "127.0.0.1"
port = 8080

[redis]
url = ""   # empty: the demo starts its own redis-server under data_dir

[shards]
channel = 2
member = 2

[clock]
watch_interval_s = 1.0

[networks.demo.earn]
watch_interval_s = 60
watch_points_live = 10
chat_points = 1
chat_cooldown_s = 30
follow_points = 50

[networks.demo.tiers]
names = ["Bronze", "Silver", "Gold", "Diamond"]
thresholds = [0, 500, 2000, 10000]
multipliers_pct = [100, 125, 150, 200]

[networks.demo.streak]
points_per_day = 5
cap_days = 30
divisor = 10

[networks.demo.channels.lobby]   # a busy channel pays a little more per chat message
chat_points = 2

[[api_keys]]
key = "demo-key"
secrets = ["{DEMO_SECRET}"]
networks = {json.dumps(list(key_networks))}
"""
