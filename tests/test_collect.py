"""Full collections on the loop's schedule (ringaudio.collect): none set off by a burst of new
objects, one once a quarter as many sessions as are open have ended (or at the backstop), and the
cycles it frees."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ringaudio.collect import GENERATIONAL, MIN_GAP_S, FullCollections

pytestmark = pytest.mark.skipif(not GENERATIONAL, reason="the collector here is not generational")


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


def test_a_burst_of_new_objects_sets_off_no_full_collection_and_the_backstop_frees_cycles(
    restore_gc: None,
) -> None:
    tracked = len(gc.get_objects())
    collections = FullCollections(backstop=600.0)
    collections.settle()
    assert collections.active and gc.get_freeze_count() > 0  # start-up's objects are frozen
    full = gc.get_stats()[2]["collections"]
    young = gc.get_stats()[0]["collections"]
    garbage = old_cycle()
    # survivors enough (more than a quarter of what was tracked) to set off CPython's own full collection
    kept = [Node() for _ in range(max(200_000, tracked))]
    assert gc.get_stats()[0]["collections"] > young  # the young generations are still collected ...
    assert gc.get_stats()[2]["collections"] == full  # ... but no full collection ran
    assert garbage() is not None  # (so the old cycle is still there)
    assert not collections.maybe(collections.last + 599.0, live=100)  # no session ended: not due
    assert collections.count == 0
    # past the backstop (+ 600.0 exactly is not: last + 600.0 - last can round below 600.0)
    assert collections.maybe(collections.last + 600.5, live=100)  # the backstop: it runs, the cycle is freed
    assert collections.count == 1 and collections.last_ms > 0 and collections.freed >= 2
    assert gc.get_stats()[2]["collections"] == full + 1
    assert garbage() is None
    assert len(kept) >= 200_000


def test_a_full_collection_is_due_once_a_quarter_of_the_open_sessions_have_ended(restore_gc: None) -> None:
    collections = FullCollections(backstop=600.0)
    collections.settle()
    garbage = old_cycle()
    for _ in range(24):
        collections.ended_one()
    assert not collections.maybe(collections.last + 6.0, live=100) and garbage() is not None
    collections.ended_one()  # the 25th of 100: due now
    assert collections.maybe(collections.last + 6.0, live=100) and garbage() is None
    assert collections.ended == 0 and not collections.maybe(collections.last + 6.0, live=100)
    collections.ended_one()  # with nothing open, one ended session is enough
    assert collections.maybe(collections.last + 6.0, live=0)


def test_full_collections_are_at_least_the_gap_apart_while_many_sessions_close(restore_gc: None) -> None:
    collections = FullCollections(backstop=600.0)
    collections.settle()
    start = collections.last
    for _ in range(250):  # a quarter of 1 000: due, but not so soon after start-up
        collections.ended_one()
    assert not collections.maybe(start + MIN_GAP_S - 0.5, live=750)
    assert collections.maybe(start + MIN_GAP_S + 0.5, live=750)
    first = collections.last
    for t, live in ((1.0, 500), (2.0, 250), (3.0, 0)):  # the rest close within seconds
        for _ in range(250):
            collections.ended_one()
        assert not collections.maybe(first + t, live=live)  # each a quarter of what is open, and more
    assert collections.maybe(first + MIN_GAP_S + 0.5, live=0) and collections.count == 2


def test_an_unsettled_or_disabled_collector_never_collects_nor_touches_the_process(restore_gc: None) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    for collections in (FullCollections(), FullCollections(enabled=False)):
        if not collections.enabled:
            collections.settle()  # (an App embedded in another program's process)
        collections.ended_one()
        assert not collections.maybe(collections.last + 1e6, live=0) and collections.count == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)
