"""`rally vouchers ...`: mint a batch into printable files, check a code offline, list the
batches and the redemption attempts, make a signing key.

`mint` records the batch in the deployment's Redis (the running one, or the data dir's own
redis-server started for the call), signs its codes with the deployment's key
([vouchers] signing_key, or the one kept under data_dir) and writes, into --out:

    codes.csv        serial, code_id, code, png, svg (one row per code)
    manifest.json    the batch record, the public keys that verify its codes, the files
    png/{batch}-{serial}.png, svg/{batch}-{serial}.svg   one QR code per code, for printing
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from actors.redisconn import connect_async
from engine import voucher as vc

QR_ERROR = "m"
"""QR error correction level M: 15% of the symbol may be damaged (a crease, a stain)."""
PNG_SCALE = 8
SVG_SCALE = 4
QR_BORDER = 4
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_expiry(text: str, now: float) -> int:
    """Unix seconds from "30d" / "12h" / "90m" / "3600s" (from now), "2027-01-31" (through the
    end of that UTC day), an ISO date-time with a zone ("2027-01-31T18:00:00Z") or unix seconds.
    Raises ValueError."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m:
        return int(now) + int(m.group(1)) * _UNIT_S[m.group(2)]
    if text.isdigit():
        return int(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.date.fromisoformat(text)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return int(end.timestamp())
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--expires {text!r}: give a duration (30d, 12h), a date (2027-01-31), an ISO "
            "date-time with a zone, or unix seconds"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"--expires {text!r}: a date-time needs a zone (Z or +01:00)")
    return int(when.timestamp())


def write_batch(out: Path, batch: vc.Batch, codes: list[str], public_keys: list[Any]) -> Path:
    """The printable files of a minted batch (see the module doc); returns the manifest."""
    import segno

    (out / "png").mkdir(parents=True, exist_ok=True)
    (out / "svg").mkdir(exist_ok=True)
    width = len(str(batch.count - 1))
    rows = []
    for serial, code in enumerate(codes):
        name = f"{batch.id}-{serial:0{width}d}"
        qr = segno.make(code, error=QR_ERROR, micro=False, boost_error=False)
        png, svg = f"png/{name}.png", f"svg/{name}.svg"
        qr.save(out / png, scale=PNG_SCALE, border=QR_BORDER)
        qr.save(out / svg, scale=SVG_SCALE, border=QR_BORDER, title=f"{batch.id}/{serial}")
        rows.append((serial, f"{batch.id}/{serial}", code, png, svg))
    with (out / "codes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["serial", "code_id", "code", "png", "svg"])
        w.writerows(rows)
    version = segno.make(codes[0], error=QR_ERROR, micro=False, boost_error=False).version
    manifest = {
        "batch": msgspec.to_builtins(batch),
        "account": f"voucher:{batch.network}:{batch.id}",
        "codes": len(codes),
        "qr": {"error_correction": QR_ERROR.upper(), "version": version},
        "public_keys": public_keys,
        "files": {"codes": "codes.csv", "png": "png/", "svg": "svg/"},
        "verify": "rally vouchers verify CODE --public-key=KEY (offline)",
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _out_dir(text: str) -> tuple[Path, Path | None]:
    """--out, created (with png/ and svg/) before the batch is recorded, so a directory that
    cannot be written is a usage error, not a batch recorded with no files. Also returns the
    topmost directory this created (None: --out existed), to remove if the mint is refused."""
    out = Path(text)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"--out {out}: must be a new or empty directory")
        top = None if out.exists() else out
        while top is not None and not top.parent.exists():
            top = top.parent
        for sub in (out / "png", out / "svg"):
            sub.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create it ({err.strerror or err})") from None
    return out, top


def _undo_out_dir(out: Path, top: Path | None) -> None:
    import shutil

    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
    else:
        for sub in (out / "png", out / "svg"):
            shutil.rmtree(sub, ignore_errors=True)


def mint(args: argparse.Namespace, settings: Any, redis_url: str) -> tuple[vc.Batch, Path]:
    """Record the batch, sign its codes, write the files. Raises ValueError (usage) or
    gateway.errors.GatewayError (a refused request, e.g. batch_exists)."""

    from actors.keys import Keys
    from actors.vouchers import VoucherStore
    from gateway.store import StoreKeys
    from gateway.voucher_keys import VoucherKeys
    from gateway.vouchers import MintRequest, VoucherService

    now = time.time()
    network = args.network or settings.default_network()
    if network is None:
        raise ValueError("--network is required (several networks are configured)")
    vs = settings.vouchers
    keys = VoucherKeys.from_settings(vs.signing_key, settings.data_dir, vs.verify_keys).load()
    req = MintRequest(
        count=args.count, points=args.points or 0, item=args.item or "",
        expires_at=parse_expiry(args.expires, now), batch=args.batch or "", note=args.note or "",
    )  # fmt: skip

    async def go() -> tuple[vc.Batch, list[str]]:
        client = connect_async(redis_url)
        try:
            keys_ = Keys.of(settings.namespace, redis_url)
            store = VoucherStore(client, keys_, attempts_kept=vs.attempts_kept)
            svc = VoucherService(
                keys, store, max_batch_codes=vs.max_batch_codes, resume_after_s=vs.resume_after_s
            )
            minted = await svc.mint(network, req)
            if req.item and not await client.hexists(StoreKeys(keys_, network).items, req.item):
                print(f"rally: warning: network {network!r} has no store item {req.item!r} "
                      "yet: scans of these codes answer item_not_found until it is created "
                      "(PUT /v1/store/items/ID)", file=sys.stderr)  # fmt: skip
            return minted
        finally:
            await client.aclose()

    out, top = _out_dir(args.out)
    try:
        batch, codes = asyncio.run(go())
    except BaseException:
        _undo_out_dir(out, top)
        raise
    return batch, write_batch(out, batch, codes, keys.public_keys())


def verify(code: str, public_keys: list[str], network: str | None, now: float) -> vc.Voucher:
    """Check a code offline with public keys alone (signature and expiry; not whether it
    was used). Raises engine.voucher.VoucherError."""
    from gateway.voucher_keys import PublicKeys

    v, _, _ = vc.decode(code)
    return vc.check_code(
        code, PublicKeys(public_keys).verify, network=network or v.network, now=now
    )


async def list_attempts(
    redis_url: str, namespace: str, network: str, limit: int
) -> list[dict[str, Any]]:

    from actors.keys import Keys
    from actors.vouchers import VoucherStore

    client = connect_async(redis_url)
    try:
        store = VoucherStore(client, Keys.of(namespace, redis_url), attempts_kept=1)
        return (await store.attempts(network, limit=limit))[0]
    finally:
        await client.aclose()


async def list_batches(redis_url: str, namespace: str, network: str) -> list[tuple[vc.Batch, int]]:

    from actors.keys import Keys
    from actors.vouchers import VoucherStore

    client = connect_async(redis_url)
    try:
        return await VoucherStore(client, Keys.of(namespace, redis_url), attempts_kept=1).batches(
            network
        )
    finally:
        await client.aclose()
