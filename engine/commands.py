"""Bot commands: parsing chat lines, per-channel command specs, availability and templates.

A chat line `!name args...` is an `Invocation`. A channel's `CommandSpec`s (enabled,
aliases, response template, cooldowns, minimum role, online/offline availability, points
cost) are looked up by name or alias in a `CommandTable`. `Cooldowns` holds the last use of
each command (global) and of each (command, user), bounded by `MAX_COOLDOWN_KEYS`.
`check` decides whether an invocation may run now; `render` fills a template's
`{variables}` (unknown ones stay as written; nothing else is interpreted).

Pure: time is an argument; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from engine.irc import ROLES, Role

MAX_COMMAND_NAME = 32
MAX_TEMPLATE_LEN = 500
MAX_REPLY_LEN = 500
"""Twitch refuses chat messages over 500 characters."""
MAX_ARGS = 16
MAX_COMMANDS_PER_CHANNEL = 200
MAX_COOLDOWN_KEYS = 100_000
VARIABLES = ("user", "points", "tier", "rank", "streak", "channel", "count", "args", "touser")

Availability = Literal["always", "online", "offline"]
CommandName = Annotated[
    str, Meta(min_length=1, max_length=MAX_COMMAND_NAME, pattern=r"^[a-z0-9_]+$")
]

BUILTINS = (
    "points",
    "rank",
    "top",
    "streak",
    "tier",
    "give",
    "addpoints",
    "removepoints",
    "bonusall",
    "raffle",
    "tickets",
    "join",
    "redeem",
)
"""Built-in commands: their replies come from the bot's handlers (template optional)."""
MODERATOR_BUILTINS = frozenset({"addpoints", "removepoints", "bonusall"})

OK = "ok"
DISABLED = "disabled"
ROLE = "role"
UNAVAILABLE = "unavailable"
COOLDOWN_GLOBAL = "cooldown_global"
COOLDOWN_USER = "cooldown_user"
UNKNOWN = "unknown"


class CommandSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One command of a channel. A custom command (not a built-in) needs a response."""

    name: CommandName
    aliases: Annotated[list[CommandName], Meta(max_length=16)] = []
    enabled: bool = True
    response: Annotated[str, Meta(max_length=MAX_TEMPLATE_LEN)] = ""
    cooldown_global_s: Annotated[float, Meta(ge=0, le=86_400)] = 0.0
    cooldown_user_s: Annotated[float, Meta(ge=0, le=86_400)] = 0.0
    min_role: Role = "everyone"
    availability: Availability = "always"
    cost_points: Annotated[int, Meta(ge=0, le=1_000_000_000)] = 0

    @property
    def builtin(self) -> bool:
        return self.name in BUILTINS


class CommandConfigError(ValueError):
    """A command configuration that cannot be used; names the field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


_spec_decoder = msgspec.json.Decoder(CommandSpec)
_specs_decoder = msgspec.json.Decoder(list[CommandSpec])


def decode_spec(body: bytes, name: str | None = None) -> CommandSpec:
    """A spec from JSON; `name` (from the URL) fills or must match the body's name."""
    try:
        if name is not None:
            raw = msgspec.json.decode(body)
            if not isinstance(raw, dict):
                raise CommandConfigError("expected a JSON object", "body")
            raw.setdefault("name", name)
            if raw["name"] != name:
                raise CommandConfigError("name differs from the URL", "name")
            body = msgspec.json.encode(raw)
        spec = _spec_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        m = re.search(r"at `\$\.?([A-Za-z_]*)", str(err)) or re.search(r"field `(\w+)`", str(err))
        raise CommandConfigError(str(err), m.group(1) if m and m.group(1) else "body") from err
    validate(spec)
    return spec


def validate(spec: CommandSpec) -> None:
    if not spec.builtin and not spec.response:
        raise CommandConfigError("a custom command needs a response", "response")
    if spec.name in spec.aliases:
        raise CommandConfigError("an alias repeats the name", "aliases")


def specs_from_config(items: list[Mapping[str, object]]) -> list[CommandSpec]:
    """Specs from the config file's `[[bot.commands]]` tables (validated)."""
    specs = _specs_decoder.decode(msgspec.json.encode(items))
    for spec in specs:
        validate(spec)
    return specs


