"""Full collections on a schedule (ringaudio.collect): none set off by a burst of allocations, one
when due (by the clock, or by the sessions that ended), and the cycles it frees."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ringaudio.collect import FullCollections


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def old_cycle() -> weakref.ref[Node]:
    """A cycle that outlived the young collections (in the oldest generation), now garbage."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect(1)  # survivors of the young generations go to the oldest
    return weakref.ref(a)


def test_a_burst_of_allocations_sets_off_no_full_collection_and_the_scheduled_one_frees_cycles(
    restore_gc: None,
) -> None:
    collections = FullCollections(every=30.0)
    collections.settle()
    assert gc.get_freeze_count() > 0  # start-up's objects are frozen
    full = gc.get_stats()[2]["collections"]
    young = gc.get_stats()[0]["collections"]
    garbage = old_cycle()
    kept = [[Node() for _ in range(10)] for _ in range(30_000)]  # long-lived objects, as sessions make
    assert gc.get_stats()[0]["collections"] > young  # the young generations are still collected ...
    assert gc.get_stats()[2]["collections"] == full  # ... but no full collection ran
    assert garbage() is not None  # (so the old cycle is still there)
    assert not collections.maybe(collections.last + 29.0)  # not due
    assert collections.count == 0
    assert collections.maybe(collections.last + 30.0)  # due: it runs, and the cycle is freed
    assert collections.count == 1 and collections.last_ms > 0
    assert gc.get_stats()[2]["collections"] == full + 1
    assert garbage() is None
    assert len(kept) == 30_000


def test_a_full_collection_is_due_sooner_once_enough_sessions_ended(restore_gc: None) -> None:
    collections = FullCollections(every=30.0, limit=3)
    collections.settle()
    garbage = old_cycle()
    for _ in range(2):
        collections.ended_one()
    assert not collections.maybe(collections.last + 1.0) and garbage() is not None
    collections.ended_one()  # the third: due now, whatever the clock says
    assert collections.maybe(collections.last + 1.0) and garbage() is None
    assert collections.ended == 0 and not collections.maybe(collections.last + 1.0)
