"""The `rally` command line: serve, gateway, demo, audit, status, deadletter, token,
portal-link, vouchers, raffle, payouts, analytics, import, export, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from actors.redisconn import connect
from gateway.settings import Settings, SettingsError, demo_settings_toml, load_settings

EXIT_USAGE = 2
WORKER_CHECK_S = 1.0
"""How often `rally serve` / `rally gateway` replace gateway workers that died."""


class CliError(Exception):
    """A problem the user can fix: printed as one message, exit code 2."""


def _settings(args: argparse.Namespace) -> Settings:
    path = Path(args.config) if getattr(args, "config", None) else None
    if path is None and Path("rally.toml").exists():
        path = Path("rally.toml")
    if path is not None and not path.exists():
        raise CliError(f"config file not found: {path}")
    try:
        settings = load_settings(path, os.environ)
    except SettingsError as err:
        raise CliError(f"invalid configuration ({path}):\n{err}") from None
    updates: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        updates["data_dir"] = Path(args.data_dir)
    if getattr(args, "redis_url", None):
        updates["redis"] = settings.redis.model_copy(update={"url": args.redis_url})
    server = {}
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "workers", None) is not None:
        server["workers"] = args.workers
    if server:
        updates["server"] = settings.server.model_copy(update=server)
    return settings.model_copy(update=updates) if updates else settings


# -- serve ------------------------------------------------------------------------------------
async def _serve(settings: Settings, with_actors: bool) -> None:
    from gateway.runtime import (
        GatewayPool,
        GatewayStartError,
        Runtime,
        start_gateway,
        write_runtime_file,
    )

    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if settings.bot.enabled:
        _check_bot(settings)
    bot_task: asyncio.Task[Any] | None = None
    if with_actors:
        runtime.start()  # in this thread: the redis-server it starts dies with its starter
    elif not settings.redis.url:
        raise CliError("`rally gateway` needs --redis-url (or [redis] url / RALLY_REDIS_URL)")
    runner = None
    pool = GatewayPool.from_settings(settings, runtime.redis_url)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
            loop.add_signal_handler(sig, stop.set)
        redis_url = runtime.redis_url
        if pool.workers > 1:  # in this thread too: the workers die with their starter
            try:
                port = pool.start()
            except GatewayStartError as err:
                raise CliError(f"the gateway could not start: {err}") from None
        else:  # one gateway, in this process
            runner, port = await start_gateway(settings, redis_url, pool.host, pool.port)
        url = f"http://{pool.host}:{port}"
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)

        def record() -> None:
            write_runtime_file(
                settings.data_dir, url=url, redis_url=redis_url, namespace=settings.namespace,
                pid=os.getpid(), ray_address=settings.ray.address,
                gateway_pids=pool.pids if pool.workers > 1 else [os.getpid()],
            )  # fmt: skip

        record()
        procs = f", {pool.workers} gateway processes" if pool.workers > 1 else ""
        print(f"rally: serving on {url} (redis {redis_url}{procs})", flush=True)
        if settings.bot.enabled:
            from gateway.bot_runner import run_bot

            bot_task = asyncio.create_task(run_bot(settings, redis_url, stop), name="bot")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WORKER_CHECK_S)
            if pool.workers > 1 and not stop.is_set() and pool.respawn_dead():
                record()
    finally:
        if bot_task is not None:
            stop.set()
            with contextlib.suppress(Exception):
                await bot_task
        if runner is not None:
            await runner.cleanup()
        pool.stop()
        await loop.run_in_executor(None, runtime.stop)


def cmd_serve(args: argparse.Namespace) -> int:
    uvloop.run(_serve(_settings(args), with_actors=True))
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    uvloop.run(_serve(_settings(args), with_actors=False))
    return 0


# -- bot ------------------------------------------------------------------------------------
def _check_bot(settings: Settings) -> None:
    from gateway.bot_runner import BotConfigError, bot_parts

    try:
        parts = bot_parts(settings)
    except BotConfigError as err:
        raise CliError(str(err)) from None
    if not parts.irc.channels and not parts.websockets:
        raise CliError("[bot] channels and websockets are empty: nothing to join")


def cmd_bot(args: argparse.Namespace) -> int:
    """Run the chat bot against a running deployment's Redis until SIGINT/SIGTERM."""
    settings = _settings(args)
    if args.channel:
        channels = [*settings.bot.channels, *args.channel]
        settings = settings.model_copy(
            update={"bot": settings.bot.model_copy(update={"channels": channels})}
        )
    _check_bot(settings)

    async def go(url: str) -> None:
        from gateway.bot_runner import run_bot

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        b = settings.bot
        print(f"rally: bot {b.nick} on {b.host}:{b.port}, {len(b.channels)} channels, "
              f"{len(b.websockets)} WebSocket networks", flush=True)  # fmt: skip
        conn = await run_bot(settings, url, stop)
        m = conn.metrics
        print(f"rally: bot stopped: {m.lines_in} lines, {m.events_out} events, "
              f"{m.replies_sent} replies, {m.parse_errors} malformed", flush=True)  # fmt: skip

    with _redis(settings, own_if_stopped=False) as (url, _):
        uvloop.run(go(url))
    return 0


