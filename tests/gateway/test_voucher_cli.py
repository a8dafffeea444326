"""`rally vouchers`: mint writes codes that verify, QR images that decode back to them, a CSV
and a manifest, and records the batch in Redis; verify checks offline; bad input exits 2."""

from __future__ import annotations

import csv
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from engine import voucher as vc
from gateway.cli import main
from gateway.redis_server import RedisServer
from gateway.voucher_cli import parse_expiry
from gateway.voucher_keys import PublicKeys

CONFIG = """
data_dir = "{data_dir}"
namespace = "{namespace}"
[networks.acme]
"""


def _config(tmp_path: Path, namespace: str) -> Path:
    path = tmp_path / "rally.toml"
    path.write_text(CONFIG.format(data_dir=tmp_path / "data", namespace=namespace))
    return path


def rally(config: Path, redis_server: RedisServer, *args: str) -> int:
    return main(["vouchers", *args[:1], "--config", str(config), *args[1:]]
                + (["--redis-url", redis_server.url] if args[0] in ("mint", "batches",
                                                                     "attempts") else []))  # fmt: skip


def test_mint_writes_printable_codes(
    tmp_path: Path, redis_server: RedisServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, namespace)
    out = tmp_path / "out"
    args = ["mint", "--count", "3", "--points", "250", "--expires", "30d", "--out", str(out)]
    assert rally(config, redis_server, *args, "--batch", "launch", "--note", "party") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch"]["id"] == "launch"
    assert manifest["batch"]["points"] == 250
    assert manifest["codes"] == 3
    assert manifest["account"] == "voucher:acme:launch"
    public = PublicKeys([k["public_key"] for k in manifest["public_keys"]])
    rows = list(csv.DictReader((out / "codes.csv").open()))
    assert [r["code_id"] for r in rows] == ["launch/0", "launch/1", "launch/2"]
    for row in rows:
        v = vc.check_code(row["code"], public.verify, network="acme", now=time.time())
        assert (v.batch, v.points) == ("launch", 250)
        decoded = zxingcpp.read_barcodes(Image.open(out / row["png"]))
        assert [d.text for d in decoded] == [row["code"]], "the PNG scans back to the code"
        svg = ET.parse(out / row["svg"]).getroot()
        assert svg.tag.endswith("svg")
        assert svg.find("{http://www.w3.org/2000/svg}title").text == row["code_id"]  # type: ignore[union-attr]
    capsys.readouterr()
    # verify offline: with the manifest's public key, and the deployment's own
    key = manifest["public_keys"][0]["public_key"]
    code = rows[1]["code"]
    assert main(["vouchers", "verify", code, f"--public-key={key}"]) == 0  # keys may start with -
    assert "genuine: launch/1" in capsys.readouterr().out
    assert main(["vouchers", "verify", "--config", str(config), code]) == 0
    capsys.readouterr()
    forged = code[:-1] + ("A" if code[-1] != "A" else "B")
    assert main(["vouchers", "verify", "--config", str(config), forged]) == 1
    assert capsys.readouterr().out.startswith(("voucher_forged", "voucher_malformed"))
    assert main(["vouchers", "verify", "--config", str(config), code, "--network", "x"]) == 1
    assert "voucher_wrong_network" in capsys.readouterr().out
    # the batch is recorded in Redis: listed, and its id cannot be minted again
    assert rally(config, redis_server, "batches") == 0
    assert "launch\t250 points\t0/3 redeemed" in capsys.readouterr().out
    again = ["mint", "--count", "1", "--points", "5", "--expires", "1d", "--batch", "launch"]
    assert rally(config, redis_server, *again, "--out", str(tmp_path / "o2")) == 2
    assert "batch_exists" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--points", "5", "--expires", "soon"], "--expires 'soon'"),
        (["--points", "5", "--expires", "2020-01-01"], "the expiry must lie in the future"),
        (["--item", "bad item", "--expires", "1d"], "item must be"),
        (["--points", "5", "--expires", "1d", "--batch", "a/b"], "batch must be"),
        (["--points", "5", "--expires", "1d", "--count", "10001"], "count must be 1-10000"),
    ],
)
def test_mint_refuses_bad_input(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    config = _config(tmp_path, namespace)
    count = [] if "--count" in args else ["--count", "2"]
    out = ["--out", str(tmp_path / "out")]
    assert rally(config, redis_server, "mint", *count, *args, *out) == 2
    assert message in capsys.readouterr().err


def test_mint_refuses_a_used_out_dir(
    tmp_path: Path, redis_server: RedisServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.csv").write_text("x")
    config = _config(tmp_path, namespace)
    args = ["mint", "--count", "1", "--points", "5", "--expires", "1d"]
    assert rally(config, redis_server, *args, "--out", str(tmp_path / "out")) == 2
    assert "must be a new or empty directory" in capsys.readouterr().err


def test_mint_refuses_an_out_dir_it_cannot_create(
    tmp_path: Path, redis_server: RedisServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the batch is recorded: no batch is left without its printable files."""
    (tmp_path / "file").write_text("x")
    config = _config(tmp_path, namespace)
    args = ["mint", "--count", "1", "--points", "5", "--expires", "1d", "--batch", "nodir"]
    assert rally(config, redis_server, *args, "--out", str(tmp_path / "file" / "out")) == 2
    err = capsys.readouterr().err
    assert "cannot create it" in err
    assert "Traceback" not in err
    assert rally(config, redis_server, "batches") == 0
    assert "nodir" not in capsys.readouterr().out


def test_mint_warns_of_an_item_the_store_does_not_have(
    tmp_path: Path, redis_server: RedisServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Minted all the same (the item may be created later), with a warning: a typo in --item
    would otherwise print codes that every scan refuses with item_not_found."""
    config = _config(tmp_path, namespace)
    args = ["mint", "--count", "1", "--item", "ghost", "--expires", "1d"]
    assert rally(config, redis_server, *args, "--out", str(tmp_path / "out")) == 0
    assert "has no store item 'ghost' yet" in capsys.readouterr().err


def test_parse_expiry() -> None:
    now = 1_800_000_000.0
    assert parse_expiry("30d", now) == 1_800_000_000 + 30 * 86_400
    assert parse_expiry("90m", now) == 1_800_000_000 + 5_400
    assert parse_expiry("1900000000", now) == 1_900_000_000
    assert parse_expiry("2027-01-31", now) == 1_801_440_000  # 2027-02-01T00:00:00Z
    assert parse_expiry("2027-01-31T18:00:00Z", now) == 1_801_418_400
    for bad in ("tomorrow", "2027-01-31T18:00:00", "5w"):
        with pytest.raises(ValueError):
            parse_expiry(bad, now)


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.voucher_keys import VoucherKeys

    assert main(["vouchers", "keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(VoucherKeys(key, Path("/nonexistent")).load().key_id) == 4
