"""When frames go, sans I/O: the pacer (a burst, then real time)."""

from __future__ import annotations

import numpy as np

from ringaudio.server.pacing import Pacer


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


def test_the_batching_slack_grows_with_the_open_sessions_within_its_bounds() -> None:
    from ringaudio.server.pacing import SLACK_MAX, SLACK_MIN, batch_slack

    slacks = [batch_slack(n) for n in (0, 1, 100, 250, 499, 500, 5000)]
    assert slacks[0] == SLACK_MIN and slacks[-1] == SLACK_MAX == batch_slack(500)
    assert slacks == sorted(slacks) and abs(batch_slack(100) - 0.0018) < 1e-9  # 1.8 ms at 100
    assert batch_slack(-3) == SLACK_MIN


def test_spent_is_spend_then_next_due() -> None:
    one, two = Pacer(period=0.02, prebuffer=3, now=0.0), Pacer(period=0.02, prebuffer=3, now=0.0)
    for now in (0.0, 0.013, 0.031, 0.05, 0.2):
        n = one.allowance(now)
        assert two.allowance(now) == n
        one.spend(n)
        assert two.spent(n, now) == one.next_due(now) and two.tokens == one.tokens