# -- audit ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _redis(settings: Settings, *, own_if_stopped: bool) -> Iterator[tuple[str, bool]]:
    """The Redis URL of the deployment: [redis] url, else the running one (runtime.json);
    else, if `own_if_stopped`, a redis-server started on the data dir's AOF for the call.
    Yields (url, whether we started it)."""
    import json

    import redis

    from gateway.redis_server import RedisServer

    url = settings.redis.url
    runtime_file = Path(settings.data_dir) / "runtime.json"
    if not url and runtime_file.exists():
        url = json.loads(runtime_file.read_text()).get("redis_url", "")
    if url:
        try:
            connect(url, socket_connect_timeout=5).ping()
        except (redis.ConnectionError, redis.TimeoutError):
            if not own_if_stopped:
                raise CliError(f"redis unreachable at {url}: is the deployment running?") from None
            url = ""
    if url:
        yield url, False
        return
    redis_dir = Path(settings.data_dir) / "redis"
    if not own_if_stopped or not redis_dir.exists():
        raise CliError(f"no Redis: no URL given, no running deployment and no data in {redis_dir}")
    own = RedisServer(redis_dir).start()
    try:
        yield own.url, True
    finally:
        own.stop()


def cmd_audit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from actors.client import backlog, wait_idle
    from actors.keys import Keys
    from analytics.archive import ArchiveError, LedgerArchive
    from gateway.audit import audit

    settings = _settings(args)
    console = Console()
    with _redis(settings, own_if_stopped=True) as (url, own):
        r = connect(url)
        keys = Keys.of(settings.namespace, url)
        cfg = settings.runtime(url)
        if not wait_idle(r, keys, cfg, timeout_s=0.0 if own else 60.0, flush_held=not own):
            console.print(
                f"[yellow]note[/yellow]: {backlog(r, keys, cfg):,} log entries are not applied "
                "yet (the deployment is stopped or busy): history and leaderboards may trail"
            )
        archive = LedgerArchive(settings.archive_path())
        try:
            report = audit(r, keys, settings.rulebook(), archive)
        except ArchiveError as err:
            raise CliError(str(err)) from None
    console.print(
        f"audited {report.members} members, {report.entries} ledger entries "
        f"({report.archived} from the archive); "
        f"circulation {report.circulation}, treasury {report.treasury}, "
        f"{len(report.accounts)} other accounts holding {sum(report.accounts.values())}"
    )
    for problem in report.problems:
        console.print(f"[red]MISMATCH[/red] {problem}")
    console.print("[green]audit passed[/green]" if report.ok else "[red]audit FAILED[/red]")
    return 0 if report.ok else 1


