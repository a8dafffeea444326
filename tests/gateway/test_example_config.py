"""rally.example.toml is honest: every key it lists is read by the code that runs, and the
values it shows are the defaults.

For each key of the example, the test changes its value, builds what the running system is
built from (the actors' RuntimeConfig, the gateway app's objects, the Runtime that starts
Redis and Ray, the GatewayPool that `rally serve` listens with), and requires that what was
built changes. A key nothing reads leaves all of it the same and fails the test. Holding the
whole Settings proves nothing, so a Settings object met on the way is left out."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from pydantic import BaseModel

from engine.referral import ReferralRules
from engine.rules import EarnRules, StreakRules, TierRules
from gateway.app import ADMISSION, GATEWAY, create_app
from gateway.bot_runner import bot_parts
from gateway.metrics import METRICS
from gateway.reads import ACCESS, READER
from gateway.routes.feed import FEED
from gateway.routes.payouts import PAYOUTS
from gateway.routes.vouchers import VOUCHERS
from gateway.routes.wallets import WALLETS
from gateway.routes_store import STORE
from gateway.runtime import GatewayPool, Runtime
from gateway.sessions import SESSIONS
from gateway.settings import ApiKey, Settings, settings_from_dict
from gateway.spends import SPENDS

EXAMPLE = Path(__file__).resolve().parents[2] / "rally.example.toml"
REDIS_URL = "redis://127.0.0.1:1/0"
OURS = ("gateway.", "actors.", "engine.", "analytics.")

SPECIAL: dict[str, Any] = {
    "data_dir": ".rally-elsewhere",
    "namespace": "rally2",
    "server.host": "0.0.0.0",
    "redis.url": "redis://elsewhere:6380/0",
    "ray.address": "auto",
    "analytics.archive": "other/ledger.duckdb",
    "analytics.snapshots": "other/snapshots",
    "auth.token_secret": "another-token-secret-0123456789",
    "auth.public_networks": ["acme"],
    "api_keys.1.networks": ["acme"],
    "limits.dedupe_window_s": 7_200.0,
    "portal.session_secret": "another-session-secret-0123456789",
    "vouchers.signing_key": "VOhJ6kRQa2tDKXnkiVE8lm7wiI-IFEVKuMDmvhpHQ9U",
    "bot.network": "elsewhere",
    "bot.password": "oauth:x",
    "bot.channels": ["lobby"],
    "bot.commands": [{"channel": "*", "name": "hi", "response": "hello {user}"}],
    "bot.websockets": [{"url": "ws://127.0.0.1:1/app/k", "pusher": True, "channels": ["c"]}],
    "vouchers.verify_keys": ["F5kkgwAME3MTqnd5rPv5AE9bw1qR78peXu6xC2_tiRc"],
    "payouts.webhook_secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM=",
    "chain.private_key": "0x" + "11" * 32,
    "chain.rpc": "http://127.0.0.1:8545",
    "chain.token_address": "0x" + "22" * 20,
    "networks.acme.channels.bigstreamer.min_tier": "Gold",
    "networks.acme.channels.bigstreamer.custom_min_tier": "Gold",
    "networks.acme.gating.source": "chain",
    "events.subscriptions": [{"id": "crm", "network": "acme", "url": "http://127.0.0.1:1/h"}],
}
"""New values for keys whose type alone does not give a valid different value."""

CONTEXT: dict[str, dict[tuple[str | int, ...], Any]] = {
    "chain.rpc": {("chain", "private_key"): "0x" + "11" * 32},
    "auth.token_ttl_s": {("auth", "token_secret"): SPECIAL["auth.token_secret"]},
}
"""Keys that only act alongside another: both sides of the comparison set these first
(a token lifetime does something once tokens are on)."""


def _raw() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every key of the TOML: into tables and arrays of tables; a scalar or array is a leaf."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, table in enumerate(node):
            yield from leaves(table, (*path, i))
    else:
        yield path


def _name(path: tuple[str | int, ...]) -> str:
    return ".".join(map(str, path))


def changed(path: tuple[str | int, ...], value: Any) -> Any:
    """A valid value for the key at `path` different from `value`."""
    name = _name(path)
    if name in SPECIAL:
        return SPECIAL[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if value else 1.0
    if isinstance(value, str) and value:
        return value + "2"
    if isinstance(value, list) and value and isinstance(value[-1], int):
        return [*value[:-1], value[-1] + 1]
    if isinstance(value, list) and value and isinstance(value[-1], str):
        return [*value[:-1], value[-1] + "2"]
    raise AssertionError(f"{name}: no way to change {value!r}; add it to SPECIAL")


def _set(raw: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def plain(obj: Any, seen: set[int] | None = None) -> Any:
    """The plain values inside `obj` (our objects' attributes, recursively)."""
    seen = set() if seen is None else seen
    if obj is None or isinstance(obj, str | int | float | bool | bytes):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if id(obj) in seen:
        return "<seen>"
    seen.add(id(obj))
    if isinstance(obj, ApiKey):
        return obj.model_dump()
    if isinstance(obj, BaseModel):
        return f"<{type(obj).__name__} not counted>"
    if isinstance(obj, dict):
        return {str(k): plain(v, seen) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(x, seen) for x in obj]
    if isinstance(obj, set | frozenset):
        return sorted(map(str, obj))
    if isinstance(obj, msgspec.Struct):
        return plain(msgspec.structs.asdict(obj), seen)
    if not type(obj).__module__.startswith(OURS):
        return f"<{type(obj).__name__}>"
    attrs: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                attrs[slot] = getattr(obj, slot)
    return {k: plain(v, seen) for k, v in attrs.items() if not callable(v) or k.startswith("_")}


def built(settings: Settings) -> dict[str, Any]:
    """What the running system is made of, as plain values."""
    app: web.Application = create_app(settings, REDIS_URL)
    return {
        "actors": plain(settings.runtime(REDIS_URL)),
        "gateway": plain(app[GATEWAY]),
        "reader": plain(app[READER]),
        "access": plain(app[ACCESS]),
        "admission": plain(app[ADMISSION]),
        "metrics": plain(app[METRICS]),
        "spends": plain(app[SPENDS]),
        "store": plain(app[STORE]),
        "vouchers": plain(app[VOUCHERS]),
        "payouts": plain(app[PAYOUTS]),
        "wallets": plain(app[WALLETS]),
        "feed": plain(app[FEED]),
        "sessions": plain(app[SESSIONS]),
        "max_body": app._client_max_size,
        "runtime": plain(Runtime(settings)),
        "listen": plain(GatewayPool.from_settings(settings, REDIS_URL)),
        "bot": [plain(bot_parts(settings)), settings.bot.enabled],
    }


BASE = _raw()
KEYS = list(leaves(BASE))


def test_the_example_has_the_keys_this_test_walks() -> None:
    names = {_name(p) for p in KEYS}
    assert {"server.workers", "auth.token_secret", "limits.signature_skew_s"} <= names
    assert not set(SPECIAL) - names, "SPECIAL names keys the example no longer has"


@pytest.mark.parametrize("path", KEYS, ids=_name)
def test_every_key_changes_what_is_built(path: tuple[str | int, ...]) -> None:
    base = BASE
    for other, value in CONTEXT.get(_name(path), {}).items():
        base = _set(base, other, value)
    before = built(settings_from_dict(base, {}))
    node: Any = base
    for part in path:
        node = node[part]
    after = built(settings_from_dict(_set(base, path, changed(path, node)), {}))
    assert after != before, f"{_name(path)} changes nothing that runs"


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {
        name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items()
    }


def test_the_example_shows_every_setting_with_its_default() -> None:
    example = settings_from_dict(BASE, {})
    for section, field in Settings.model_fields.items():
        if section in ("networks", "api_keys"):
            continue
        default = field.get_default(call_default_factory=True)
        shown = getattr(example, section)
        assert section in BASE, f"[{section}] is missing from the example"
        if isinstance(default, BaseModel):
            assert set(BASE[section]) == set(type(default).model_fields), section
            assert shown == default, f"[{section}] shows values other than the defaults"
        else:
            assert str(shown) == str(default), section


@pytest.mark.parametrize(
    ("table", "struct"),
    [
        ("earn", EarnRules),
        ("tiers", TierRules),
        ("streak", StreakRules),
        ("referral", ReferralRules),
    ],
)
def test_the_example_network_shows_the_engine_defaults(table: str, struct: type) -> None:
    shown = {k: v for k, v in BASE["networks"]["acme"][table].items() if k != "ignore"}
    defaults = msgspec.json.decode(msgspec.json.encode(struct()))  # `ignore`: none by default
    assert {k: defaults[k] for k in shown} == shown
