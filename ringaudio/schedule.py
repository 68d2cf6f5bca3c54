"""When to look at each item next: a min-heap of due times, so the server's scheduler touches only
the sessions that are due, and a worker only the jobs that are, instead of walking all of them on
every pass. Pure: time is passed in."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Schedule(Generic[T]):
    """Each item is scheduled at most once, at its earliest requested time (later requests are kept
    out; stale heap entries are skipped lazily)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._due: dict[T, float] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, item: T) -> bool:
        return item in self._due

    def add(self, item: T, due: float) -> None:
        """Look at ``item`` at ``due`` (or earlier, if it is already due earlier)."""
        current = self._due.get(item)
        if current is not None and current <= due:
            return
        self._due[item] = due
        heapq.heappush(self._heap, (due, next(self._order), item))

    def discard(self, item: T) -> None:
        self._due.pop(item, None)

    def pop_due(self, now: float) -> list[T]:
        """The items due at or before ``now``, earliest first; they are no longer scheduled."""
        heap, due_of = self._heap, self._due
        out: list[T] = []
        while heap and heap[0][0] <= now:
            due, _, item = heapq.heappop(heap)
            if due_of.get(item) == due:
                del due_of[item]
                out.append(item)
        return out

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        heap, due_of = self._heap, self._due
        while heap and due_of.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None
