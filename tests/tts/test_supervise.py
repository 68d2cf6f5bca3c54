"""The respawn policy, without processes: at once, then a doubling backoff, then giving up."""

from __future__ import annotations

import pytest

from ringaudio.tts.supervise import BACKOFF_FIRST_S, MAX_QUICK_DEATHS, QUICK_WINDOW_S, YOUNG_S, Respawns


def test_the_first_death_is_replaced_at_once_then_the_backoff_doubles_then_the_pool_gives_up() -> None:
    respawns = Respawns()
    delays = [respawns.after_death(age=1.0, now=100.0 + k) for k in range(MAX_QUICK_DEATHS)]
    assert delays[:-1] == [0.0, BACKOFF_FIRST_S, 2 * BACKOFF_FIRST_S, 4 * BACKOFF_FIRST_S]
    assert delays[-1] is None  # the fifth young death within the window
    assert respawns.quick_deaths == MAX_QUICK_DEATHS


def test_a_worker_that_dies_after_working_a_while_is_always_replaced_at_once() -> None:
    respawns = Respawns()
    assert [respawns.after_death(age=YOUNG_S + 1, now=float(k)) for k in range(20)] == [0.0] * 20
    assert respawns.quick_deaths == 0


@pytest.mark.parametrize("late", [0.5, 100.0])
def test_quick_deaths_older_than_the_window_are_forgotten(late: float) -> None:
    respawns = Respawns()
    for t in range(MAX_QUICK_DEATHS - 1):
        respawns.after_death(age=0.0, now=float(t))
    now = MAX_QUICK_DEATHS - 2 + QUICK_WINDOW_S + late  # past the window of every earlier death
    assert respawns.after_death(age=0.0, now=now) == 0.0 and respawns.quick_deaths == 1