# -- status and dead letters ------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """Shard health as tables; exit 0 when ready, 1 when not (or Redis is unreachable)."""
    import redis
    from rich.console import Console

    from actors.health import expected_shards, read_health, redis_down
    from actors.keys import Keys
    from gateway.status import print_health

    settings = _settings(args)
    console = Console(width=160)
    try:
        with _redis(settings, own_if_stopped=False) as (url, _own):
            r = connect(url, socket_timeout=10)
            shards = expected_shards(settings.shards.channel, settings.shards.member)
            report = read_health(r, Keys.of(settings.namespace, url), shards)
    except CliError as err:
        report = redis_down(time.time(), str(err))
    except redis.RedisError as err:
        report = redis_down(time.time(), repr(err))
    if args.json:
        import msgspec

        print(msgspec.json.encode(report).decode())
    else:
        print_health(console, report)
    return 0 if report.ready else 1


def cmd_deadletter(args: argparse.Namespace) -> int:
    from rich.console import Console

    from actors import deadletter
    from actors.keys import Keys
    from gateway.status import print_dead_letters

    settings = _settings(args)
    console = Console(width=160)
    with _redis(settings, own_if_stopped=True) as (url, _own):
        r = connect(url)
        keys = Keys.of(settings.namespace, url)
        if args.action == "list":
            letters = list(deadletter.iter_dead_letters(r, keys, args.stream))
            print_dead_letters(console, letters)
            return 0
        if args.all == bool(args.ids):
            raise CliError("rally deadletter retry: give dead letter IDs or --all (not both)")
        ids = (
            [dl.id for dl in deadletter.iter_dead_letters(r, keys, args.stream)]
            if args.all
            else args.ids
        )
        retried = 0
        for dl_id in ids:
            try:
                new = deadletter.retry(r, keys, dl_id)
            except deadletter.DeadLetterError as err:
                raise CliError(str(err)) from None
            if new is None:
                console.print(f"{dl_id}: no such dead letter (already retried?)")
            else:
                retried += 1
                console.print(f"{dl_id}: re-appended as {new}")
        console.print(f"retried {retried} dead letter(s)")
    return 0


