"""The listener harness: its metrics without a server, then one short real run of two scenarios
(``python -m bench.listen`` is the real measurement)."""

from __future__ import annotations

import pytest

from .listen import Playout, account, consumption, detection, jitter, per_second, playout, table, text_of

PERFECT = [20.0 * k for k in range(500)]  # a frame every 20 ms, 10 s
SEQ = list(range(500))


# -- the playout model -----------------------------------------------------------------------------------


def test_a_perfect_arrival_sequence_never_underruns() -> None:
    p = playout(PERFECT, SEQ)
    assert p == Playout(underruns=0, starved_ms=0.0, concealed=0, start_ms=180.0, end_ms=180.0 + 500 * 20)


def test_the_servers_burst_then_real_time_never_underruns() -> None:
    arrivals = [0.0] * 10 + [20.0 * k for k in range(1, 491)]  # 200 ms at once, then one per 20 ms
    assert playout(arrivals, SEQ).underruns == 0


def test_a_hole_shorter_than_the_buffer_is_absorbed() -> None:
    arrivals = [t if k < 100 else t + 150 for k, t in enumerate(PERFECT)]  # 150 ms late from frame 100 on
    assert playout(arrivals, SEQ).underruns == 0


def test_a_300_ms_hole_after_the_start_is_one_underrun() -> None:
    # every frame from 100 on arrives 300 ms late: frame 100 is due at 180 + 2000 ms, arrives at 2300 ms;
    # the player is silent until frames 100..109 are in (2480 ms): 300 ms starved, then on time again
    arrivals = [t if k < 100 else t + 300 for k, t in enumerate(PERFECT)]
    p = playout(arrivals, SEQ)
    assert p.underruns == 1 and p.starved_ms == pytest.approx(300.0) and p.concealed == 0
    assert p.end_ms == pytest.approx(180.0 + 500 * 20 + 300)


def test_a_stall_then_a_burst_starves_only_until_the_burst() -> None:
    # TCP head-of-line: frames 100..114 are held until 2300 ms and arrive at once; the rest on time
    arrivals = [2300.0 if 100 <= k <= 114 else t for k, t in enumerate(PERFECT)]
    p = playout(arrivals, SEQ)
    assert p.underruns == 1 and p.starved_ms == pytest.approx(2300.0 - 2180.0)


def test_starved_ms_add_up_over_several_underruns() -> None:
    arrivals = [t + (300 if k >= 100 else 0) + (500 if k >= 300 else 0) for k, t in enumerate(PERFECT)]
    p = playout(arrivals, SEQ)
    assert p.underruns == 2 and p.starved_ms == pytest.approx(800.0)


def test_lost_frames_play_as_silence_not_as_underruns() -> None:
    seq = [s for s in SEQ if not 100 <= s < 105]  # five dropped by the server (an overrun)
    arrivals = [20.0 * s for s in seq]  # the next frame comes when it would have
    p = playout(arrivals, seq)
    assert p.underruns == 0 and p.concealed == 5 and p.end_ms == pytest.approx(180.0 + 500 * 20)


def test_playout_edges() -> None:
    assert playout([], []) == Playout(0, 0.0, 0, None, None)
    assert playout([5.0, 6.0], [0, 1]) == Playout(0, 0.0, 0, 6.0, 46.0)  # shorter than the buffer: all of it
    with pytest.raises(ValueError):
        playout([0.0, 1.0], [1, 0])


# -- jitter, accounting, detection ---------------------------------------------------------------------------


def test_jitter_skips_the_burst_and_measures_the_deviation_from_20_ms() -> None:
    burst = [0.0] * 10
    assert jitter(burst + [20.0 * k for k in range(1, 200)]) == {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    wobbly = burst + [20.0 * k + (7 if k % 2 else 0) for k in range(1, 200)]  # every other one 7 ms late
    assert jitter(wobbly)["p50_ms"] == pytest.approx(7.0)
    one = burst + [20.0 * k + (12 if k == 50 else 0) for k in range(1, 200)]  # one 12 ms late: 32 then 8
    assert jitter(one)["p50_ms"] == 0.0 and jitter(one)["max_ms"] == pytest.approx(12.0)
    assert jitter([0.0, 20.0]) == {"p50_ms": None, "p99_ms": None, "max_ms": None}


def test_accounting_with_an_overrun() -> None:
    seq = list(range(0, 40)) + list(range(70, 100))  # frames 40..69 dropped, and said so
    acc = account(seq, expected=100, overruns=[{"type": "overrun", "expected": 40, "received": 70, "lost": 30}])
    assert (acc.delivered, acc.expected, acc.lost, acc.gaps, acc.reported, acc.duplicates) == (70, 100, 30, 1, 30, 0)


def test_accounting_counts_a_missing_tail_and_what_was_never_reported() -> None:
    acc = account(list(range(90)), expected=100)
    assert acc.lost == 10 and acc.gaps == 1 and acc.reported == 0
    whole = account(list(range(100)), expected=100)
    assert whole.lost == 0 and whole.gaps == 0
    assert account([0, 1, 2], expected=None).lost == 0  # the stream never ended: judge what came


def test_consumption_per_second_and_detection() -> None:
    assert consumption([25.0 * k for k in range(100)]) == pytest.approx(0.8)
    assert per_second([0.0, 999.9, 1000.0, 3500.0]) == [2, 1, 0, 1] and per_second([]) == []
    log = [
        {"message": "session opened", "timestamp": 100.0},
        {"message": "Frame queue depth", "timestamp": 102.0},
        {"message": "Client not consuming frames fast enough", "timestamp": 103.25},
        {"message": "Client not consuming frames fast enough", "timestamp": 109.0},
    ]
    assert detection(log) == 3.25
    assert detection(log[:2]) is None


def test_text_of_is_about_as_long_as_asked() -> None:
    from ringaudio.tts.backends import SyntheticBackend

    assert 5.0 <= SyntheticBackend().duration(text_of(5)) < 5.6


# -- one short real run ------------------------------------------------------------------------------------


def test_a_short_real_run_of_clean_and_slow25_under_block() -> None:
    from .listen import run_one

    clean = run_one("clean", "block", 5.0)
    slow = run_one("slow25", "block", 8.0)  # detection takes ~4 s: room for a loaded machine
    for row in (clean, slow):
        assert row["client_error"] is None and row["server_exit"] == 0 and not row["errors"]
        assert row["expected"] and row["delivered"] == row["expected"]
        assert row["lost"] == 0 and row["gaps"] == 0 and row["reported"] == 0
    assert clean["playout"]["underruns"] == 0 and clean["detection_s"] is None
    assert clean["logged"]["Client not consuming frames fast enough"] == 0
    assert slow["playout"] is None and 0.7 < slow["consumption_x"] < 0.85
    assert slow["detection_s"] is not None and slow["detection_s"] < 10
    md = table([clean, slow])
    assert md.count("\n") == 3 and "| clean | block |" in md and "n/a (reads at" in md
