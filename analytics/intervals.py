"""The watch tick length of every network and channel, from the rule book (for KPIs)."""

from __future__ import annotations

from engine.rules import RuleBook


def watch_intervals(book: RuleBook) -> tuple[tuple[str, str, int], ...]:
    """(network, channel or '' for the network's default, watch_interval_s)."""
    out: list[tuple[str, str, int]] = []
    for network, rules in book.networks.items():
        out.append((network, "", rules.earn.watch_interval_s))
        for channel in rules.channels:
            out.append((network, channel, book.earn(network, channel).watch_interval_s))
    return tuple(out)
