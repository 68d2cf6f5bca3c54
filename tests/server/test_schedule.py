"""The scheduler's heap of due times (``ringaudio.schedule``), pure: time is passed in."""

from __future__ import annotations

from ringaudio.schedule import Schedule


def test_schedule_takes_only_what_is_due_each_once() -> None:
    sched: Schedule[str] = Schedule()
    sched.add("a", 3.0)
    sched.add("b", 1.0)
    sched.add("a", 2.0)  # earlier wins
    sched.add("b", 5.0)  # later is ignored while it is scheduled earlier
    assert len(sched) == 2 and "a" in sched
    assert sched.next_due() == 1.0
    assert sched.pop_due(0.5) == []
    assert sched.pop_due(2.0) == ["b", "a"]
    assert sched.pop_due(10.0) == []  # the stale entries (a at 3.0, b at 5.0) are skipped
    assert sched.next_due() is None and len(sched) == 0
    sched.add("c", 1.0)
    sched.discard("c")
    assert sched.next_due() is None and sched.pop_due(10.0) == []


def test_an_item_taken_can_be_scheduled_again_and_ties_keep_their_order() -> None:
    sched: Schedule[int] = Schedule()
    for item in (3, 1, 2):
        sched.add(item, 1.0)
    assert sched.pop_due(1.0) == [3, 1, 2]  # same due time: in the order they were added
    sched.add(1, 4.0)
    sched.add(1, 0.5)  # moved earlier: the 4.0 entry goes stale
    assert sched.next_due() == 0.5 and sched.pop_due(1.0) == [1]
    assert sched.next_due() is None and 1 not in sched


def test_a_discarded_item_leaves_no_due_time_behind() -> None:
    sched: Schedule[str] = Schedule()
    sched.add("a", 1.0)
    sched.add("b", 2.0)
    sched.discard("a")
    sched.discard("missing")  # not scheduled: nothing to do
    assert len(sched) == 1 and sched.next_due() == 2.0
    sched.add("a", 3.0)  # scheduled afresh, at the new time, not the discarded one
    assert sched.pop_due(2.5) == ["b"] and sched.pop_due(3.0) == ["a"]
