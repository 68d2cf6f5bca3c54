"""When frames go, sans I/O: the pacer (a burst, then real time) and the scheduler's heap of due times."""

from __future__ import annotations

import numpy as np

from ringaudio.server.pacing import Pacer
from ringaudio.server.schedule import Schedule


def test_pacer_bursts_then_keeps_real_time() -> None:
    pacer = Pacer(period=0.02, prebuffer=10, now=0.0)
    assert pacer.allowance(0.0) == 10  # the prebuffer at once
    pacer.spend(10)
    assert pacer.allowance(0.01) == 0
    assert pacer.allowance(0.02) == 1  # then one per period
    pacer.spend(1)
    assert pacer.allowance(10.0) == 10  # idle time never banks more than the prebuffer


def test_pacer_early_take_gets_its_frame_and_keeps_the_cadence() -> None:
    """A session taken up to `early` before its due time sends then, and the cadence does not drift."""
    period, early = 0.02, 0.001
    pacer = Pacer(period=period, prebuffer=1, now=0.0)
    assert pacer.allowance(0.0, early) == 1
    pacer.spend(1)
    sends = []
    now = 0.0
    for _ in range(500):
        due = pacer.next_due(now)
        now = due - early * 0.9  # always taken 0.9 ms early
        n = pacer.allowance(now, early)
        assert n == 1, (now, pacer.tokens)
        pacer.spend(n)
        sends.append(now)
    intervals = np.diff(sends)
    assert np.allclose(intervals, period, atol=1e-9)  # early every time: no drift, no double takes


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