class Invocation(msgspec.Struct, frozen=True):
    """`!name args...`: the name lower-cased, the args split on whitespace."""

    name: str
    args: tuple[str, ...]
    rest: str

    @property
    def touser(self) -> str:
        """The first argument as a user name (`@alice` -> `alice`), or ''."""
        return self.args[0].lstrip("@").lower() if self.args else ""


def parse_command(text: str, prefix: str = "!") -> Invocation | None:
    """The invocation a chat text holds, or None when it is not a command."""
    if not text.startswith(prefix):
        return None
    body = text[len(prefix) :].strip()
    name, _, rest = body.partition(" ")
    name = name.lower()
    if not name or len(name) > MAX_COMMAND_NAME or not re.fullmatch(r"[a-z0-9_]+", name):
        return None
    rest = rest.strip()
    args = tuple(rest.split()[:MAX_ARGS])
    return Invocation(name=name, args=args, rest=rest[:MAX_TEMPLATE_LEN])


class CommandTable:
    """A channel's commands by name and alias (built-ins present unless overridden)."""

    __slots__ = ("_by_name", "specs")

    def __init__(self, specs: list[CommandSpec], builtins: bool = True) -> None:
        assert len(specs) <= MAX_COMMANDS_PER_CHANNEL, "too many commands for one channel"
        merged: dict[str, CommandSpec] = {}
        if builtins:
            for name in BUILTINS:
                role: Role = "moderator" if name in MODERATOR_BUILTINS else "everyone"
                merged[name] = CommandSpec(name=name, min_role=role)
        for spec in specs:
            merged[spec.name] = spec
        self.specs = merged
        self._by_name: dict[str, CommandSpec] = {}
        for spec in merged.values():
            self._by_name[spec.name] = spec
        for spec in merged.values():
            for alias in spec.aliases:
                self._by_name.setdefault(alias, spec)

    def lookup(self, name: str) -> CommandSpec | None:
        return self._by_name.get(name)


class Cooldowns:
    """Last uses: per command (global) and per (command, user). Bounded."""

    __slots__ = ("_global", "_user")

    def __init__(self) -> None:
        self._global: dict[str, float] = {}
        self._user: dict[tuple[str, str], float] = {}

    def remaining(self, spec: CommandSpec, user_id: str, now: float) -> tuple[str, float]:
        last = self._global.get(spec.name)
        if last is not None and now - last < spec.cooldown_global_s:
            return COOLDOWN_GLOBAL, spec.cooldown_global_s - (now - last)
        last = self._user.get((spec.name, user_id))
        if last is not None and now - last < spec.cooldown_user_s:
            return COOLDOWN_USER, spec.cooldown_user_s - (now - last)
        return OK, 0.0

    def record(self, spec: CommandSpec, user_id: str, now: float) -> None:
        if spec.cooldown_global_s > 0:
            self._global[spec.name] = now
        if spec.cooldown_user_s > 0:
            if len(self._user) >= MAX_COOLDOWN_KEYS:
                self._forget(now)
            self._user[(spec.name, user_id)] = now

    def _forget(self, now: float) -> None:
        """Drop the oldest half of the per-user uses (expired first, by age)."""
        ordered = sorted(self._user.items(), key=lambda kv: kv[1])
        for key, _ in ordered[: len(ordered) // 2 + 1]:
            del self._user[key]


def role_allows(role: Role, minimum: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(minimum)


def check(
    spec: CommandSpec | None,
    cooldowns: Cooldowns,
    user_id: str,
    role: Role,
    live: bool,
    now: float,
) -> str:
    """Whether the invocation may run now: OK or the stable reason it may not.

    Broadcasters and moderators skip cooldowns (they run the channel)."""
    if spec is None:
        return UNKNOWN
    if not spec.enabled:
        return DISABLED
    if not role_allows(role, spec.min_role):
        return ROLE
    if (spec.availability == "online" and not live) or (spec.availability == "offline" and live):
        return UNAVAILABLE
    if role_allows(role, "moderator"):
        return OK
    reason, _ = cooldowns.remaining(spec, user_id, now)
    return reason


_VAR = re.compile(r"\{([a-z]+)\}")


def render(template: str, variables: Mapping[str, object]) -> str:
    """Fill `{name}` for known variables; anything else stays as written. One line, bounded."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key in variables:
            return str(variables[key])
        return m.group(0)

    out = _VAR.sub(sub, template)
    out = out.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    out = out.lstrip("/. ")  # a reply never runs a chat command (`/ban`, `.timeout`)
    return out[:MAX_REPLY_LEN]
