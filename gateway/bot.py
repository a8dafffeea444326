"""The chat bot: answers commands seen by a connector, with the state the shards committed.

`CommandBot.on_chat` parses `!name args`, looks the command up in the channel's table
(config file commands over the built-ins), checks enabled / role / online-offline /
cooldowns (engine.commands), and replies with the rendered template. Reads come straight
from Redis, as the gateway's read routes do (member state, channel leaderboards, the
channel's live flag). Built-ins: !points [user], !rank, !top [n], !streak, !tier, custom
text commands, and those that move points through the spend path (gateway/bot_spends.py):
!give, !addpoints, !removepoints, !bonusall, !raffle, !tickets, !join, !redeem. Anything
refused or unknown is counted, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.spend import SpendClient, SpendTimeout
from engine.channel import channel_decoder
from engine.commands import (
    OK,
    CommandConfigError,
    CommandSpec,
    CommandTable,
    Cooldowns,
    Invocation,
    check,
    decode_spec,
    parse_command,
    render,
)
from engine.events import channel_key, member_key
from engine.irc import ChatLine, IrcMessage
from engine.member import MemberState, day_of, effective_streak, state_decoder
from engine.rules import RuleBook
from engine.spend import INSUFFICIENT_POINTS, MAX_TEXT, Transfer
from gateway.bot_spends import ChatSpends

log = logging.getLogger(__name__)

MAX_TOP = 10
DEFAULT_REPLIES: dict[str, str] = {
    "points": "@{user} has {points} points",
    "rank": "@{user} is #{rank} in {channel} with {points} points",
    "top": "Top {count}: {args}",
    "streak": "@{user} has a {streak}-day streak",
    "tier": "@{user} is {tier} ({points} lifetime points)",
}
UNKNOWN_MEMBER = "@{user} has no points yet"


def commands_key(keys: Keys, network: str, channel: str) -> str:
    """The hash of a channel's commands stored through the admin API (name -> spec JSON)."""
    return keys.k("botcmds", network, channel)


def version_key(keys: Keys) -> str:
    """Bumped by every admin API write: bots reload when it moves."""
    return keys.k("botcmds", "version")


@dataclass(slots=True)
class BotMetrics:
    commands: int = 0
    replies: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    unsupported: int = 0
    read_errors: int = 0
    bad_stored: int = 0