# -- member tokens ----------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    """Print a member token (the same as POST /v1/members/{id}/token answers)."""
    from gateway.auth import TokenSigner
    from gateway.errors import BadRequest
    from gateway.reads import parse_id

    settings = _settings(args)
    signer = TokenSigner.from_settings(settings)
    if signer is None:
        raise CliError("member tokens are off: set [auth] token_secret in the configuration")
    network = args.network or settings.default_network()
    if network is None:
        raise CliError("--network is required (several networks are configured)")
    try:
        user_id = parse_id(args.user_id, "user_id")
        network = parse_id(network, "network")
    except BadRequest as err:
        raise CliError(err.message) from None
    token, expires_at = signer.issue(network, user_id)
    print(token)
    print(f"member {user_id!r} of network {network!r}, valid until unix {expires_at}",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_portal_link(args: argparse.Namespace) -> int:
    """Print a member portal sign-in link: {base}/portal/#login={JWT signed by the network's
    api key} (the JWT rides in the fragment, so it reaches no server log)."""
    from gateway.errors import BadRequest
    from gateway.reads import parse_id
    from gateway.sessions import Sessions

    settings = _settings(args)
    network = args.network or settings.default_network()
    if network is None:
        raise CliError("--network is required (several networks are configured)")
    try:
        user_id = parse_id(args.member, "member")
        network = parse_id(network, "network")
    except BadRequest as err:
        raise CliError(err.message) from None
    if network not in settings.networks:
        raise CliError(f"no network {network!r} in the configuration")
    if not settings.auth.token_secret:
        raise CliError("the member portal needs [auth] token_secret in the configuration")
    if args.key:
        keys = [k for k in settings.api_keys if k.key == args.key]
        if not keys:
            raise CliError(f"no api key {args.key!r} in the configuration")
    else:
        keys = [k for k in settings.api_keys if k.may_write(network)]
        if not keys:
            raise CliError(f"no api key covers network {network!r}")
    if not keys[0].may_write(network):
        raise CliError(f"api key {keys[0].key!r} does not cover network {network!r}")
    sessions = Sessions.from_settings(settings)
    token = sessions.login_jwt(keys[0], network, user_id, args.ttl)
    base = args.base_url or f"http://{settings.server.host}:{settings.server.port}"
    print(f"{base.rstrip('/')}/portal/#login={token}")
    ttl = min(args.ttl, settings.portal.jwt_max_ttl_s)
    print(f"member {user_id!r} of network {network!r}, sign in within {ttl} s", file=sys.stderr)
    return 0


# -- vouchers ---------------------------------------------------------------------------------
def cmd_vouchers(args: argparse.Namespace) -> int:
    """rally vouchers mint | verify | batches | attempts | keygen (gateway/voucher_cli.py)."""
    from gateway import voucher_cli
    from gateway.errors import GatewayError
    from gateway.voucher_keys import VoucherKeyError, new_signing_key

    if args.action == "keygen":
        print(new_signing_key())
        print("put it in [vouchers] signing_key; keep it secret", file=sys.stderr)
        return 0
    settings = _settings(args)
    try:
        if args.action == "verify":
            return _verify_voucher(args, settings)
        network = args.network or settings.default_network()
        if network is None:
            raise CliError("--network is required (several networks are configured)")
        with _redis(settings, own_if_stopped=True) as (url, _own):
            if args.action == "mint":
                batch, manifest = voucher_cli.mint(args, settings, url)
                value = f"{batch.points} points" if batch.points else f"item {batch.item!r}"
                print(f"minted batch {batch.id!r} of network {batch.network!r}: {batch.count} "
                      f"codes worth {value}, expiring at unix {batch.expires_at}")  # fmt: skip
                print(f"wrote {manifest.parent}/codes.csv, png/, svg/ and {manifest.name}")
            elif args.action == "batches":
                for b, redeemed in asyncio.run(
                    voucher_cli.list_batches(url, settings.namespace, network)
                ):
                    value = f"{b.points} points" if b.points else f"item {b.item}"
                    print(f"{b.id}\t{value}\t{redeemed}/{b.count} redeemed\t"
                          f"expires {b.expires_at}\tkey {b.key_id}\t{b.note}")  # fmt: skip
            else:
                for a in asyncio.run(
                    voucher_cli.list_attempts(url, settings.namespace, network, args.limit)
                ):
                    print(f"{a['id']}\t{a['outcome']}\t{a['user_id']}\t{a.get('code_id', '')}"
                          f"\t{a.get('by', '')}\t{a.get('detail', '')}")  # fmt: skip
    except (ValueError, VoucherKeyError) as err:
        raise CliError(str(err)) from None
    except GatewayError as err:
        raise CliError(f"{err.code}: {err.message}") from None
    return 0


def _verify_voucher(args: argparse.Namespace, settings: Settings) -> int:
    """Offline: exit 0 if the code is genuine and unexpired, 1 if not (with the reason)."""
    from engine.voucher import VoucherError
    from gateway import voucher_cli
    from gateway.voucher_keys import VoucherKeys

    public = args.public_key
    if not public:
        vs = settings.vouchers
        keys = VoucherKeys.from_settings(vs.signing_key, settings.data_dir, vs.verify_keys)
        public = [str(k["public_key"]) for k in keys.public_keys()]
    try:
        v = voucher_cli.verify(args.code, public, args.network, time.time())
    except VoucherError as err:
        print(f"{err.code}: {err.message}")
        return 1
    value = f"{v.points} points" if v.points else f"item {v.item!r}"
    print(f"genuine: {v.code_id} of network {v.network!r}, {value}, expires at unix "
          f"{v.expires_at} (whether it was used is known only to the deployment)")  # fmt: skip
    return 0


# -- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    data_dir = Path(args.data_dir or ".rally/demo")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "rally.toml"
    config.write_text(demo_settings_toml(str(data_dir)))
    try:
        settings = load_settings(config, os.environ)
    except SettingsError as err:
        raise CliError(f"the demo configuration is invalid:\n{err}") from None
    return asyncio.run(run_demo(settings, seconds=args.seconds, rate=args.rate, batch=args.batch))


def cmd_raffle(args: argparse.Namespace) -> int:
    from gateway.raffle_cli import run

    return run(args, _settings, CliError)


def cmd_payouts(args: argparse.Namespace) -> int:
    from gateway.payout_cli import run

    settings = _settings(args)
    with _redis(settings, own_if_stopped=False) as (url, _own):
        return run(args, settings, url, CliError)


def cmd_analytics(args: argparse.Namespace) -> int:
    from gateway.analytics_cli import run

    return run(args, _settings, CliError)


def cmd_import(args: argparse.Namespace) -> int:
    """rally import --from SOURCE FILE (gateway/migrate_cli.py)."""
    from gateway.migrate_cli import run_import

    return run_import(args, _settings(args), _redis, CliError)


def cmd_export(args: argparse.Namespace) -> int:
    """rally export --network N --out FILE (gateway/migrate_cli.py)."""
    from gateway.migrate_cli import run_export

    return run_export(args, _settings(args), _redis, CliError)


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from benchmarks.__main__ import main as bench_main

    return int(bench_main(rest))


def positive(kind: type) -> Any:
    """An argparse type: a positive number of `kind` (ints may be written 1e5)."""

    def parse(text: str) -> Any:
        try:
            value = kind(float(text)) if kind is int else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _voucher_parsers(sub: Any, common: Any) -> None:
    v = sub.add_parser("vouchers", help="mint signed voucher codes (QR), verify, list attempts")
    v_sub = v.add_subparsers(dest="action", required=True)
    m = v_sub.add_parser("mint", help="record a batch and write its codes, QR PNG/SVG, CSV")
    common(m)
    m.add_argument("--redis-url")
    m.add_argument("--network", help="default: the only network configured")
    m.add_argument("--count", type=positive(int), required=True)
    m.add_argument("--out", required=True, help="a new or empty directory for the files")
    value = m.add_mutually_exclusive_group(required=True)
    value.add_argument("--points", type=positive(int), help="points each code credits")
    value.add_argument("--item", help="store item id each code is worth")
    m.add_argument(
        "--expires", required=True, help="30d, 12h, 2027-01-31 (through that UTC day), "
        "2027-01-31T18:00:00Z or unix seconds",
    )  # fmt: skip
    m.add_argument("--batch", help="batch id (1-32 of A-Z a-z 0-9 _ -); default: random")
    m.add_argument("--note", help="a note kept with the batch")
    ver = v_sub.add_parser("verify", help="check a code offline: signature, network, expiry")
    common(ver)
    ver.add_argument("code", metavar="CODE")
    ver.add_argument("--network", help="the network the code must be of (default: its own)")
    ver.add_argument(
        "--public-key", action="append", help="a public key (base64url; repeatable); "
        "default: the deployment's keys",
    )  # fmt: skip
    for name, text in (("batches", "list the batches minted"), ("attempts", "recent scans")):
        sp = v_sub.add_parser(name, help=text)
        common(sp)
        sp.add_argument("--redis-url")
        sp.add_argument("--network", help="default: the only network configured")
        if name == "attempts":
            sp.add_argument("--limit", type=positive(int), default=50)
    v_sub.add_parser("keygen", help="print a new signing key for [vouchers] signing_key")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rally", description="Rallypoint: realtime loyalty engine")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML configuration file (default: ./rally.toml)")
        sp.add_argument("--data-dir", help="where Redis data and runtime.json live")

    s = sub.add_parser("serve", help="run Redis, Ray, the actors and the gateway")
    common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=positive(int), help="gateway processes ([server] workers)")
    g = sub.add_parser("gateway", help="run only the HTTP gateway against a running deployment")
    common(g)
    g.add_argument("--redis-url", required=False)
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--workers", type=positive(int), help="gateway processes ([server] workers)")
    t = sub.add_parser("token", help="print a member token: reads one member and its ledger")
    common(t)
    t.add_argument("user_id", metavar="USER_ID")
    t.add_argument("--network", help="the member's network (default: the only one configured)")
    pl = sub.add_parser("portal-link", help="print a signed member portal sign-in link")
    common(pl)
    pl.add_argument("--member", required=True, help="the member's user id")
    pl.add_argument("--network", help="the member's network (default: the only one configured)")
    pl.add_argument(
        "--key", help="the api key that signs (default: the first covering the network)"
    )
    pl.add_argument("--ttl", type=positive(int), default=300, help="seconds to sign in")
    pl.add_argument("--base-url", help="the gateway's public URL (default: [server] host:port)")
    b = sub.add_parser("bot", help="run the chat bot (IRC connector and commands), [bot] settings")
    common(b)
    b.add_argument("--redis-url")
    b.add_argument("--channel", action="append", default=[], help="join this channel too")
    d = sub.add_parser("demo", help="serve plus a simulated network, with a live table")
    d.add_argument("--seconds", type=positive(float), default=30.0)
    d.add_argument("--rate", type=positive(float), default=2_000.0, help="events per second")
    d.add_argument("--batch", type=positive(int), default=200, help="events per request")
    d.add_argument("--data-dir")
    a = sub.add_parser("audit", help="check the ledger invariants; exit 1 on any mismatch")
    common(a)
    a.add_argument("--redis-url")
    st = sub.add_parser("status", help="shard health as a table; exit 1 when not healthy")
    common(st)
    st.add_argument("--redis-url")
    st.add_argument("--json", action="store_true", help="print the report as JSON")
    dl = sub.add_parser("deadletter", help="list or retry stream entries that kept failing")
    dl_sub = dl.add_subparsers(dest="action", required=True)
    dl_list = dl_sub.add_parser("list", help="print the dead letters as a table")
    dl_retry = dl_sub.add_parser(
        "retry", help="re-append dead letters to their source stream and remove them"
    )
    for sp in (dl_list, dl_retry):
        common(sp)
        sp.add_argument("--redis-url")
        sp.add_argument("--stream", help='only dead letters from this stream, e.g. "ingest:0"')
    dl_retry.add_argument(
        "ids", nargs="*", metavar="ID", help="dead letter ids (rally deadletter list)"
    )
    dl_retry.add_argument("--all", action="store_true", help="every dead letter (of --stream)")
    _voucher_parsers(sub, common)
    sub.add_parser("bench", help="the benchmark suite (rally bench --help)", add_help=False)
    from gateway.raffle_cli import add_parser as add_raffle_parser

    add_raffle_parser(sub, common)
    from gateway.payout_cli import add_parser as add_payout_parser

    add_payout_parser(sub, common)
    from gateway.analytics_cli import add_parser as add_analytics_parser

    add_analytics_parser(sub, common)
    from gateway.migrate_cli import add_parser as add_migrate_parsers

    add_migrate_parsers(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argparse.Namespace(), argv[1:])
    args = parser().parse_args(argv)
    commands = {
        "serve": cmd_serve, "gateway": cmd_gateway, "demo": cmd_demo, "audit": cmd_audit,
        "status": cmd_status, "deadletter": cmd_deadletter, "token": cmd_token,
        "portal-link": cmd_portal_link, "raffle": cmd_raffle, "bot": cmd_bot,
        "vouchers": cmd_vouchers, "payouts": cmd_payouts, "analytics": cmd_analytics,
        "import": cmd_import, "export": cmd_export,
    }  # fmt: skip
    try:
        return commands[args.command](args)
    except CliError as err:
        print(f"rally: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
