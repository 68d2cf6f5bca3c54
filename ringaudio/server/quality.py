"""Adaptive quality, sans I/O: one session's congestion in, a step along ``audio.quality_levels`` out.

Congested (held back: sent and not read, or the client reporting underruns) for ``down_s`` seconds:
one level down. Healthy for ``up_s``: one level up. Never two changes within ``hold_s``: a link
that carries the lower level but not the higher one makes the session probe up at most once per
``up_s`` (plus the hold), not flap. Time is passed in.
"""

from __future__ import annotations


class Quality:
    __slots__ = ("_bad_since", "_changed", "_good_since", "down_s", "hold_s", "level", "levels", "up_s")

    def __init__(self, levels: int, start: int, down_s: float, up_s: float, hold_s: float, now: float) -> None:
        self.levels = levels
        self.level = start  # an index into audio.quality_levels: 0 is the best
        self.down_s, self.up_s, self.hold_s = down_s, up_s, hold_s
        self._bad_since: float | None = None
        self._good_since: float | None = now
        self._changed = -1e18

    def set(self, level: int, now: float) -> None:
        """The client chose ``level``: adaptation goes on from there, after a hold."""
        self.level = level
        self._changed = now
        self._bad_since = None
        self._good_since = now

    def observe(self, now: float, congested: bool) -> int | None:
        """The new level if it changes now, else None."""
        if congested:
            self._good_since = None
            if self._bad_since is None:
                self._bad_since = now
        else:
            self._bad_since = None
            if self._good_since is None:
                self._good_since = now
        if now - self._changed < self.hold_s:
            return None
        if self._bad_since is not None and now - self._bad_since >= self.down_s and self.level < self.levels - 1:
            self.level += 1
        elif self._good_since is not None and now - self._good_since >= self.up_s and self.level > 0:
            self.level -= 1
        else:
            return None
        self._changed = now
        self._bad_since = now if congested else None  # the next step needs its own sustained evidence
        self._good_since = None if congested else now
        return self.level
