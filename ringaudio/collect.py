"""When the garbage collector may stop a real-time loop (the server's scheduler, a worker's loop).

CPython's full (generation 2) collection runs whenever enough objects have survived since the last
one: a burst of new connections (a few hundred clients reconnecting at once) sets off one after
another, each walking every object of every session, and each stops every stream of the process at
once (measured: a 40 ms stall of 1 000 streams as the thousandth connected). What needs a full
collection here is what sessions (jobs) leave when they end: so the young generations' collections
stay automatic (a few ms at most), and the full one runs from the loop, at a point that owns no
frame in flight, once a quarter as many sessions as are open have ended since the last (CPython's
own rule of a quarter, counted in sessions, not in survivors: a burst of *new* sessions sets off
none), and otherwise at most every ``BACKSTOP_S`` for whatever else may have made cycles. They are
at least ``MIN_GAP_S`` apart: as a thousand sessions close at once the open count falls, and the
quarter rule alone came due again and again (measured: four collections, 68 ms in all, while 1 000
sessions closed, each stopping the streams still open); their garbage waits a few seconds instead.

Only where the collector is generational and its full collections stop the world (CPython 3.11 to
3.13 with the GIL): elsewhere (3.14's incremental collector, free-threaded builds) the collector is
left as it is and :meth:`FullCollections.maybe` never collects.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import time

BACKSTOP_S = 600.0  # the longest a cycle that no ended session made waits to be freed
MIN_GAP_S = 5.0  # the shortest time between two full collections (and from start-up to the first)
_NEVER = 1 << 30  # gen1 collections before an automatic full one: never, in practice
GENERATIONAL = sys.version_info < (3, 14) and not sysconfig.get_config_var("Py_GIL_DISABLED")


class FullCollections:
    """After :meth:`settle` (at the end of start-up), a full collection only when :meth:`maybe` says."""

    def __init__(self, backstop: float = BACKSTOP_S, *, enabled: bool = True) -> None:
        self.backstop = backstop
        self.enabled = enabled  # False: settle() and maybe() do nothing (a process that is not ours)
        self.ended = 0  # sessions (jobs) ended since the last full collection
        self.last = time.monotonic()
        self.count = 0  # full collections run so far (scheduled ones)
        self.last_ms = 0.0  # how long the last one took
        self.seconds = 0.0  # how long they all took (every stream of the process stops for it)
        self.freed = 0  # what the last one freed (gc.collect's count)
        self.active = False  # settled here (this process's collector is ours to schedule)

    def settle(self) -> None:
        """What start-up made is never garbage: freeze it (the collector skips it from now on), and,
        where that is how the collector works, take automatic full collections away."""
        if not self.enabled:
            return
        gc.collect()
        gc.freeze()
        if GENERATIONAL:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, _NEVER)
            self.active = True
        self.last = time.monotonic()

    def ended_one(self) -> None:
        """A session (a job) ended: what it leaves is garbage for the next full collection."""
        self.ended += 1

    def maybe(self, now: float, live: int) -> bool:
        """Run a full collection if one is due (``now``: monotonic; ``live``: the sessions or jobs
        open now); whether it ran."""
        if not self.active:
            return False
        since = now - self.last
        if since < MIN_GAP_S or (self.ended < max(1, live // 4) and since < self.backstop):
            return False
        t0 = time.perf_counter()
        self.freed = gc.collect(2)
        took = time.perf_counter() - t0
        self.last_ms = took * 1000
        self.seconds += took
        self.last = now
        self.ended = 0
        self.count += 1
        return True