class CommandBot:
    """Commands of every channel a connector serves; `say(channel, text)` sends a reply."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: Keys,
        rules: RuleBook,
        network: str,
        commands: Mapping[str, list[CommandSpec]],
        say: Callable[[str, str], bool],
        *,
        logins: Mapping[str, str] | None = None,
        spends: SpendClient | None = None,
        chat_spends: ChatSpends | None = None,
        prefix: str = "!",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis_client
        self.keys = keys
        self.rules = rules
        self.network = network
        self.say = say
        self.prefix = prefix
        self.spends = spends
        """The spend path (actors.spend) that charges a command's cost_points."""
        self.chat_spends = chat_spends
        """The built-ins that move points (!give, !bonusall, raffles, store); None: off."""
        self.logins: Mapping[str, str] = logins if logins is not None else {}
        """login -> platform user id, as the connector learnt them (for `!points user`)."""
        self.clock = clock
        self._config = {ch: list(specs) for ch, specs in commands.items()}
        self._stored: dict[str, list[CommandSpec]] = {}
        self._version: bytes | None = None
        self._default_table = CommandTable([])
        self._tables: dict[str, CommandTable] = {}
        self._rebuild()
        self._cooldowns: dict[str, Cooldowns] = {}
        self.metrics = BotMetrics()

    def table(self, channel: str) -> CommandTable:
        return self._tables.get(channel, self._default_table)

    def _rebuild(self) -> None:
        """Tables: config "*", stored "*", config channel, stored channel (later wins)."""
        cfg, stored = self._config, self._stored
        every = [*cfg.get("*", []), *stored.get("*", [])]
        self._default_table = CommandTable(every)
        self._tables = {
            ch: CommandTable([*every, *cfg.get(ch, []), *stored.get(ch, [])])
            for ch in {*cfg, *stored} - {"*"}
        }

    async def refresh(self, channels: Iterable[str]) -> bool:
        """Reload the commands stored through the admin API when their version moved."""
        version = cast("bytes | None", await self.redis.get(version_key(self.keys)))
        if version == self._version:
            return False
        stored: dict[str, list[CommandSpec]] = {}
        for ch in {"*", *channels}:
            raw = cast(
                "dict[bytes, bytes]",
                await self.redis.hgetall(commands_key(self.keys, self.network, ch)),
            )
            specs = []
            for blob in raw.values():
                try:
                    specs.append(decode_spec(blob))
                except CommandConfigError:
                    self.metrics.bad_stored += 1
            if specs:
                stored[ch] = specs
        self._stored, self._version = stored, version
        self._rebuild()
        return True

    async def on_chat(self, line: ChatLine, msg: IrcMessage) -> None:
        inv = parse_command(line.text, self.prefix)
        if inv is None:
            return
        self.metrics.commands += 1
        spec = self.table(line.channel).lookup(inv.name)
        now = self.clock()
        cooldowns = self._cooldowns.setdefault(line.channel, Cooldowns())
        live = False
        if spec is not None and spec.availability != "always":
            live = await self._live(line.channel)
        verdict = check(spec, cooldowns, line.user_id, line.role, live, now)
        if verdict != OK or spec is None:
            self.metrics.refused[verdict] = self.metrics.refused.get(verdict, 0) + 1
            return
        try:
            if spec.cost_points > 0:
                refusal = await self._charge(spec, line, now)
                if refusal is not None:
                    if refusal and self.say(line.channel, refusal):
                        self.metrics.replies += 1
                    return
            reply = await self._answer(spec, inv, line, now)
        except RedisError as err:
            self.metrics.read_errors += 1
            log.warning("bot_read_failed command=%s error=%r", spec.name, err)
            return
        if reply is None:
            self.metrics.unsupported += 1
            return
        cooldowns.record(spec, line.user_id, now)
        if reply and self.say(line.channel, reply):
            self.metrics.replies += 1

    async def _charge(self, spec: CommandSpec, line: ChatLine, now: float) -> str | None:
        """Debit the command's cost (idempotent by the chat message id): None when paid,
        else the reply to give ('' for none)."""
        if self.spends is None or not line.msg_id:
            self.metrics.refused["cost_unavailable"] = (
                self.metrics.refused.get("cost_unavailable", 0) + 1
            )
            return ""
        t = Transfer(
            key=f"bot.{line.channel}.{line.msg_id}"[:MAX_TEXT],
            network=self.network,
            user_id=line.user_id,
            amount=spec.cost_points,
            direction="debit",
            account=f"store:{self.network}",
            rule="bot_command",
            ref=spec.name,
            channel=line.channel,
            ts=now,
        )
        try:
            result = await self.spends.submit(t)
        except SpendTimeout:
            self.metrics.refused["cost_timeout"] = self.metrics.refused.get("cost_timeout", 0) + 1
            return ""
        if result.code == OK:
            return None
        self.metrics.refused[result.code] = self.metrics.refused.get(result.code, 0) + 1
        if result.code == INSUFFICIENT_POINTS:
            return render(
                "@{user} {count} costs {points} points; you have {args}",
                {"user": line.display_name, "count": self.prefix + spec.name,
                 "points": spec.cost_points, "args": result.balance},
            )  # fmt: skip
        return ""

    async def _live(self, channel: str) -> bool:
        try:
            raw = await self.redis.hget(self.keys.cstate, channel_key(self.network, channel))
        except RedisError:
            return False
        return bool(raw) and channel_decoder.decode(cast("bytes", raw)).live

    async def _moving(self, name: str, inv: Invocation, line: ChatLine, now: float) -> str | None:
        """The reply of a built-in that moves points (None: not available in this bot)."""
        cs = self.chat_spends
        if cs is None or not line.msg_id:
            return None
        args = inv.args
        if name == "give":
            return await cs.give(line, args, now)
        if name in ("addpoints", "removepoints"):
            return await cs.adjust(line, args, now, add=name == "addpoints")
        if name == "bonusall":
            return await cs.bonusall(line, args, now)
        if name == "raffle":
            return await cs.raffle_status(line, now)
        if name == "tickets":
            return await cs.tickets(line, args, now)
        if name == "join":
            return await cs.join(line, now)
        if name == "redeem":
            return await cs.redeem(line, args, now)
        return None

    async def _answer(
        self, spec: CommandSpec, inv: Invocation, line: ChatLine, now: float
    ) -> str | None:
        base: dict[str, Any] = {
            "user": line.display_name,
            "channel": line.channel,
            "args": inv.rest,
            "touser": inv.touser or line.login,
            "count": 0,
        }
        if not spec.builtin:
            return render(spec.response, base)
        name = spec.name
        if name not in DEFAULT_REPLIES:
            return await self._moving(name, inv, line, now)
        template = spec.response or DEFAULT_REPLIES[name]
        if name == "top":
            count = _int_arg(inv.args, 5, 1, MAX_TOP)
            top = await self._top(line.channel, count)
            listing = ", ".join(f"{i + 1}. {n} ({p})" for i, (n, p) in enumerate(top))
            return render(template, {**base, "count": len(top), "args": listing or "nobody yet"})
        user_id, shown = line.user_id, line.display_name
        if name == "points" and inv.touser:
            shown = inv.touser
            user_id = self.logins.get(inv.touser, "")
            if not user_id:
                return render(UNKNOWN_MEMBER, {**base, "user": shown})
        state = await self._member(user_id)
        if state is None:
            return render(UNKNOWN_MEMBER, {**base, "user": shown})
        base["user"] = shown
        tiers = self.rules.network(self.network).tiers
        variables = {
            **base,
            "points": state.balance if name != "tier" else state.lifetime,
            "tier": tiers.names[min(state.tier, len(tiers.names) - 1)],
            "streak": effective_streak(state, day_of(self.clock())),
            "rank": "-",
        }
        if name == "rank":
            nc = channel_key(self.network, line.channel)
            rank = await self.redis.zrevrank(self.keys.lb_all(nc), user_id)
            score = await self.redis.zscore(self.keys.lb_all(nc), user_id)
            variables["rank"] = "-" if rank is None else rank + 1
            variables["points"] = int(score or 0)
        return render(template, variables)

    async def _member(self, user_id: str) -> MemberState | None:
        raw = await self.redis.hget(self.keys.mstate, member_key(self.network, user_id))
        return None if raw is None else state_decoder.decode(cast("bytes", raw))

    async def _top(self, channel: str, count: int) -> list[tuple[str, int]]:
        nc = channel_key(self.network, channel)
        pairs = cast(
            "list[tuple[bytes, float]]",
            await self.redis.zrevrange(self.keys.lb_all(nc), 0, count - 1, withscores=True),
        )
        if not pairs:
            return []
        fields = [member_key(self.network, uid.decode()) for uid, _ in pairs]
        raws = cast("list[bytes | None]", await self.redis.hmget(self.keys.mstate, fields))
        out = []
        for (uid, score), raw in zip(pairs, raws, strict=True):
            name = state_decoder.decode(raw).name if raw else ""
            out.append((name or uid.decode(), int(score)))
        return out


def _int_arg(args: tuple[str, ...], default: int, lo: int, hi: int) -> int:
    try:
        return min(max(int(args[0]), lo), hi) if args else default
    except ValueError:
        return default
