"""`rally raffle create|draw`: a bad terms file or beacon is a one-line message and exit 2,
checked before the deployment is looked for (no Redis is needed to refuse it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

CONFIG = """
data_dir = "{data_dir}"
[networks.acme]
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{bad json", "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[1, 2]", "the terms must be a JSON object, got list"),
        (b'"ticket"', "the terms must be a JSON object, got str"),
        (b'{"id": "r x"}', "invalid terms"),
        (b'{"id": "r1", "winners": 0}', "winners"),
        (b'{"id": "r1", "kind": "keyword"}', "a keyword raffle needs a keyword"),
        (b'{"id": "r1", "network": "other"}', "network 'other' is not 'acme'"),
    ],
)
def test_create_refuses_a_bad_terms_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(data_dir=tmp_path / "data"))
    terms = tmp_path / "terms.json"
    terms.write_bytes(content)
    assert main(["raffle", "create", str(terms), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_create_refuses_a_missing_or_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(data_dir=tmp_path / "data"))
    assert main(["raffle", "create", str(tmp_path / "nope.json"), "--config", str(config)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["raffle", "create", str(tmp_path), "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_draw_refuses_a_bad_beacon_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(data_dir=tmp_path / "data"))
    assert main(["raffle", "draw", "r1", "--beacon", "short", "--config", str(config)]) == 2
    assert "beacon value must be" in capsys.readouterr().err


def test_http_terms_take_the_network_of_the_query() -> None:
    """POST /v1/raffles?network=N: the terms may leave `network` out (as the README's create
    does); given, it must be N; bad terms are a 400 naming the field."""
    from gateway.errors import BadRequest
    from gateway.raffles import terms_of

    assert terms_of(b'{"id": "r1", "winners": 2}', "acme").network == "acme"
    assert terms_of(b'{"id": "r1", "network": "acme"}', "acme").id == "r1"
    cases = [
        (b'{"id": "r1", "network": "other"}', "bad_request", "network"),
        (b'{"id": "r1", "winners": 0}', "invalid_body", "winners"),
        (b'{"id": "r1", "bogus": 1}', "invalid_body", "bogus"),
        (b'{"id": "r1", "kind": "keyword"}', "invalid_body", "keyword"),
        (b'{"id": "r1", "kind": "giveaway", "keyword": "x"}', "invalid_body", "channel"),
        (b"[1]", "invalid_body", "body"),
        (b"{bad", "malformed_json", "body"),
        (b'{"winners": 1}', "invalid_body", "id"),
    ]
    for body, code, field in cases:
        with pytest.raises(BadRequest) as err:
            terms_of(body, "acme")
        assert (err.value.code, err.value.field) == (code, field), body


def test_verify_refuses_a_bad_url_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(data_dir=tmp_path / "data"))
    args = ["raffle", "verify", "r1", "--config", str(config)]
    assert main([*args, "--url", "not-a-url"]) == 2
    assert "--url: unknown url type" in capsys.readouterr().err
    assert main([*args, "--file", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([*args, "--file", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "record.json").write_text("{}")
    assert main([*args, "--file", str(tmp_path / "record.json")]) == 1
    assert "not a valid raffle record" in capsys.readouterr().out
