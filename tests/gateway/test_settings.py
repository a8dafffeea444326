"""Settings: one TOML file plus three environment overrides; every bad key path is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from engine.rules import RuleBook
from gateway.settings import (
    SettingsError,
    demo_settings_toml,
    load_settings,
    settings_from_dict,
)

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rally.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    s = load_settings(None, {})
    assert (s.server.host, s.server.port, s.redis.url, s.namespace) == (
        "127.0.0.1",
        8080,
        "",
        "rally",
    )
    assert (s.shards.channel, s.shards.member) == (2, 2)
    assert s.limits.max_body_bytes == 4 * 1024 * 1024
    assert s.limits.max_batch_events == 10_000
    assert s.clock.watch_interval_s == 1.0
    assert s.data_dir == Path(".rally")
    assert s.api_keys == []
    assert s.key_for("nope") is None


@pytest.mark.parametrize(
    ("toml", "path", "problem"),
    [
        ("[server]\nportt = 1\n", "server.portt", "Extra inputs are not permitted"),
        ("bogus = 1\n", "bogus", "Extra inputs are not permitted"),
        ('[limits]\nmax_body_bytes = "big"\n', "limits.max_body_bytes", "valid integer"),
        ("[shards]\nchannel = 0\n", "shards.channel", "greater than or equal to 1"),
        (
            "[limits]\nmax_event_age_s = 600\nmax_future_s = 30\ndedupe_window_s = 629\n",
            "limits.dedupe_window_s",
            "at least max_event_age_s + max_future_s (630.0)",
        ),
        (
            '[networks.demo.earn]\nchat_points = "x"\n',
            "networks.demo.earn.chat_points",
            "Expected int, got str",
        ),
        ("[networks.demo.earn]\nchat_pts = 1\n", "networks.demo.earn.chat_pts", "Extra inputs"),
        ("[networks.demo.earn]\nwatch_interval_s = 0\n", "networks.demo.earn", "must be positive"),
        (
            '[networks.demo.tiers]\nnames = ["A"]\n',
            "networks.demo.tiers",
            "differ in length",
        ),
        (
            '[networks.demo.channels.big]\nchat_points = "lots"\n',
            "networks.demo.channels.big.chat_points",
            "Expected int, got str",
        ),
        (
            "[networks.demo.channels.big]\nchat_bonus = 1\n",
            "networks.demo.channels.big.chat_bonus",
            "Extra inputs",
        ),
        (
            "[networks.demo.channels.big]\nsub_points_by_tier = [1, 2]\n",
            "networks.demo.channels.big.sub_points_by_tier",
            "length 3",
        ),
        (
            '[[api_keys]]\nkey = "k"\nsecrets = ["short"]\nnetworks = ["*"]\n',
            "api_keys.0.secrets.0",
            "at least 16",
        ),
        (
            '[[api_keys]]\nkey = "k"\nsecrets = ["0123456789abcdef"]\nnetworks = ["*"]\nrole = 1\n',
            "api_keys.0.role",
            "Extra inputs",
        ),
        (
            '[[api_keys]]\nkey = "k"\nsecrets = []\nnetworks = ["*"]\n',
            "api_keys.0.secrets",
            "at least 1",
        ),
    ],
)
def test_bad_settings_name_the_key_path(tmp_path: Path, toml: str, path: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_write(tmp_path, toml), {})
    text = str(info.value)
    assert f"{path}: " in text, text
    assert problem in text, text


def test_every_problem_is_listed(tmp_path: Path) -> None:
    toml = '[server]\nport = "x"\n[limits]\nfoo = 1\n[networks.n.earn]\nchat_points = "y"\n'
    with pytest.raises(SettingsError) as info:
        load_settings(_write(tmp_path, toml), {})
    paths = [p.split(":")[0] for p in info.value.problems]
    assert paths == ["server.port", "limits.foo", "networks.n.earn.chat_points"]


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[server\n"), {})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", {})


def test_env_overrides_apply(tmp_path: Path) -> None:
    path = _write(tmp_path, '[redis]\nurl = "redis://file:1/0"\n[ray]\naddress = "file"\n')
    env = {
        "RALLY_REDIS_URL": "redis://env:2/0",
        "RALLY_RAY_ADDRESS": "ray://env:10001",
        "RALLY_CHAIN_RPC": "http://env:8545",
        "RALLY_OTHER": "ignored",
    }
    path.write_text(path.read_text() + '[chain]\nprivate_key = "0x' + "11" * 32 + '"\n')
    s = load_settings(path, env)
    assert (s.redis.url, s.ray.address) == ("redis://env:2/0", "ray://env:10001")
    assert s.chain.rpc == "http://env:8545"
    assert load_settings(path, {}).redis.url == "redis://file:1/0"


def test_example_file_loads() -> None:
    s = load_settings(ROOT / "rally.example.toml", {})
    book = s.rulebook()
    assert book.earn("acme", "bigstreamer").chat_points == 2
    assert book.earn("acme", "other").chat_points == 1
    assert "nightbot" in book.earn("acme", "x").ignore
    key = s.key_for("acme-ingest")
    assert key is not None
    assert len(key.secrets) == 2
    assert key.may_write("acme")
    assert not key.may_write("evil")
    ops = s.key_for("ops")
    assert ops is not None
    assert ops.may_write("anything")


def test_demo_toml_loads_and_round_trips_to_the_runtime(tmp_path: Path) -> None:
    text = demo_settings_toml(str(tmp_path / "demo data"))
    s = load_settings(_write(tmp_path, text), {})
    assert s.data_dir == tmp_path / "demo data"
    assert s.default_network() == "demo"
    assert s.key_for("demo-key") is not None
    assert s.rulebook().earn("demo", "lobby").chat_points == 2
    rt = s.runtime("redis://127.0.0.1:1/0")
    assert rt.redis_url == "redis://127.0.0.1:1/0"
    assert rt.namespace == s.namespace
    assert (rt.channel_shards, rt.member_shards) == (2, 2)
    assert rt.watch_clock_interval_s == 1.0
    assert rt.read_count == s.limits.read_count
    assert rt.dedupe_window_s == s.limits.max_event_age_s + s.limits.max_future_s + 60
    again = RuleBook.from_builtins(rt.rules)
    assert again.earn("demo", "lobby").chat_points == 2
    assert again.earn("demo", "elsewhere").chat_points == 1


def test_dedupe_window_is_configured_or_derived(tmp_path: Path) -> None:
    derived = load_settings(_write(tmp_path, "[limits]\nmax_event_age_s = 600\n"), {})
    assert derived.runtime("redis://x").dedupe_window_s == 600 + 60 + 60
    toml = "[limits]\nmax_event_age_s = 600\nmax_future_s = 30\ndedupe_window_s = 630\n"
    assert load_settings(_write(tmp_path, toml), {}).runtime("redis://x").dedupe_window_s == 630


def test_channel_override_values_are_typed() -> None:
    raw = tomllib.loads(
        '[networks.n.channels.c]\nignore = ["bot"]\nsub_points_by_tier = [1, 2, 3]\n'
    )
    s = settings_from_dict(raw, {})
    earn = s.rulebook().earn("n", "c")
    assert earn.ignore == frozenset({"bot"})
    assert earn.sub_points_by_tier == (1, 2, 3)


def test_duplicate_api_keys_are_refused() -> None:
    key = {"key": "k", "secrets": ["0123456789abcdef"], "networks": ["*"]}
    with pytest.raises(SettingsError, match=r"api_keys\.1\.key: duplicate"):
        settings_from_dict({"api_keys": [key, key]}, {})
