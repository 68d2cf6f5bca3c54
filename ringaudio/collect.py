"""When the garbage collector may stop a real-time loop (the server's scheduler, a worker's loop).

CPython's full (generation 2) collection runs whenever enough objects have survived since the last
one: a burst of new connections (a few hundred clients reconnecting at once) sets off one after
another, each walking every object of every session, and each stops every stream of the process at
once (measured: a 40 ms stall of 1 000 streams as the thousandth connected). The young generations'
collections stay automatic (they cost a few ms at most); the full one runs only on a schedule,
every ``FULL_EVERY_S``, from a point of the loop that owns no frame in flight, or sooner once
``limit`` sessions (jobs) have ended since the last: the cycles a closed session leaves are freed
within that time, and a churn of connections cannot pile up more than ``limit`` sessions' worth.
"""

from __future__ import annotations

import gc
import time

FULL_EVERY_S = 30.0  # the longest a cycle of long-lived garbage waits to be freed
_NEVER = 1 << 30  # gen1 collections before an automatic full one: never, in practice


class FullCollections:
    """After :meth:`settle` (at the end of start-up), a full collection only when :meth:`maybe` says."""

    def __init__(self, every: float = FULL_EVERY_S, limit: int = 1_000) -> None:
        self.every = every
        self.limit = limit
        self.ended = 0  # sessions (jobs) ended since the last full collection
        self.last = time.monotonic()
        self.count = 0  # full collections run so far (scheduled ones)
        self.last_ms = 0.0  # how long the last one took

    def settle(self) -> None:
        """What start-up made is never garbage: freeze it (the collector skips it from now on), and
        take automatic full collections away."""
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _NEVER)
        self.last = time.monotonic()

    def ended_one(self) -> None:
        """A session (a job) ended: what it leaves is garbage for the next full collection."""
        self.ended += 1

    def maybe(self, now: float) -> bool:
        """Run the scheduled full collection if it is due (``now``: monotonic); whether it ran."""
        if now - self.last < self.every and self.ended < self.limit:
            return False
        self.ended = 0
        t0 = time.perf_counter()
        gc.collect(2)
        self.last_ms = (time.perf_counter() - t0) * 1000
        self.last = now
        self.count += 1
        return True
