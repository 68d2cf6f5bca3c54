"""The pure layout and cursor arithmetic: no shared memory, no processes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ringaudio.errors import ConfigError, HeaderProblem, WatermarkError
from ringaudio.ring import layout as L


def test_format_offsets_are_aligned_and_disjoint() -> None:
    for cap, samples, ch, dt, n in itertools.product((2, 3, 50, 1000), (1, 7, 960), (1, 2, 6), L.DTYPES, (1, 3)):
        fmt = L.RingFormat(cap, samples, ch, dt, n_rings=n)
        assert fmt.data_offset % 64 == 0
        assert fmt.ring_bytes % 64 == 0
        assert fmt.ring_bytes >= fmt.data_offset + cap * fmt.frame_bytes
        # stamps live after the reader lines and before the slots
        assert L.STAMP0 * 8 >= (L.READER0 + L.MAX_GATING_READERS * L.LINE_WORDS) * 8
        assert (L.STAMP0 + cap * L.STAMP_STRIDE) * 8 <= fmt.data_offset
        assert L.STAMP_STRIDE * 8 % 64 == 0  # each stamp on a cache line of its own
        offsets = [fmt.ring_offset(i) for i in range(n)]
        assert offsets[0] == L.HEADER_BYTES
        assert all(b - a == fmt.ring_bytes for a, b in itertools.pairwise(offsets))
        assert fmt.segment_bytes == offsets[-1] + fmt.ring_bytes
        assert fmt.frame_bytes == samples * ch * np.dtype(dt).itemsize


def test_hot_words_sit_on_separate_cache_lines() -> None:
    line = lambda w: w // L.LINE_WORDS  # noqa: E731
    writer_hot = line(L.C_WRITE_SEQ)
    sleeping = line(L.C_WRITER_WAITING)
    config = line(L.C_STATE)
    readers = {line(L.READER0 + g * L.LINE_WORDS + L.R_POS) for g in range(L.MAX_GATING_READERS)}
    assert len({writer_hot, sleeping, config} | readers) == 3 + L.MAX_GATING_READERS
    assert line(L.C_SPACE_EVENT) == sleeping == line(L.C_WAKE_AT) == line(L.C_READERS_WAITING)


def test_frame_shape_mono_and_multichannel() -> None:
    assert L.RingFormat(50, 960, 1, "int16").frame_shape == (960,)
    assert L.RingFormat(50, 960, 2, "float32").frame_shape == (960, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity": 1},
        {"capacity": 0},
        {"capacity": -5},
        {"capacity": 2.5},
        {"capacity": L.MAX_CAPACITY + 1},
        {"frame_samples": 0},
        {"channels": 0},
        {"channels": L.MAX_CHANNELS + 1},
        {"dtype": "uint8"},
        {"dtype": "int64"},
        {"n_rings": 0},
        {"frame_samples": L.MAX_FRAME_BYTES},
    ],
)
def test_format_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"capacity": 50, "frame_samples": 960, "channels": 1, "dtype": "int16"}
    base.update(kwargs)
    with pytest.raises(ConfigError):
        L.RingFormat(**base)  # type: ignore[arg-type]


def test_stamps_classify_every_case() -> None:
    gen, seq = 7, 1234
    assert L.classify(L.stamp_published(gen, seq), gen, seq) == L.READY
    assert L.classify(0, gen, seq) == L.NOT_READY  # never written in this lease
    assert L.classify(L.stamp_writing(gen, seq), gen, seq) == L.NOT_READY  # being written now
    assert L.classify(L.stamp_published(gen, seq - 50), gen, seq) == L.NOT_READY  # slot still has an older frame
    assert L.classify(L.stamp_writing(gen, seq + 50), gen, seq) == L.OVERRUN  # being overwritten
    assert L.classify(L.stamp_published(gen, seq + 50), gen, seq) == L.OVERRUN  # overwritten
    # anything of another lease is never taken for a frame of this one
    assert L.classify(L.stamp_published(gen - 1, seq), gen, seq) == L.NOT_READY
    assert L.classify(L.stamp_published(gen + 1, seq + 50), gen, seq) == L.NOT_READY


def test_stamps_fit_in_63_bits_at_the_limits() -> None:
    s = L.stamp_published(L.GEN_MASK, L.SEQ_LIMIT - 1)
    assert 0 < s < 2**63
    assert L.classify(s, L.GEN_MASK, L.SEQ_LIMIT - 1) == L.READY


def test_oldest_readable_after_a_lap() -> None:
    # capacity 50, writer has written 0..199: slot of 150 may be rewritten next, 151 is safe
    assert L.oldest_readable(200, 50, 10) == 151
    # never behind the frame that was asked for
    assert L.oldest_readable(60, 50, 10) == 11


@pytest.mark.parametrize(
    ("capacity", "high", "low", "expect"),
    [(50, 0.8, 0.5, (40, 25)), (50, 1.0, 0.0, (50, 0)), (2, 0.8, 0.5, (1, 0)), (10, 0.55, 0.5, (5, 4))],
)
def test_watermark_frames(capacity: int, high: float, low: float, expect: tuple[int, int]) -> None:
    hi, lo = L.watermark_frames(capacity, high, low)
    assert (hi, lo) == expect
    assert 0 <= lo < hi <= capacity


@pytest.mark.parametrize(("high", "low"), [(0.5, 0.5), (0.4, 0.6), (1.2, 0.5), (0.8, -0.1), (float("nan"), 0.5)])
def test_watermarks_out_of_order_are_refused(high: float, low: float) -> None:
    with pytest.raises(WatermarkError) as info:
        L.watermark_frames(50, high, low)
    assert isinstance(info.value, ValueError)


def test_block_hysteresis() -> None:
    high, low = 40, 25
    paused = False
    trace = []
    # fill rises to the high watermark, the writer pauses, the reader drains, it resumes at the low one
    for fill in [*range(35, 41), *range(39, 24, -1)]:
        paused = L.must_pause(fill, paused, high, low)
        trace.append((fill, paused))
    assert (39, False) in trace[:5]
    assert trace[5] == (40, True)
    assert all(p for f, p in trace[5:] if f > low)
    assert trace[-1] == (25, False)


def test_header_round_trip_and_problems() -> None:
    fmt = L.RingFormat(50, 960, 1, "int16", n_rings=4)
    h = L.encode_header(fmt, owner_pid=123, owner_start_ms=456, policy=L.BLOCK, high=40, low=25)
    with pytest.raises(HeaderProblem, match="not initialised"):
        L.decode_header(h, fmt.segment_bytes)
    h[L.H_READY] = 1
    assert L.decode_header(h, fmt.segment_bytes) == fmt
    with pytest.raises(HeaderProblem, match="needs") as too_small:
        L.decode_header(h, fmt.segment_bytes - 1)
    assert not too_small.value.foreign
    bad = h.copy()
    bad[L.H_MAGIC] = 0
    with pytest.raises(HeaderProblem) as foreign:
        L.decode_header(bad, fmt.segment_bytes)
    assert foreign.value.foreign
    bad = h.copy()
    bad[L.H_VERSION] = L.LAYOUT_VERSION + 1
    with pytest.raises(HeaderProblem, match="layout version") as version:
        L.decode_header(bad, fmt.segment_bytes)
    assert not version.value.foreign
    bad = h.copy()
    bad[L.H_RING_BYTES] += 64
    with pytest.raises(HeaderProblem, match="layout says"):
        L.decode_header(bad, fmt.segment_bytes)
    bad = h.copy()
    bad[L.H_DTYPE] = 99
    with pytest.raises(HeaderProblem, match="dtype"):
        L.decode_header(bad, fmt.segment_bytes)
    with pytest.raises(HeaderProblem) as short:
        L.decode_header(h[:4], 32)
    assert short.value.foreign
