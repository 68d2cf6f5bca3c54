"""When a dead worker is replaced, and when the pool gives up instead (pure: times are passed in).

A worker that dies (even by SIGKILL) is replaced at once the first time, then with a backoff that
doubles with each further quick death; after ``MAX_QUICK_DEATHS`` deaths of young workers within
``QUICK_WINDOW_S`` the pool gives up rather than crash-loop: a backend that cannot start, or a
machine out of memory, does not get better by respawning every few milliseconds. A worker that dies
after ``YOUNG_S`` of work counts for nothing towards that: it was not a start-up failure.

The other start-up failure that respawning cannot cure is a main module without a ``__main__``
guard: every spawned worker would import it and start workers of its own.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections import deque

from .spec import EXIT_UNGUARDED_MAIN

MAX_QUICK_DEATHS = 5  # deaths of young workers within QUICK_WINDOW_S before the pool gives up
QUICK_WINDOW_S = 30.0
YOUNG_S = 10.0  # a worker that dies younger than this counts towards MAX_QUICK_DEATHS
BACKOFF_FIRST_S = 0.25  # the second quick death in a row waits this long before the respawn, then doubles
BACKOFF_MAX_S = 5.0

UNGUARDED_MAIN = (
    "a worker process re-imported your program's main module and it started an engine there: "
    "spawned processes import the main module, so put the code that starts the engine under "
    '`if __name__ == "__main__":`'
)


class Respawns:
    """The quick deaths of the last ``QUICK_WINDOW_S``, and what each new death means."""

    def __init__(self) -> None:
        self._deaths: deque[float] = deque()

    @property
    def quick_deaths(self) -> int:
        return len(self._deaths)

    def after_death(self, age: float, now: float) -> float | None:
        """Seconds to wait before replacing a worker that died ``age`` seconds after it started, or
        None: too many died young, give up."""
        deaths = self._deaths
        if age < YOUNG_S:
            deaths.append(now)
        while deaths and now - deaths[0] > QUICK_WINDOW_S:
            deaths.popleft()
        if len(deaths) >= MAX_QUICK_DEATHS:
            return None
        return 0.0 if len(deaths) <= 1 else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (len(deaths) - 2))


def refuse_in_bootstrapping_child() -> None:
    """Starting an engine while multiprocessing bootstraps a spawned child means the main module has
    no ``__main__`` guard: every worker would start workers of its own and die. Say so, and exit
    with a code the parent recognises (there is no other channel back yet)."""
    if getattr(mp.current_process(), "_inheriting", False):
        print(f"ringaudio: {UNGUARDED_MAIN}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_UNGUARDED_MAIN)
