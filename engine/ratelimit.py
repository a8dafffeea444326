"""A sliding-window rate limit for outbound chat (Twitch: 20 per 30 s, 100 as moderator).

`SlidingWindow` remembers the send times inside the window (at most `limit` of them) and
answers whether one more may go now, or when the next slot opens. Time is an argument.
"""

from __future__ import annotations

from collections import deque

TWITCH_WINDOW_S = 30.0
TWITCH_LIMIT = 20
TWITCH_LIMIT_MODERATOR = 100


class SlidingWindow:
    """At most `limit` sends in any window of `window_s` seconds."""

    __slots__ = ("_sent", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        assert limit >= 1, "a window needs a positive limit"
        assert window_s > 0, "a window needs a positive length"
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] + self.window_s <= now:  # as next_at reckons
            self._sent.popleft()

    def in_window(self, now: float) -> int:
        self._expire(now)
        return len(self._sent)

    def next_at(self, now: float) -> float:
        """The earliest time (>= now) at which one more send is allowed."""
        self._expire(now)
        if len(self._sent) < self.limit:
            return now
        return self._sent[len(self._sent) - self.limit] + self.window_s

    def try_send(self, now: float) -> bool:
        """Take a slot at `now` when one is free; False (nothing taken) otherwise."""
        self._expire(now)
        if len(self._sent) >= self.limit:
            return False
        if self._sent and now < self._sent[-1]:
            now = self._sent[-1]  # a clock that steps back never reorders the window
        self._sent.append(now)
        return True

    def set_limit(self, limit: int) -> None:
        """Change the limit (the bot became, or stopped being, a moderator)."""
        assert limit >= 1
        self.limit = limit
        while len(self._sent) > limit:
            self._sent.popleft()


def twitch_window(moderator: bool) -> SlidingWindow:
    return SlidingWindow(TWITCH_LIMIT_MODERATOR if moderator else TWITCH_LIMIT, TWITCH_WINDOW_S)
