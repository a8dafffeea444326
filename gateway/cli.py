"""The `rally` command line: serve, gateway, demo, audit, bench."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.settings import Settings, SettingsError, demo_settings_toml, load_settings

EXIT_USAGE = 2


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
    if server:
        updates["server"] = settings.server.model_copy(update=server)
    return settings.model_copy(update=updates) if updates else settings


# -- serve ------------------------------------------------------------------------------------
async def _serve(settings: Settings, with_actors: bool) -> None:
    from gateway.runtime import Runtime, start_gateway, write_runtime_file

    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if with_actors:
        runtime.start()  # in this thread: the redis-server it starts dies with its starter
    elif not settings.redis.url:
        raise CliError("`rally gateway` needs --redis-url (or [redis] url / RALLY_REDIS_URL)")
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
        loop.add_signal_handler(sig, stop.set)
    redis_url = runtime.redis_url
    runner, port = await start_gateway(
        settings, redis_url, settings.server.host, settings.server.port
    )
    url = f"http://{settings.server.host}:{port}"
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    write_runtime_file(
        settings.data_dir, url=url, redis_url=redis_url, namespace=settings.namespace,
        pid=os.getpid(), ray_address=settings.ray.address,
    )  # fmt: skip
    print(f"rally: serving on {url} (redis {redis_url})", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(None, runtime.stop)


def cmd_serve(args: argparse.Namespace) -> int:
    asyncio.run(_serve(_settings(args), with_actors=True))
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    asyncio.run(_serve(_settings(args), with_actors=False))
    return 0


# -- audit ------------------------------------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    import json

    import redis
    from rich.console import Console

    from actors.client import backlog, wait_idle
    from actors.keys import Keys
    from gateway.audit import audit
    from gateway.redis_server import RedisServer

    settings = _settings(args)
    console = Console()
    url = settings.redis.url
    own: RedisServer | None = None
    runtime_file = Path(settings.data_dir) / "runtime.json"
    if not url and runtime_file.exists():
        url = json.loads(runtime_file.read_text()).get("redis_url", "")
    if url:  # a running deployment's Redis, else start ours on the data dir's AOF
        try:
            redis.Redis.from_url(url).ping()
        except redis.ConnectionError:
            url = ""
    if not url:
        redis_dir = Path(settings.data_dir) / "redis"
        if not redis_dir.exists():
            raise CliError(f"nothing to audit: no Redis URL given and no data in {redis_dir}")
        own = RedisServer(redis_dir).start()
        url = own.url
    try:
        r = redis.Redis.from_url(url)
        keys = Keys(settings.namespace)
        cfg = settings.runtime(url)
        if not wait_idle(r, keys, cfg, timeout_s=0.0 if own else 60.0):
            console.print(
                f"[yellow]note[/yellow]: {backlog(r, keys, cfg):,} log entries are not applied "
                "yet (the deployment is stopped or busy): history and leaderboards may trail"
            )
        report = audit(r, keys, settings.rulebook())
    finally:
        if own is not None:
            own.stop()
    console.print(
        f"audited {report.members} members, {report.entries} ledger entries; "
        f"circulation {report.circulation}, treasury {report.treasury}"
    )
    for problem in report.problems:
        console.print(f"[red]MISMATCH[/red] {problem}")
    console.print("[green]audit passed[/green]" if report.ok else "[red]audit FAILED[/red]")
    return 0 if report.ok else 1


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
    g = sub.add_parser("gateway", help="run only the HTTP gateway against a running deployment")
    common(g)
    g.add_argument("--redis-url", required=False)
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    d = sub.add_parser("demo", help="serve plus a simulated network, with a live table")
    d.add_argument("--seconds", type=positive(float), default=30.0)
    d.add_argument("--rate", type=positive(float), default=2_000.0, help="events per second")
    d.add_argument("--batch", type=positive(int), default=200, help="events per request")
    d.add_argument("--data-dir")
    a = sub.add_parser("audit", help="check the ledger invariants; exit 1 on any mismatch")
    common(a)
    a.add_argument("--redis-url")
    sub.add_parser("bench", help="the benchmark suite (rally bench --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argparse.Namespace(), argv[1:])
    args = parser().parse_args(argv)
    commands = {"serve": cmd_serve, "gateway": cmd_gateway, "demo": cmd_demo, "audit": cmd_audit}
    try:
        return commands[args.command](args)
    except CliError as err:
        print(f"rally: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
